import pytest

from autospec import StepContext
from autospec.controllers import ModelController
from tests.conftest import drive, make_record
from tests.controllers.helpers import ratio_to_oracle


def test_argmax_of_the_cost_model_at_the_learned_acceptance(h200):
    c = ModelController(cost_model=h200, max_spec_len=8)
    rec = make_record(batch_size=64, spec_len=4, accepted_per_pos=(58, 52, 47, 42))  # acceptance 0.9
    for _ in range(30):
        c.observe(rec)
    ctx = StepContext(step=0, batch_size=64, max_spec_len=8)
    assert c.choose(ctx) == h200.best_spec_len(64, 0.9, 8)
    scores = c.scores(ctx)
    assert max(scores, key=lambda s: scores[s][0]) == c.choose(ctx)


def test_probes_spec_len_one_while_plain_decoding_wins(h200):
    c = ModelController(cost_model=h200, max_spec_len=8, probe_every=10, prior_acceptance=0.05)
    chosen = drive(c, batch_size=256, steps=30, accepted_at_each_pos=10)
    assert chosen.count(1) == 3 and set(chosen) == {0, 1}


def test_matches_the_oracle_when_the_model_is_right(h200):
    assert ratio_to_oracle(h200, "model", 16, 0.7) > 0.97


def test_needs_a_cost_model():
    with pytest.raises(ValueError, match="needs cost_model"):
        ModelController(cost_model=None, max_spec_len=8)
