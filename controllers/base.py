"""Shared pieces of every controller: the registry, argument checks, batch-size contexts.

Contract: a controller class registers itself with `@register(name)`; its `__init__` takes keyword
arguments only and raises ValueError naming any invalid one; `build_controller` passes it the
subset of (max_spec_len, cost_model, seed) its signature accepts, and every option given, after
checking that it accepts them all (ValueError naming an unknown one; a factory with `**kwargs`
accepts what the class it builds, `forwards_to`, accepts, through its bases' `**kwargs`).
"""
from __future__ import annotations

import inspect
import math
from functools import lru_cache
from typing import Any

from autospec.protocols import ArmScores
from autospec.registry import Registry
from autospec.types import StepContext, StepRecord

CONTROLLERS = Registry("controller")
register = CONTROLLERS.register
NUM_BUCKETS = 16


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high], or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return value


def check_float(name: str, value: Any, low: float, high: float, *, open_low: bool = False,
                open_high: bool = False) -> float:
    """`value` as a float in the given interval, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    below = value <= low if open_low else value < low
    above = value >= high if open_high else value > high
    if below or above:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return float(value)


@lru_cache(maxsize=None)
def bucket_of(batch_size: int) -> int:
    """The batch-size context: nearest power of two (1 -> 0, 2 -> 1, 3..5 -> 2, 6..11 -> 3, ...)."""
    return min(NUM_BUCKETS - 1, int(round(math.log2(max(1, batch_size)))))


class BaseController:
    """Default `observe` (learn nothing) and `scores` (no estimate: NaN per arm)."""

    name = "base"

    def __init__(self, max_spec_len: int):
        self.max_spec_len = check_int("max_spec_len", max_spec_len, 0, 64)

    def observe(self, record: StepRecord) -> None:
        return None

    def scores(self, ctx: StepContext) -> ArmScores:
        return ArmScores({s: (math.nan, math.nan) for s in range(self.max_spec_len + 1)})

    def clamp(self, spec_len: int, ctx: StepContext) -> int:
        return max(0, min(spec_len, ctx.max_spec_len, self.max_spec_len))


def split_specs(text: str) -> list[str]:
    """'fixed:2,sweep:0,2,4,table:1=7,2=6,auto' -> ['fixed:2', 'sweep:0,2,4', 'table:1=7,2=6', 'auto']:
    a comma-separated piece that starts with a digit continues the previous spec's argument."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if specs and piece[:1].isdigit() and ":" in specs[-1]:
            specs[-1] += "," + piece
        elif piece:
            specs.append(piece)
    return specs


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'fixed:3' -> ('fixed', {'spec_len': 3}); 'table:1=7,2=6' -> ('table', {'table': '1=7,2=6'});
    'sweep:0,1,3' -> ('sweep', {'spec_lens': '0,1,3'})."""
    name, _, arg = spec.strip().partition(":")
    if not arg:
        return name, {}
    if name == "fixed":
        try:
            return name, {"spec_len": int(arg)}
        except ValueError:
            raise ValueError(f"fixed controller needs an integer spec_len, got {arg!r}") from None
    if name == "table":
        return name, {"table": arg}
    if name == "sweep":
        return name, {"spec_lens": arg}
    raise ValueError(f"controller {name!r} takes no ':' argument (got {spec!r})")


def takes_cost_model(spec: str) -> bool:
    """Whether the controller a spec names accepts a cost model (a prior worth finding for it)."""
    return names_option(spec, "cost_model")


def names_option(spec: str, option: str) -> bool:
    """Whether the controller a spec names accepts `option` (`accepted_options`)."""
    name, _ = parse_spec(spec)
    return option in accepted_options(CONTROLLERS.get(name))


def accepted_options(factory: Any) -> set[str]:
    """The keyword arguments a controller factory accepts, following `**kwargs` into the class it
    forwards to (`forwards_to`) or, for a class, into its bases' `__init__`."""
    names: set[str] = set()
    chain = [cls.__init__ for cls in inspect.getmro(factory)] if inspect.isclass(factory) else [factory]
    for fn in chain:
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    target = getattr(factory, "forwards_to", None)
    return names | accepted_options(target) if target is not None else names


def build_controller(spec: str, *, max_spec_len: int, cost_model: Any = None, seed: int = 0,
                     **options: Any) -> Any:
    """Create a registered controller from a spec like 'auto', 'fixed:3' or 'table'; an option the
    controller does not take is a ValueError naming it (never silently dropped)."""
    name, parsed = parse_spec(spec)
    factory = CONTROLLERS.get(name)
    accepted = accepted_options(factory)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"controller {name!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"it takes {', '.join(sorted(accepted - {'max_spec_len', 'cost_model', 'seed'})) or 'none'}")
    common = {"max_spec_len": max_spec_len, "cost_model": cost_model, "seed": seed}
    kwargs = {**{k: v for k, v in common.items() if k in accepted}, **options, **parsed}
    controller = factory(**kwargs)
    controller.name = spec.strip()
    return controller
