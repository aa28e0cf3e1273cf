"""The three roles of the autospec loop, as structural protocols.

Contract:
- A `Backend` owns models, caches and timing. `context()` describes the batch about to run;
  `step(spec_len)` drafts, verifies, commits and times one step (one device sync) and returns
  its `StepRecord`; `done()` says whether work remains.
- A `Controller` owns the choice of `spec_len` and its statistics: `choose(ctx)` -> int in
  0..ctx.max_spec_len; `observe(record)` learns from what the step measured; `scores(ctx)`
  returns its current value estimate per arm (mean and std of goodput in tokens/s), so a
  dashboard can show why it chose.
- A `Sink` receives every record (`write`) and is closed once (`close`).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from autospec.types import StepContext, StepRecord


@runtime_checkable
class Backend(Protocol):
    max_spec_len: int

    def context(self) -> StepContext: ...

    def step(self, spec_len: int) -> StepRecord: ...

    def done(self) -> bool: ...


@runtime_checkable
class Controller(Protocol):
    name: str

    def choose(self, ctx: StepContext) -> int: ...

    def observe(self, record: StepRecord) -> None: ...

    def scores(self, ctx: StepContext) -> "ArmScores": ...


@runtime_checkable
class Sink(Protocol):
    def write(self, record: StepRecord) -> None: ...

    def close(self) -> None: ...


class ArmScores(dict):
    """spec_len -> (mean goodput_tps, std goodput_tps): a controller's view of each arm."""
