"""`thompson`: Thompson sampling over spec_len arms (see `bandit` for the statistics).

Each step draws the per-position acceptance from its Beta posterior and the arms' step-time
corrections jointly from their Gaussian posterior (model prior: the batch-size context's common
level once, each arm's own deviation independently), or each arm's mean goodput (no prior),
and plays the arm whose drawn goodput is largest.
"""
from __future__ import annotations

import numpy as np

from .bandit import BanditController, ModelArms
from .base import bucket_of, register


@register("thompson")
class ThompsonController(BanditController):
    def model_values(self, batch_size: int) -> np.ndarray:
        assert isinstance(self.arms, ModelArms)
        rates = self.arm_acceptance.sample(self.acceptance.sample(self.rng)[: self.max_spec_len], self.rng)
        mean, own_std, shared_std = self.arms.correction_parts(batch_size)
        *draws, z_m = self.rng.standard_normal(len(mean) + 1).tolist()
        return self.arms.values(batch_size, rates, [m + o * z + c * z_m for m, o, c, z in zip(mean, own_std, shared_std, draws)])

    def flat_values(self, batch_size: int) -> np.ndarray:
        n, mean, std = self.arms.estimate(bucket_of(batch_size))
        if (n < 1e-3).any():
            return (n < 1e-3).astype(float) + self.rng.random(len(n)) * 1e-3
        return mean + std * self.rng.standard_normal(len(mean))
