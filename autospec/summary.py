"""Summaries of a run's StepRecords: what the CLI prints and `compare` writes as JSON.

Contract: goodput is total emitted tokens over total step time (never a mean of per-step
ratios); `warmup_steps` leading steps are left out; `per_batch_size` groups steps by batch size;
`oracle_goodput_tps` (when the records carry the oracle's per-step expected goodput) is the
step-time-weighted mean of it, so `goodput_tps / oracle_goodput_tps` reads as a fraction.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Sequence

from autospec.types import StepRecord


def summarize(records: Sequence[StepRecord], warmup_steps: int = 0) -> dict[str, Any]:
    kept = list(records[warmup_steps:])
    out = _totals(kept)
    groups: dict[int, list[StepRecord]] = defaultdict(list)
    for r in kept:
        groups[r.batch_size].append(r)
    out["per_batch_size"] = {b: _totals(rs, per_group=True) for b, rs in sorted(groups.items())}
    return out


def _totals(records: Sequence[StepRecord], per_group: bool = False) -> dict[str, Any]:
    time_s = sum(r.step_time_s for r in records)
    tokens = sum(r.num_emitted_tokens for r in records)
    drafted = sum(r.num_draft_tokens for r in records)
    accepted = sum(r.num_accepted_tokens for r in records)
    rows = sum(r.batch_size for r in records)
    out: dict[str, Any] = {
        "steps": len(records),
        "goodput_tps": tokens / time_s if time_s > 0 else 0.0,
        "mean_spec_len": sum(r.spec_len for r in records) / len(records) if records else math.nan,
        "acceptance_length": tokens / rows if rows else math.nan,
        "acceptance_rate": accepted / drafted if drafted else math.nan,
        "num_emitted_tokens": tokens,
        "time_s": time_s,
    }
    if per_group and records:
        out["spec_len_mode"] = Counter(r.spec_len for r in records).most_common(1)[0][0]
    oracle = [r for r in records if r.oracle_goodput_tps is not None]
    if oracle and len(oracle) == len(records) and time_s > 0:
        out["oracle_goodput_tps"] = sum(r.oracle_goodput_tps * r.step_time_s for r in oracle) / time_s
    return out
