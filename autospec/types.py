"""Core value types shared by every part of autospec.

Contract:
- `StepContext` is everything a controller may look at before it chooses a `spec_len`.
- `StepRecord` is what one speculative step did and cost. One record is one line of
  `runs/<name>/steps.jsonl`, the format the dashboard, the CLI and every tool read. Derived
  quantities (`step_time_s`, `num_emitted_tokens`, `goodput_tps`, `acceptance_rate`,
  `tokens_per_target_pass`) are properties, written to JSON for readers, ignored when reading back.
  `verified_width` (tokens per row in the target's verify forward) and `rows_drafted_per_pos`
  (rows whose drafter proposed at least j + 1 tokens) are fields; left out (None) they are what a
  drafter that always proposes spec_len tokens gives: spec_len + 1 and batch_size per position.
- Both are frozen: nothing downstream may change what was measured.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepContext:
    """What a controller sees before choosing the step's `spec_len`."""

    step: int
    batch_size: int
    max_spec_len: int
    mean_context_len: float = 0.0
    max_context_len: int = 0
    time_s: float = 0.0
    remaining_tokens: int = 0       # the most new tokens a running row may still emit (0: unknown)


REQUIRED_FIELDS = (
    "step", "batch_size", "spec_len", "num_draft_tokens", "num_accepted_tokens",
    "accepted_per_pos", "draft_time_s", "verify_time_s", "controller",
)
DERIVED_FIELDS = (
    "step_time_s", "num_emitted_tokens", "goodput_tps", "acceptance_rate", "tokens_per_target_pass",
)


@dataclass(frozen=True)
class StepRecord:
    """One speculative step: `batch_size` rows each drafted up to `spec_len` tokens and verified.

    `accepted_per_pos[j]` counts rows whose draft at position j was accepted together with all
    drafts before it (so it never grows with j). A row that proposed fewer than `spec_len` drafts
    counts as rejected at its first missing position. `num_bonus_tokens` is the number of rows
    that also emitted the target's own token (None: every row did; fewer when a row stopped at
    EOS or its token budget inside the accepted drafts).
    """

    step: int
    batch_size: int
    spec_len: int
    num_draft_tokens: int
    num_accepted_tokens: int
    accepted_per_pos: tuple[int, ...]
    draft_time_s: float
    verify_time_s: float
    controller: str
    overhead_time_s: float = 0.0
    num_bonus_tokens: int | None = None
    time_s: float = 0.0
    mean_context_len: float = 0.0
    oracle_goodput_tps: float | None = None
    verified_width: int | None = None
    rows_drafted_per_pos: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verified_width is None:
            object.__setattr__(self, "verified_width", self.spec_len + 1)
        drafted = (self.batch_size,) * self.spec_len if self.rows_drafted_per_pos is None else self.rows_drafted_per_pos
        object.__setattr__(self, "rows_drafted_per_pos", tuple(drafted))

    @property
    def step_time_s(self) -> float:
        return self.draft_time_s + self.verify_time_s + self.overhead_time_s

    @property
    def num_emitted_tokens(self) -> int:
        bonus = self.batch_size if self.num_bonus_tokens is None else self.num_bonus_tokens
        return self.num_accepted_tokens + bonus

    @property
    def goodput_tps(self) -> float:
        return self.num_emitted_tokens / self.step_time_s if self.step_time_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed draft tokens (NaN when nothing was drafted)."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else math.nan

    @property
    def tokens_per_target_pass(self) -> float:
        """Tokens emitted per row per target pass (1 + accepted per row, as vLLM reports it)."""
        return self.num_emitted_tokens / self.batch_size if self.batch_size else 0.0

    def trials_per_pos(self) -> tuple[int, ...]:
        """Rows that reached each draft position (every draft before it accepted)."""
        return ((self.batch_size,) + tuple(self.accepted_per_pos[:-1]))[: self.spec_len]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["accepted_per_pos"] = list(self.accepted_per_pos)
        d["rows_drafted_per_pos"] = list(self.rows_drafted_per_pos)
        for name in DERIVED_FIELDS:
            value = getattr(self, name)
            d[name] = None if isinstance(value, float) and math.isnan(value) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepRecord":
        """Rebuild a record from `to_dict` output; raises ValueError naming a missing field."""
        missing = [k for k in REQUIRED_FIELDS if k not in d]
        if missing:
            raise ValueError(f"not an autospec step record: missing field(s) {', '.join(missing)}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["accepted_per_pos"] = tuple(kwargs["accepted_per_pos"])
        extra = kwargs.get("extra") or {}
        for name, old in (("verified_width", "verify_q"), ("rows_drafted_per_pos", "rows_drafted_per_pos")):
            if kwargs.get(name) is None and old in extra:            # logs written before these were fields
                kwargs[name] = extra[old]
        return cls(**kwargs)                                 # __post_init__ makes rows_drafted_per_pos a tuple


def _json_default(value: Any) -> Any:
    """numpy scalars and tuples in `extra` serialise as plain JSON numbers and lists."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def validate_spec_len(spec_len: int, max_spec_len: int) -> int:
    """Return `spec_len` as int, or raise ValueError when it is outside 0..max_spec_len."""
    if isinstance(spec_len, bool) or int(spec_len) != spec_len:
        raise ValueError(f"spec_len must be an integer, got {spec_len!r}")
    if not 0 <= spec_len <= max_spec_len:
        raise ValueError(f"spec_len must be in 0..{max_spec_len}, got {spec_len}")
    return int(spec_len)
