"""`fixed`: the same spec_len every step (0 = plain decoding, the baseline)."""
from __future__ import annotations

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
