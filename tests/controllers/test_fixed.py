import pytest

from autospec import StepContext
from autospec.controllers import FixedController, build_controller


def test_always_the_same_spec_len_including_zero():
    for k in (0, 3, 8):
        c = FixedController(spec_len=k, max_spec_len=8)
        assert {c.choose(StepContext(step=i, batch_size=b, max_spec_len=8)) for i, b in enumerate((1, 7, 256))} == {k}


def test_never_exceeds_what_the_step_allows():
    assert FixedController(spec_len=6, max_spec_len=8).choose(StepContext(step=0, batch_size=1, max_spec_len=2)) == 2


def test_spec_string_builds_it():
    c = build_controller("fixed:5", max_spec_len=8)
    assert c.choose(StepContext(step=0, batch_size=1, max_spec_len=8)) == 5 and c.name == "fixed:5"


def test_spec_len_above_the_maximum_is_refused():
    with pytest.raises(ValueError, match="spec_len must be 0..8, got 9"):
        FixedController(spec_len=9, max_spec_len=8)
