"""The statistics shared by the bandits: discounting, neighbour borrowing, the probe."""
import pytest

from autospec import StepContext
from autospec.controllers import ThompsonController, bucket_of
from tests.conftest import drive, make_record


def test_batch_size_contexts_are_powers_of_two():
    assert [bucket_of(b) for b in (1, 2, 3, 4, 5, 6, 11, 12, 256)] == [0, 1, 2, 2, 2, 3, 3, 4, 8]


def test_a_context_borrows_from_its_neighbours_not_from_far_away(h200):
    def correction_at(batch_size):
        c = ThompsonController(cost_model=h200, seed=0)
        for i in range(50):  # everything measured 2x slower than modelled, at batch size 16
            c.observe(make_record(batch_size=16, spec_len=2, accepted_per_pos=(8, 4), draft_time_s=0.0,
                                  verify_time_s=2 * h200.step_time_s(16, 2), step=i))
        return c.scores(StepContext(step=0, batch_size=batch_size, max_spec_len=8))[2][0] / h200.goodput_tps(batch_size, 2, c.acceptance.rates())
    assert correction_at(16) == pytest.approx(0.5, rel=0.05)
    assert 0.5 < correction_at(32) < 0.9                   # neighbour: partly
    assert correction_at(256) == pytest.approx(1.0, rel=0.02)  # far away: not at all


def test_discounting_forgets_old_acceptance(h200):
    c = ThompsonController(cost_model=h200, seed=0)
    for i in range(300):
        c.observe(make_record(batch_size=8, spec_len=2, accepted_per_pos=(8, 8), step=i))
    assert c.acceptance.rates()[0] > 0.95
    for i in range(300):
        c.observe(make_record(batch_size=8, spec_len=2, accepted_per_pos=(2, 0), step=i))
    assert c.acceptance.rates()[0] < 0.3


def test_probes_after_a_run_of_plain_decoding(h200):
    c = ThompsonController(cost_model=h200, seed=0, probe_every=5, prior_acceptance=0.05)
    chosen = drive(c, batch_size=256, steps=20, accepted_at_each_pos=5)
    assert chosen.count(1) == 4 and chosen.count(0) == 16
