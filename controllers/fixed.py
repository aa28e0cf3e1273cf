"""`fixed`: the same spec_len every step (0 = plain decoding, the baseline); `sweep`: every
spec_len of a list once per sweep of consecutive steps, in a fresh random order each sweep (to
measure spec_lens side by side, so that the host's drifts fall on all of them alike)."""
from __future__ import annotations

import random
from typing import Sequence

from autospec.types import StepContext

from .base import BaseController, check_int, register


@register("fixed")
class FixedController(BaseController):
    def __init__(self, *, spec_len: int = 3, max_spec_len: int = 8):
        super().__init__(max_spec_len)
        self.spec_len = check_int("spec_len", spec_len, 0, self.max_spec_len)
        self.name = f"fixed:{spec_len}"

    def choose(self, ctx: StepContext) -> int:
        return self.clamp(self.spec_len, ctx)


@register("sweep")
class SweepController(BaseController):
    def __init__(self, *, spec_lens: str | Sequence[int] = (0, 1, 2, 3, 4), max_spec_len: int = 8, seed: int = 0):
        super().__init__(max_spec_len)
        self.spec_lens = parse_spec_lens(spec_lens, self.max_spec_len)
        self.name = "sweep:" + ",".join(map(str, self.spec_lens))
        self._rng = random.Random(seed)
        self._pending: list[int] = []

    def choose(self, ctx: StepContext) -> int:
        if not self._pending:
            self._pending = self._rng.sample(self.spec_lens, len(self.spec_lens))
        return self.clamp(self._pending.pop(), ctx)


def parse_spec_lens(spec_lens: str | Sequence[int], max_spec_len: int) -> list[int]:
    """'0,1,3' or [0, 1, 3] -> distinct spec_lens in 0..max_spec_len, or ValueError naming the problem."""
    if isinstance(spec_lens, str):
        try:
            spec_lens = [int(s) for s in spec_lens.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"sweep needs comma-separated integer spec_lens, got {spec_lens!r}") from None
    values = [check_int("sweep spec_len", s, 0, max_spec_len) for s in spec_lens]
    if not values or len(set(values)) != len(values):
        raise ValueError(f"sweep needs distinct spec_lens, got {list(spec_lens)}")
    return values
