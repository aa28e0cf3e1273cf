from autospec import StepContext
from autospec.controllers import ThompsonController, build_controller
from tests.controllers.helpers import ratio_to_oracle


def test_auto_is_thompson_sampling_with_the_cost_model_prior(h200):
    c = build_controller("auto", max_spec_len=8, cost_model=h200)
    assert isinstance(c, ThompsonController) and c.prior == "model" and c.name == "auto"


def test_without_a_profile_auto_needs_no_prior():
    c = build_controller("auto", max_spec_len=8, cost_model=None)
    assert c.prior == "none"
    assert 0 <= c.choose(StepContext(step=0, batch_size=4, max_spec_len=8)) <= 8


def test_auto_tracks_the_oracle(h200):
    assert ratio_to_oracle(h200, "auto", 32, 0.8) > 0.95
