"""Every registered controller honours the Controller contract."""
import math

import pytest

from autospec import StepContext
from autospec.backends import SimulatedBackend, Workload
from autospec.controllers import CONTROLLERS, build_controller
from autospec.protocols import Controller
from tests.conftest import make_record


@pytest.fixture(params=CONTROLLERS.names())
def controller(request, h200):
    options = {}
    if request.param == "oracle":
        options["truth"] = SimulatedBackend(h200, Workload(batch_size=8, steps=10))
    return build_controller(request.param, max_spec_len=6, cost_model=h200, seed=0, **options)


def test_is_a_controller(controller):
    assert isinstance(controller, Controller) and controller.name


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100, 4096])
def test_choose_is_within_the_allowed_range(controller, batch_size):
    for max_spec_len in (0, 2, 6):
        s = controller.choose(StepContext(step=0, batch_size=batch_size, max_spec_len=max_spec_len))
        assert isinstance(s, int) and 0 <= s <= max_spec_len


def test_observe_then_choose_keeps_working(controller):
    for i in range(20):
        ctx = StepContext(step=i, batch_size=8, max_spec_len=6)
        s = controller.choose(ctx)
        controller.observe(make_record(batch_size=8, spec_len=s, accepted_per_pos=(6, 4, 3, 2, 1, 1)[:s], step=i))
    assert 0 <= controller.choose(StepContext(step=20, batch_size=8, max_spec_len=6)) <= 6


def test_scores_cover_every_arm(controller):
    scores = controller.scores(StepContext(step=0, batch_size=8, max_spec_len=6))
    assert sorted(scores) == list(range(7))
    for mean, std in scores.values():
        assert math.isnan(mean) or (mean > 0 and std >= 0)
