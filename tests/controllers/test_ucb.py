import pytest

from autospec import StepContext
from autospec.controllers import UCBController
from tests.controllers.helpers import ratio_to_oracle


@pytest.mark.parametrize("batch_size, acceptance", [(1, 0.8), (64, 0.7), (256, 0.3)])
def test_close_to_the_oracle_with_the_model_prior(h200, batch_size, acceptance):
    assert ratio_to_oracle(h200, "ucb", batch_size, acceptance) > 0.95


def test_without_a_prior_it_tries_every_arm_first(h200):
    c = UCBController(cost_model=None, prior="none", max_spec_len=4)
    from tests.conftest import make_record
    ctx = StepContext(step=0, batch_size=4, max_spec_len=4)
    tried = []
    for i in range(5):
        s = c.choose(ctx)
        tried.append(s)
        c.observe(make_record(batch_size=4, spec_len=s, accepted_per_pos=(2,) * s, step=i))
    assert sorted(tried) == [0, 1, 2, 3, 4]


def test_exploration_must_be_non_negative(h200):
    with pytest.raises(ValueError, match="exploration"):
        UCBController(cost_model=h200, exploration=-1.0)
