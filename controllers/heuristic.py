"""`heuristic`: HuggingFace's assisted-generation schedule, batched.

+2 after a step in which every row accepted every draft, -1 otherwise, never below
`min_spec_len` (HF never drops to plain decoding, so the default is 1).
"""
from __future__ import annotations

from autospec.types import StepContext, StepRecord

from .base import BaseController, check_int, register


@register("heuristic")
class HeuristicController(BaseController):
    def __init__(self, *, initial_spec_len: int | None = None, min_spec_len: int = 1, max_spec_len: int = 8):
        super().__init__(max_spec_len)
        self.min_spec_len = check_int("min_spec_len", min_spec_len, 0, self.max_spec_len)
        start = self.max_spec_len if initial_spec_len is None else initial_spec_len
        self.spec_len = check_int("initial_spec_len", start, self.min_spec_len, self.max_spec_len)

    def choose(self, ctx: StepContext) -> int:
        return self.clamp(self.spec_len, ctx)

    def observe(self, record: StepRecord) -> None:
        if record.spec_len == 0:
            return
        all_accepted = record.num_accepted_tokens == record.batch_size * record.spec_len
        step = 2 if all_accepted else -1
        self.spec_len = max(self.min_spec_len, min(self.max_spec_len, record.spec_len + step))
