import pytest

from autospec.controllers import UCBController
from tests.conftest import drive
from tests.controllers.helpers import ratio_to_oracle


@pytest.mark.parametrize("batch_size, acceptance", [(1, 0.8), (64, 0.7), (256, 0.3)])
def test_close_to_the_oracle_with_the_model_prior(h200, batch_size, acceptance):
    assert ratio_to_oracle(h200, "ucb", batch_size, acceptance) > 0.95


def test_without_a_prior_it_tries_every_arm_within_the_exploration_budget(h200):
    c = UCBController(cost_model=None, prior="none", max_spec_len=4, explore_fraction=0.05)
    tried = drive(c, batch_size=4, steps=200, accepted_at_each_pos=2, max_spec_len=4)
    assert set(tried) == {0, 1, 2, 3, 4}
    first_five = tried[:5]
    assert len(set(first_five)) < 5                  # not every arm at once: exploring is budgeted
    assert c.explore_cost_s <= 0.05 * c.run_time_s + 0.011 * 1.01   # within the budget, one step over at most


def test_exploration_must_be_non_negative(h200):
    with pytest.raises(ValueError, match="exploration"):
        UCBController(cost_model=h200, exploration=-1.0)
