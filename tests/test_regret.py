"""End-to-end regret on the simulator: the bandit must use its prior and must keep exploring."""
import numpy as np
import pytest

from autospec import CostModel
from autospec.backends import AcceptanceSpec, SimulatedBackend, Workload
from autospec.controllers import build_controller
from autospec.loop import run_step

FOREVER = (10**9, 10**9)


def regret(truth_model, spec, schedule, steps_counted, prior_model=None, seed=0, **options):
    """Steps' worth of oracle goodput lost over the last `steps_counted` steps of the schedule."""
    steps = sum(n for n, _ in schedule)
    backend = SimulatedBackend(truth_model, Workload(schedule=schedule, steps=steps, output_len=FOREVER),
                               AcceptanceSpec(mean=0.7), seed=seed)
    controller = build_controller(spec, max_spec_len=8, cost_model=prior_model or truth_model, seed=seed, **options)
    lost = []
    for _ in range(steps):
        truth = backend.true_goodput_vector(8)
        record = run_step(backend, controller, [])
        lost.append(1.0 - truth[record.spec_len] / truth.max())
    return float(np.sum(lost[-steps_counted:]))


@pytest.mark.parametrize("spec", ["thompson", "ucb"])
def test_the_prior_halves_regret_at_a_new_batch_size(h200, spec):
    schedule = ((300, 1), (200, 128))      # learned at batch size 1, then one never seen
    # regret is per step against the oracle's step goodput: no switch margin (a deliberate bias
    # toward shorter drafts for costs the simulator does not model) on either side
    with_prior = np.mean([regret(h200, spec, schedule, 200, seed=s, switch_margin=0.0) for s in range(3)])
    without = np.mean([regret(h200, spec, schedule, 200, seed=s, prior="none", switch_margin=0.0) for s in range(3)])
    assert with_prior <= 0.5 * without


def test_the_bandit_keeps_exploring_when_its_prior_is_wrong(h200):
    """The prior (another GPU's profile, extrapolated at this batch size) points at a bad arm; a bandit
    that stopped exploring would stay there. Regret in the last 500 of 1500 steps must be small."""
    h100 = CostModel.from_profile("h100-llama2-7b-llama-68m")
    late = regret(h200, "thompson", ((1500, 256),), 500, prior_model=h100)
    trusting = regret(h200, "model", ((1500, 256),), 500, prior_model=h100)
    assert trusting > 100        # the prior alone loses a third of the goodput ...
    assert late < 0.05 * 500     # ... the bandit, under 5% after learning
