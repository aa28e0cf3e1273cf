"""Planning: the best spec_len per batch size from a cost model and an acceptance (pure: no models
run; the `autospec plan` command is `autospec.entrypoints.plan`).

Contract:
- `acceptance_from_run` estimates per-position rates from a run's step log (`autospec.acceptance`).
- `plan_rows` gives, per batch size, the spec_len with the highest modelled goodput, that goodput,
  the speedup over spec_len 0 and the spec_lens within `margin` of the best (near-ties).
  Batch sizes outside the profile's measured range are planned from the fitted model with a
  logged warning.
- `policy_ranges` turns the per-batch-size choice for every batch size 1..max_batch_size into
  contiguous ranges and merges a range into its neighbour whenever the neighbour's spec_len is
  within `margin` of the best goodput at every batch size of the range, so an engine never
  flips spec_len between adjacent batch sizes for a gain smaller than the margin.
- `converged_spec_lens`: per batch size, the spec_len the online controller settled on in a run (the
  most frequent one over the last half of the steps at that batch size).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from loguru import logger

from autospec.acceptance import acceptance_from_records
from autospec.cost_model import CostModel, validate_acceptance
from autospec.export import Ranges, check_ranges
from autospec.types import StepRecord

DEFAULT_MARGIN = 0.02


@dataclass
class PlanRow:
    batch_size: int
    spec_len: int
    goodput_tps: float
    plain_goodput_tps: float
    near_best: list[int] = field(default_factory=list)
    converged_spec_len: int | None = None

    @property
    def speedup(self) -> float:
        return self.goodput_tps / self.plain_goodput_tps


def acceptance_vector(acceptance: float | Sequence[float], max_spec_len: int) -> np.ndarray:
    """[max_spec_len] per-position rates; a short list is extended with its last rate."""
    if isinstance(acceptance, (int, float)):
        return np.full(max_spec_len, validate_acceptance(float(acceptance)))
    rates = [float(a) for a in acceptance]
    if not rates:
        raise ValueError("no per-position acceptance rates")
    bad = [a for a in rates if not 0.0 <= a < 1.0]
    if bad:
        raise ValueError(f"per-position acceptance must lie in [0, 1), got {bad[0]}")
    return np.array((rates + [rates[-1]] * max_spec_len)[:max_spec_len])


def plan_rows(model: CostModel, acceptance: np.ndarray, batch_sizes: Sequence[int], max_spec_len: int,
              margin: float = DEFAULT_MARGIN) -> list[PlanRow]:
    _warn_outside(model, batch_sizes)
    rows = []
    for b in batch_sizes:
        goodput = model.goodput_vector(b, max_spec_len, acceptance)
        best = int(np.argmax(goodput))
        near = [s for s, g in enumerate(goodput) if g >= (1 - margin) * goodput[best]]
        rows.append(PlanRow(b, best, float(goodput[best]), float(goodput[0]), near))
    return rows


def _warn_outside(model: CostModel, batch_sizes: Sequence[int]) -> None:
    measured = model.profile.batch_sizes
    outside = [b for b in batch_sizes if b < measured[0] or b > measured[-1]]
    if outside:
        logger.warning(f"batch sizes {outside} are outside the measured {measured[0]}..{measured[-1]}: "
                       "planned from the fitted model (extrapolated)")


def policy_ranges(model: CostModel, acceptance: np.ndarray, max_batch_size: int, max_spec_len: int,
                  margin: float = DEFAULT_MARGIN) -> Ranges:
    """Contiguous (lo, hi, spec_len) ranges over 1..max_batch_size, with near-ties merged."""
    goodput = np.array([model.goodput_vector(b, max_spec_len, acceptance) for b in range(1, max_batch_size + 1)])
    best = goodput.argmax(axis=1)
    ranges = _runs(best)
    changed = True
    while changed and len(ranges) > 1:
        changed = False
        for i, (lo, hi, k) in enumerate(ranges):
            for j in (i - 1, i + 1):
                if 0 <= j < len(ranges) and _within(goodput[lo - 1:hi], ranges[j][2], margin):
                    ranges[i] = (lo, hi, ranges[j][2])
                    ranges = _runs_from_ranges(ranges)
                    changed = True
                    break
            if changed:
                break
    return check_ranges(ranges)


def _within(goodput: np.ndarray, spec_len: int, margin: float) -> bool:
    """Is spec_len within margin of the best at every batch size of this block [rows, arms]?"""
    return bool((goodput[:, spec_len] >= (1 - margin) * goodput.max(axis=1)).all())


def _runs(values: np.ndarray) -> Ranges:
    ranges: Ranges = []
    for b, k in enumerate(values.tolist(), start=1):
        if ranges and ranges[-1][2] == k:
            ranges[-1] = (ranges[-1][0], b, k)
        else:
            ranges.append((b, b, k))
    return ranges


def _runs_from_ranges(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for lo, hi, k in ranges:
        if merged and merged[-1][2] == k:
            merged[-1] = (merged[-1][0], hi, k)
        else:
            merged.append((lo, hi, k))
    return merged


def converged_spec_lens(records: Sequence[StepRecord]) -> dict[int, int]:
    """Per batch size: the most frequent spec_len over the last half of that batch size's steps."""
    by_batch: dict[int, list[int]] = defaultdict(list)
    for r in records:
        by_batch[r.batch_size].append(r.spec_len)
    return {b: Counter(s[len(s) // 2:]).most_common(1)[0][0] for b, s in by_batch.items()}


def load_run_records(path: Path) -> list[StepRecord]:
    from autospec.runs import STEPS_FILE, read_steps
    return read_steps(path / STEPS_FILE if path.is_dir() else path)


def acceptance_from_run(path: Path, max_spec_len: int) -> tuple[np.ndarray, list[StepRecord]]:
    """[max_spec_len] per-position rates estimated from a run's step log, and its records."""
    records = load_run_records(path)
    measured = acceptance_from_records(records, max_spec_len)
    if not any(measured["trials_per_pos"]):
        raise ValueError(f"run {path} never speculated: no acceptance to plan with; give --acceptance")
    return acceptance_vector(measured["per_pos"], max_spec_len), records


def format_plan(model: CostModel, acceptance: np.ndarray, rows: list[PlanRow]) -> str:
    lines = [f"profile {model.name}; acceptance per position {np.round(acceptance, 3).tolist()}",
             f"{'batch':>6}{'spec_len':>10}{'goodput tok/s':>15}{'vs spec_len 0':>15}{'near-best':>14}{'run chose':>11}"]
    for r in rows:
        chose = "" if r.converged_spec_len is None else str(r.converged_spec_len)
        near = ",".join(map(str, r.near_best))
        lines.append(f"{r.batch_size:>6}{r.spec_len:>10}{r.goodput_tps:>15.1f}{r.speedup:>14.2f}x{near:>14}{chose:>11}")
    return "\n".join(lines)
