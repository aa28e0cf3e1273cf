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
