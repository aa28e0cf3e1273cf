"""Online estimate of the draft's acceptance, per draft position, from measured steps.

Contract:
- `observe(record)` adds the step's trials and successes per position (rows that reached position
  j, rows that were accepted there) and first discounts everything seen so far by `discount`, so
  the estimate follows an acceptance that drifts. The evidence is also capped at `max_trials`
  trials (all positions scaled alike): at a large batch size the memory is a few steps, at
  batch size 1 it is `discount`'s horizon, and in both the estimate lags a drift equally little.
- `rates()` returns the posterior mean of the conditional acceptance at each position. A position
  is shrunk towards the one before it with `shrinkage` pseudo-trials (position 0 towards the
  pooled rate), so positions never tried inherit the last estimate and i.i.d. acceptance is
  recovered exactly.
- `sample(rng)` draws the rates from their posteriors (Thompson sampling; the Beta posterior by
  its Gaussian approximation, good since every position has >= `shrinkage` effective trials);
  `upper(kappa)` gives optimistic rates mean + kappa * std (UCB). Neither changes the estimator.
"""
from __future__ import annotations

import math

import numpy as np

from autospec.cost_model import validate_acceptance
from autospec.types import StepRecord


class AcceptanceEstimator:
    def __init__(self, max_spec_len: int, prior_acceptance: float = 0.6, prior_trials: float = 2.0,
                 shrinkage: float = 5.0, discount: float = 0.99, max_trials: float = 400.0):
        if max_spec_len < 1:
            raise ValueError(f"max_spec_len must be >= 1, got {max_spec_len}")
        self.prior_acceptance = validate_acceptance(prior_acceptance, "prior_acceptance")
        if prior_trials <= 0 or shrinkage <= 0 or max_trials <= 0:
            raise ValueError("prior_trials, shrinkage and max_trials must be positive")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.max_spec_len = max_spec_len
        self.prior_trials = prior_trials
        self.shrinkage = shrinkage
        self.discount = discount
        self.max_trials = max_trials
        self.trials = [0.0] * max_spec_len     # [max_spec_len] discounted rows that reached j
        self.successes = [0.0] * max_spec_len  # [max_spec_len] discounted rows accepted at j
        self._cache: tuple[list[float], list[float]] | None = None

    def observe(self, record: StepRecord) -> None:
        """Discount, add the record's per-position counts, cap the evidence (plain floats: fast)."""
        d = self.discount
        trials = [t * d for t in self.trials]
        successes = [x * d for x in self.successes]
        n = min(record.spec_len, self.max_spec_len)
        for j, (reached, accepted) in enumerate(zip(record.trials_per_pos()[:n], record.accepted_per_pos[:n])):
            trials[j] += reached
            successes[j] += accepted
        if trials[0] > self.max_trials:
            scale = self.max_trials / trials[0]
            trials = [t * scale for t in trials]
            successes = [x * scale for x in successes]
        self.trials, self.successes = trials, successes
        self._cache = None

    def pooled(self) -> float:
        """The rate over all positions together, with the prior as `prior_trials` pseudo-trials."""
        num = sum(self.successes) + self.prior_acceptance * self.prior_trials
        return num / (sum(self.trials) + self.prior_trials)

    def _posterior(self) -> tuple[list[float], list[float]]:
        """(mean, std), each [max_spec_len], of each position's rate."""
        if self._cache is None:
            means, stds = [], []
            anchor = self.pooled()
            for trials, successes in zip(self.trials, self.successes):
                anchor = (successes + self.shrinkage * anchor) / (trials + self.shrinkage)
                means.append(anchor)
                stds.append(math.sqrt(anchor * (1.0 - anchor) / (trials + self.shrinkage + 1.0)))
            self._cache = (means, stds)
        return self._cache

    def rates(self) -> list[float]:
        return self._posterior()[0]

    def stds(self) -> list[float]:
        return self._posterior()[1]

    def sample(self, rng: np.random.Generator) -> list[float]:
        means, stds = self._posterior()
        draws = rng.standard_normal(self.max_spec_len).tolist()
        return [min(0.999, max(0.001, m + s * z)) for m, s, z in zip(means, stds, draws)]

    def upper(self, kappa: float) -> list[float]:
        means, stds = self._posterior()
        return [min(0.999, m + kappa * s) for m, s in zip(means, stds)]
