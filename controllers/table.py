"""`table`: a batch-size -> spec_len lookup (the paper's static policy by default).

A batch size uses the entry of the largest listed batch size not above it, so the paper's table
1:7, 2:6, 4:4, 8:4, 16:3, 32:1 gives spec_len 1 for every batch of 32 rows or more. A preset's
entries are capped at `max_spec_len`; a table given by the user must fit within it.
"""
from __future__ import annotations

import bisect

from autospec.types import StepContext

from .base import BaseController, check_int, register

PRESETS = {"paper": {1: 7, 2: 6, 4: 4, 8: 4, 16: 3, 32: 1}}


def parse_table(table: str | dict[int, int]) -> dict[int, int]:
    """A preset name, a '1=7,2=6' string or a mapping -> {batch_size: spec_len}."""
    if isinstance(table, dict):
        return {int(b): int(s) for b, s in table.items()}
    if table in PRESETS:
        return dict(PRESETS[table])
    try:
        pairs = [item.replace(":", "=").split("=") for item in table.split(",") if item.strip()]
        return {int(b): int(s) for b, s in pairs}
    except ValueError:
        raise ValueError(f"table must be a preset ({', '.join(PRESETS)}) or 'batch=spec_len,...', "
                         f"got {table!r}") from None


@register("table")
class TableController(BaseController):
    def __init__(self, *, table: str | dict[int, int] = "paper", max_spec_len: int = 8):
        super().__init__(max_spec_len)
        mapping = parse_table(table)
        if isinstance(table, str) and table in PRESETS:
            mapping = {b: min(s, self.max_spec_len) for b, s in mapping.items()}
        if not mapping or 1 not in mapping:
            raise ValueError(f"table must have an entry for batch size 1, got {sorted(mapping)}")
        for batch_size, spec_len in mapping.items():
            check_int("table batch size", batch_size, 1)
            check_int(f"table spec_len for batch size {batch_size}", spec_len, 0, self.max_spec_len)
        self._keys = sorted(mapping)
        self._values = [mapping[b] for b in self._keys]

    def choose(self, ctx: StepContext) -> int:
        i = bisect.bisect_right(self._keys, ctx.batch_size) - 1
        return self.clamp(self._values[max(i, 0)], ctx)
