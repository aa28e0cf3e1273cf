"""The statistics shared by the bandits: discounting, neighbour borrowing, the probe."""
import math

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
    c = ThompsonController(cost_model=h200, seed=0, probe_every=5, prior_acceptance=0.05, probe_cost_fraction=1.0)
    assert c.probe_interval(256) == 5                        # a probe's extra cost is within the budget
    chosen = drive(c, batch_size=256, steps=20, accepted_at_each_pos=5)
    assert chosen.count(1) == 4 and chosen.count(0) == 16


def test_probes_are_rarer_where_they_are_dear(h200):
    c = ThompsonController(cost_model=h200, seed=0, probe_every=5, prior_acceptance=0.05, probe_cost_fraction=0.01)
    extra = h200.step_time_s(256, 1) / h200.step_time_s(256, 0) - 1.0
    assert extra > 0.1 and c.probe_interval(256) == math.ceil(extra / 0.01)
    chosen = drive(c, batch_size=256, steps=3 * c.probe_interval(256), accepted_at_each_pos=0)
    assert chosen.count(1) == 3
    probe_time = chosen.count(1) * h200.step_time_s(256, 1) - chosen.count(1) * h200.step_time_s(256, 0)
    assert probe_time / (len(chosen) * h200.step_time_s(256, 0)) <= 0.01 + 1e-9


def test_the_profiles_measured_acceptance_is_the_starting_estimate():
    from autospec import CostModel
    from autospec.controllers import build_controller

    cpu = CostModel.from_profile("cpu-smollm2-135m-ngram-bf16")
    first = cpu.profile.acceptance_per_pos[0]
    for name in ("auto", "thompson", "ucb", "model"):
        c = build_controller(name, max_spec_len=8, cost_model=cpu)
        assert c.acceptance.rates()[0] == pytest.approx(first)
    given = build_controller("auto", max_spec_len=8, cost_model=cpu, prior_acceptance=0.8)
    assert given.acceptance.rates()[0] == pytest.approx(0.8)
