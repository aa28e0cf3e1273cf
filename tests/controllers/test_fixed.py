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


def test_sweep_visits_every_spec_len_once_per_sweep_in_varying_order():
    c = build_controller("sweep:0,1,3", max_spec_len=4, seed=1)
    chosen = [c.choose(StepContext(step=i, batch_size=2, max_spec_len=4)) for i in range(30)]
    sweeps = [chosen[i:i + 3] for i in range(0, 30, 3)]
    assert all(sorted(s) == [0, 1, 3] for s in sweeps) and len({tuple(s) for s in sweeps}) > 1
    assert c.name == "sweep:0,1,3"
    assert c.choose(StepContext(step=30, batch_size=2, max_spec_len=0)) == 0       # clamped like any controller


@pytest.mark.parametrize("spec_lens, message", [("0,x", "comma-separated integer"), ("1,1", "distinct"),
                                                ("", "distinct"), ("0,9", "sweep spec_len must be 0..4, got 9")])
def test_sweep_refuses_bad_spec_lens(spec_lens, message):
    with pytest.raises(ValueError, match=message):
        build_controller(f"sweep:{spec_lens}" if spec_lens else "sweep", max_spec_len=4, spec_lens=spec_lens)


def test_controller_lists_keep_comma_arguments_together():
    from autospec.controllers import split_specs
    assert split_specs("fixed:2, sweep:0,2,4,table:1=7,8=2,auto") == ["fixed:2", "sweep:0,2,4", "table:1=7,8=2", "auto"]
    assert split_specs("auto,,fixed:0") == ["auto", "fixed:0"]
