import pytest

from autospec import StepContext
from autospec.controllers import HeuristicController
from tests.conftest import make_record

CTX = StepContext(step=0, batch_size=2, max_spec_len=8)


def test_plus_two_when_all_accepted_minus_one_otherwise():
    c = HeuristicController(initial_spec_len=3, max_spec_len=8)
    assert c.choose(CTX) == 3
    c.observe(make_record(batch_size=2, spec_len=3, accepted_per_pos=(2, 2, 2)))
    assert c.choose(CTX) == 5
    c.observe(make_record(batch_size=2, spec_len=5, accepted_per_pos=(2, 2, 1, 1, 0)))
    assert c.choose(CTX) == 4


def test_stays_within_its_bounds():
    c = HeuristicController(initial_spec_len=1, max_spec_len=4)
    c.observe(make_record(batch_size=2, spec_len=1, accepted_per_pos=(0,)))
    assert c.choose(CTX) == 1                          # never below min_spec_len
    for _ in range(5):
        c.observe(make_record(batch_size=2, spec_len=c.choose(CTX), accepted_per_pos=(2,) * 8))
    assert c.choose(CTX) == 4                          # never above max_spec_len


def test_initial_below_minimum_is_refused():
    with pytest.raises(ValueError, match="initial_spec_len must be 2..8"):
        HeuristicController(initial_spec_len=1, min_spec_len=2, max_spec_len=8)
