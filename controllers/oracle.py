"""`oracle`: knows the true cost and acceptance (a simulated backend's ground truth) and plays the
spec_len with the highest expected goodput each step. The reference every controller is judged by.

`truth` is any object with `true_goodput_vector(max_spec_len) -> [max_spec_len + 1] tokens/s`
for the step about to run (`SimulatedBackend` has one).
"""
from __future__ import annotations

import numpy as np

from autospec.protocols import ArmScores
from autospec.types import StepContext

from .base import BaseController, register


@register("oracle")
class OracleController(BaseController):
    def __init__(self, *, truth: object = None, max_spec_len: int = 8):
        super().__init__(max_spec_len)
        if not callable(getattr(truth, "true_goodput_vector", None)):
            raise ValueError("oracle needs truth: an object with true_goodput_vector(max_spec_len), "
                             "such as a SimulatedBackend")
        self.truth = truth

    def choose(self, ctx: StepContext) -> int:
        return self.clamp(int(np.argmax(self.truth.true_goodput_vector(self.max_spec_len))), ctx)

    def scores(self, ctx: StepContext) -> ArmScores:
        values = self.truth.true_goodput_vector(self.max_spec_len)
        return ArmScores({s: (float(v), 0.0) for s, v in enumerate(values)})
