"""`ucb`: upper-confidence-bound selection over spec_len arms (see `bandit` for the statistics).

Optimism in both factors of goodput under the model prior: acceptance at mean + kappa * std and
step time at its correction's mean - kappa * std, with kappa = `exploration` * sqrt(log t).
Without a prior: mean per-row goodput + kappa * its standard error, untried arms first.
"""
from __future__ import annotations

import math

import numpy as np

from .bandit import BanditController, ModelArms
from .base import bucket_of, check_float, register


@register("ucb")
class UCBController(BanditController):
    def __init__(self, *, exploration: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.exploration = check_float("exploration", exploration, 0.0, 100.0)

    def kappa(self) -> float:
        return self.exploration * math.sqrt(math.log(self.num_steps + 2.0))

    def model_values(self, batch_size: int) -> np.ndarray:
        assert isinstance(self.arms, ModelArms)
        kappa = self.kappa()
        rates = self.arm_acceptance.upper(self.acceptance.upper(kappa)[: self.max_spec_len], kappa)
        mean, std = self.arms.correction(batch_size)
        return self.arms.values(batch_size, rates, [m - kappa * s for m, s in zip(mean, std)])

    def flat_values(self, batch_size: int) -> np.ndarray:
        n, mean, std = self.arms.estimate(bucket_of(batch_size))
        if (n < 1e-3).any():
            return (n < 1e-3).astype(float) - np.arange(len(n)) * 1e-6
        return mean + self.kappa() * std
