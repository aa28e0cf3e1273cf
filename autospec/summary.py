"""Summaries of a run's StepRecords: what the CLI prints and `compare` writes as JSON.

Contract: goodput is total emitted tokens over total step time (never a mean of per-step
ratios); `warmup_steps` leading steps are left out; `per_batch_size` groups steps by batch size;
`oracle_goodput_tps` (when the records carry the oracle's per-step expected goodput) is the
step-time-weighted mean of it, so `goodput_tps / oracle_goodput_tps` reads as a fraction.
`acceptance_per_pos` is `autospec.acceptance.PositionCounts`' rates (None where no row reached a
position). `RunningSummary` gives the same dict updated one record at a time (constant memory).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from autospec.acceptance import PositionCounts
from autospec.types import StepRecord


def summarize(records: Sequence[StepRecord], warmup_steps: int = 0) -> dict[str, Any]:
    running = RunningSummary()
    for r in records[warmup_steps:]:
        running.add(r)
    return running.as_dict()


@dataclass
class _Totals:
    """Sums over a set of records, updated one record at a time."""
    steps: int = 0
    time_s: float = 0.0
    tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    rows: int = 0
    spec_len_sum: int = 0
    oracle_steps: int = 0
    oracle_weighted: float = 0.0
    spec_len_counts: Counter = field(default_factory=Counter)
    positions: PositionCounts = field(default_factory=PositionCounts)

    def add(self, r: StepRecord) -> None:
        self.steps += 1
        self.time_s += r.step_time_s
        self.tokens += r.num_emitted_tokens
        self.drafted += r.num_draft_tokens
        self.accepted += r.num_accepted_tokens
        self.rows += r.batch_size
        self.spec_len_sum += r.spec_len
        self.spec_len_counts[r.spec_len] += 1
        self.positions.add(r)
        if r.oracle_goodput_tps is not None:
            self.oracle_steps += 1
            self.oracle_weighted += r.oracle_goodput_tps * r.step_time_s

    def as_dict(self, per_group: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "steps": self.steps,
            "goodput_tps": self.tokens / self.time_s if self.time_s > 0 else 0.0,
            "mean_spec_len": self.spec_len_sum / self.steps if self.steps else math.nan,
            "tokens_per_target_pass": self.tokens / self.rows if self.rows else math.nan,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else math.nan,
            "acceptance_per_pos": [None if a is None else round(a, 4) for a in self.positions.rates()],
            "num_emitted_tokens": self.tokens,
            "time_s": self.time_s,
        }
        if per_group and self.steps:
            out["spec_len_mode"] = self.spec_len_counts.most_common(1)[0][0]
        if self.oracle_steps and self.oracle_steps == self.steps and self.time_s > 0:
            out["oracle_goodput_tps"] = self.oracle_weighted / self.time_s
        return out


class RunningSummary:
    """`summarize` computed incrementally: constant memory per batch size, whatever the run's length."""

    def __init__(self) -> None:
        self.total = _Totals()
        self.groups: dict[int, _Totals] = defaultdict(_Totals)

    def add(self, record: StepRecord) -> None:
        self.total.add(record)
        self.groups[record.batch_size].add(record)

    write = add                                       # a RunningSummary is a sink

    def close(self) -> None:
        pass

    def as_dict(self) -> dict[str, Any]:
        out = self.total.as_dict()
        out["per_batch_size"] = {b: t.as_dict(per_group=True) for b, t in sorted(self.groups.items())}
        return out
