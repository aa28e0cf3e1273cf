"""Exploration bounded by what the posterior knows: plausible arms, a time budget, margins, runs,
and each arm's own acceptance."""
import numpy as np
import pytest

from autospec import StepContext
from autospec.acceptance import ArmAcceptance
from autospec.controllers import ThompsonController, build_controller
from tests.conftest import drive, make_record


def test_an_arm_predicted_far_below_the_best_is_never_tried(h200):
    c = ThompsonController(cost_model=h200, seed=0, prior_acceptance=0.05, plausible_z=0.5, explore_fraction=1.0)
    mean, std, _ = c.posterior(256)
    best = int(mean.argmax())
    hopeless = {s for s in range(2, 9) if mean[s] + 0.5 * std[s] < mean[best] - 0.5 * std[best]}
    assert len(hopeless) >= 3                              # long drafts at batch 256 with acceptance 0.05
    chosen = drive(c, batch_size=256, steps=400, accepted_at_each_pos=0)    # acceptance only gets worse
    assert not set(chosen) & hopeless
    assert len(set(chosen)) >= 2                           # it does explore what is plausible


@pytest.mark.parametrize("fraction", [0.02, 0.1])
def test_exploring_under_a_flat_prior_stays_within_its_time_budget(fraction):
    c = build_controller("thompson", max_spec_len=8, prior="none", seed=1, explore_fraction=fraction)
    chosen = drive(c, batch_size=1, steps=600, accepted_at_each_pos=1)
    step_s = 0.011                                         # every drive() step costs 11 ms
    assert c.explore_cost_s <= fraction * c.run_time_s + step_s
    assert len(set(chosen)) >= 4                           # it still explores


def test_the_switch_margin_keeps_the_shortest_arm_within_it_and_vanishes_at_batch_one(h200):
    picks = {}
    for b in (1, 8):
        c = ThompsonController(cost_model=h200, seed=0, prior_acceptance=0.8, switch_margin=0.5, draw_margin=0.5)
        mean, _, _ = c.posterior(b)
        margin = 0.5 * (1 - 1 / b)
        picks[b] = (c.choose(StepContext(step=0, batch_size=b, max_spec_len=8)), mean)
        assert picks[b][0] == int(np.flatnonzero(mean >= (1 - margin) * mean.max())[0])
    assert picks[1][0] == int(np.argmax(picks[1][1]))        # nothing to drain at batch 1: the best arm
    assert picks[8][0] < int(np.argmax(picks[8][1]))         # at batch 8 a shorter one within the margin


def test_an_exploring_draw_is_held_for_min_run_steps_at_its_context(h200):
    c = build_controller("thompson", max_spec_len=8, prior="none", seed=3, min_run=5, explore_fraction=1.0)
    chosen = drive(c, batch_size=2, steps=120, accepted_at_each_pos=1)
    runs, current = [], [chosen[0]]
    for s in chosen[1:]:
        if s == current[-1]:
            current.append(s)
        else:
            runs.append(current)
            current = [s]
    explored = [r for r in runs[:-1] if r[0] != 0]
    assert explored and all(len(r) >= 5 for r in explored)


def test_each_arm_reads_its_own_acceptance_about_the_pooled_one():
    arms = ArmAcceptance(4, shrinkage=10.0)
    pooled = [0.5, 0.5, 0.5, 0.5]
    for i in range(30):
        arms.observe(make_record(batch_size=4, spec_len=3, accepted_per_pos=(4, 4, 3), step=i))   # arm 3: easy
        arms.observe(make_record(batch_size=4, spec_len=2, accepted_per_pos=(1, 0), step=i))      # arm 2: hard
    rates = arms.rates(pooled)
    assert rates[3][0] > 0.9 and rates[2][0] < 0.35
    assert rates[4] == pooled and rates[1] == [0.5]         # never played: the pooled rates
    low = arms.lower(pooled, [0.05] * 4)
    assert all(lo < r for lo, r in zip(low[3], rates[3]))
    draws = [arms.sample(pooled, np.random.default_rng(s))[4][0] for s in range(200)]
    assert np.std(draws) > 0.02                             # an unplayed arm stays uncertain


def test_the_hf_engine_gives_the_bandits_its_own_settings_and_the_user_overrides_them():
    from autospec import AutoSpec
    from autospec.entrypoints.engine import ENGINE_CONTROLLER_OPTIONS
    from tests.backends.tiny_models import tiny_llama

    target = tiny_llama()
    spec = AutoSpec(target, "ngram", cost_model=None)
    for option, value in ENGINE_CONTROLLER_OPTIONS.items():
        assert getattr(spec.controller, option) == value
    assert AutoSpec(target, "ngram", cost_model=None, min_run=2).controller.min_run == 2
    assert not hasattr(AutoSpec(target, "ngram", controller="fixed:2").controller, "min_run")


def test_an_arm_without_its_own_evidence_waits_for_the_exploration_budget(h200):
    ctx = StepContext(step=0, batch_size=1, max_spec_len=8)
    options = dict(cost_model=h200, seed=0, prior_acceptance=0.8, min_run=8, shortfall_floor=0.15)
    assert ThompsonController(**options).choose(ctx) > 0          # the prior alone makes drafting greedy
    c = ThompsonController(**options, known_steps=4, explore_fraction=0.01)
    assert c.choose(ctx) == 0                                     # unknown arms are explored, not exploited
    chosen = "".join(str(s) for s in drive_costed(c, 600))        # every draft is rejected
    runs = [run for run in chosen.split("0") if len(run) > 1]      # exploring runs (a lone 1 is a probe)
    assert 1 <= len(runs) <= 5 and all(len(run) == 8 for run in runs)
    assert c.explore_cost_s <= 0.01 * c.run_time_s + 8 * 0.02


def drive_costed(controller, steps: int, switch_s: float = 0.0) -> list[int]:
    """Batch 1, every draft rejected, a step at spec_len s taking 10 ms x (1 + 0.2 s), and a drafting
    step right after a plain one `switch_s` more (a lazy draft's catch-up)."""
    chosen, last = [], 0
    for i in range(steps):
        s = controller.choose(StepContext(step=i, batch_size=1, max_spec_len=8))
        extra = switch_s if s > 0 and last == 0 else 0.0
        controller.observe(make_record(batch_size=1, spec_len=s, accepted_per_pos=(0,) * s, step=i,
                                       draft_time_s=0.0, verify_time_s=0.01 * (1 + 0.2 * s) + extra))
        chosen.append(s)
        last = s
    return chosen


def test_a_measured_switch_cost_spaces_the_probes_and_is_not_the_arms_own_time(h200):
    plain = ThompsonController(cost_model=h200, seed=0, prior_acceptance=0.05)
    learnt = ThompsonController(cost_model=h200, seed=0, prior_acceptance=0.05, switch_cost=True)
    before = learnt.probe_interval(1)
    assert before == plain.probe_interval(1)
    for c in (plain, learnt):
        drive_costed(c, 400, switch_s=0.1)
    assert learnt.switch_s[0] == pytest.approx(0.1, rel=0.3)          # measured per context (batch 1)
    assert learnt.probe_interval(1) >= 0.1 / 0.01 / 0.005 * 0.7 > before   # a probe costs ~10 plain steps more
    correction = {name: c.arms.correction(1)[0][1] for name, c in (("plain", plain), ("learnt", learnt))}
    assert correction["learnt"] < correction["plain"] - 0.5            # spec_len 1 is not blamed for the switch


def drive_call(controller, steps: int, accepted: bool, remaining_tokens: int = 0) -> list[int]:
    """Batch 1, a step at spec_len s taking 10 ms x (1 + 0.2 s), every draft accepted or every one
    rejected; the context says `remaining_tokens` are still to come (a call of that many tokens)."""
    chosen = []
    for i in range(steps):
        ctx = StepContext(step=i, batch_size=1, max_spec_len=8, remaining_tokens=max(0, remaining_tokens - i))
        s = controller.choose(ctx)
        controller.observe(make_record(batch_size=1, spec_len=s, accepted_per_pos=(int(accepted),) * s, step=i,
                                       draft_time_s=0.0, verify_time_s=0.01 * (1 + 0.2 * s)))
        chosen.append(s)
    return chosen


ENGINE_LIKE = dict(seed=0, prior_acceptance=0.8, min_run=8, shortfall_floor=0.15, known_steps=4, explore_fraction=0.01)


def test_lookahead_lets_a_fresh_controller_explore_in_the_first_steps_of_a_call(h200):
    waiting = ThompsonController(cost_model=h200, **ENGINE_LIKE)
    ahead = ThompsonController(cost_model=h200, lookahead=True, **ENGINE_LIKE)
    assert ThompsonController(cost_model=h200, lookahead=True, **ENGINE_LIKE).choose(
        StepContext(step=0, batch_size=1, max_spec_len=8, remaining_tokens=63)) == 0   # nothing measured yet
    first_waiting = drive_call(waiting, 12, accepted=True, remaining_tokens=64)
    first_ahead = drive_call(ahead, 12, accepted=True, remaining_tokens=64)
    assert set(first_waiting) <= {0}                                  # 1% of 12 steps pays for no run
    assert any(s > 0 for s in first_ahead[:3])                        # 1% of the call's 64 steps does
    assert ahead.explore_cost_s <= 0.01 * (ahead.run_time_s + 52 * 0.01) + 8 * 0.02


def test_a_realized_charge_bills_only_the_time_an_exploring_run_really_lost(h200):
    won = ThompsonController(cost_model=h200, lookahead=True, realized_charge=True, **ENGINE_LIKE)
    chosen = drive_call(won, 12, accepted=True, remaining_tokens=64)
    assert any(s > 0 for s in chosen[:3])                            # the first exploring run, from plain
    assert won.explore_cost_s == 0.0                                  # drafting beat plain: nothing lost
    lost = ThompsonController(cost_model=h200, lookahead=True, realized_charge=True, **ENGINE_LIKE)
    chosen = drive_call(lost, 40, accepted=False, remaining_tokens=64)
    explored = [s for s in chosen if s > 1]                           # exploring steps (a lone 1 may be a probe)
    assert explored
    # each lost 10 ms x 0.2 s against a 10 ms plain step emitting the same one token (discounted a little)
    lost_s = sum(0.01 * 0.2 * s for s in explored)
    assert lost.explore_cost_s == pytest.approx(lost_s, rel=0.25)
    predicted = ThompsonController(cost_model=h200, lookahead=True, **ENGINE_LIKE)
    drive_call(predicted, 40, accepted=True, remaining_tokens=64)
    assert predicted.explore_cost_s > 0.0                             # the predicted charge bills a winner too
