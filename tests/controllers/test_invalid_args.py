"""Every constructor rejects a bad argument with a ValueError that names it."""
import pytest

from autospec.controllers import build_controller

CASES = [
    ("fixed", dict(spec_len=-1), "spec_len"),
    ("fixed", dict(spec_len=2.5), "spec_len"),
    ("fixed", dict(max_spec_len=-2), "max_spec_len"),
    ("table", dict(table="1=99"), "spec_len for batch size 1"),
    ("heuristic", dict(min_spec_len=-1), "min_spec_len"),
    ("model", dict(probe_every=0), "probe_every"),
    ("model", dict(discount=0.0), "discount"),
    ("model", dict(prior_acceptance=1.5), "prior_acceptance"),
    ("ucb", dict(exploration=-0.1), "exploration"),
    ("ucb", dict(prior="maybe"), "prior"),
    ("thompson", dict(time_discount=1.5), "time_discount"),
    ("thompson", dict(neighbour_weight=2.0), "neighbour_weight"),
    ("thompson", dict(cost_prior_scale=0.0), "cost_prior_scale"),
    ("thompson", dict(probe_every=0), "probe_every"),
    ("thompson", dict(probe_cost_fraction=0.0), "probe_cost_fraction"),
    ("auto", dict(acceptance_discount=0.0), "acceptance_discount"),
    ("auto", dict(known_steps=-1), "known_steps"),
    ("auto", dict(switch_cost="yes"), "switch_cost"),
    ("auto", dict(lookahead=1), "lookahead"),
    ("thompson", dict(realized_charge="no"), "realized_charge"),
]


@pytest.mark.parametrize("name, options, argument", CASES)
def test_invalid_argument_is_named(h200, name, options, argument):
    options.setdefault("max_spec_len", 8)
    max_spec_len = options.pop("max_spec_len")
    with pytest.raises(ValueError, match=argument):
        build_controller(name, max_spec_len=max_spec_len, cost_model=h200, **options)


def test_unknown_controller_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown controller 'best'; known: auto, fixed"):
        build_controller("best", max_spec_len=8)


def test_argument_syntax_errors():
    with pytest.raises(ValueError, match="integer spec_len"):
        build_controller("fixed:x", max_spec_len=8)
    with pytest.raises(ValueError, match="takes no ':' argument"):
        build_controller("auto:3", max_spec_len=8)


@pytest.mark.parametrize("name", ["table", "fixed:3", "heuristic", "auto", "thompson", "ucb", "model"])
def test_an_unknown_option_is_refused_by_name(h200, name):
    with pytest.raises(ValueError, match=rf"controller '{name.split(':')[0]}' takes no option 'typo_option'"):
        build_controller(name, max_spec_len=8, cost_model=h200, typo_option=1)


@pytest.mark.parametrize("name, option, value, read", [
    ("auto", "explore_fraction", 0.02, lambda c: c.explore_fraction),           # through make_auto's **options
    ("auto", "arm_shrinkage", 10.0, lambda c: c.arm_acceptance.shrinkage),
    ("ucb", "exploration", 0.4, lambda c: c.exploration),                        # UCB's own
    ("ucb", "plausible_z", 1.5, lambda c: c.plausible_z),                        # through UCB's **kwargs
])
def test_options_the_controller_takes_through_its_bases_are_accepted(h200, name, option, value, read):
    assert read(build_controller(name, max_spec_len=8, cost_model=h200, **{option: value})) == value
