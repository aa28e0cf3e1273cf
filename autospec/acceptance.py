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
- `ArmAcceptance` keeps the same counts per spec_len: where a step starts depends on the spec_len
  of the steps before it (a step that accepts every draft starts the next one inside an easy run,
  a rejection starts it right after a hard token), so one spec_len's acceptance is not another's
  (SmolLM2 + its distilled draft at batch 1: first-position acceptance 0.46 at spec_len 2, 0.67 at
  3 on the same prompts). `rates(pooled)` reads each arm's own evidence plus `shrinkage`
  pseudo-trials of the pooled rates (an arm never played reads as the pooled estimate).
- `acceptance_from_records(records, max_spec_len)`: the offline view of a finished run (per-position
  rates with the Jeffreys prior, counts, the pooled per-token rate, draft coverage), used by the
  profiler, `autospec plan --from-run` and `autospec distill`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

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
        self.trials, self.successes = add_counts(self.trials, self.successes, record, self.discount, self.max_trials)
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


def add_counts(trials: list[float], successes: list[float], record: StepRecord, discount: float,
               max_trials: float) -> tuple[list[float], list[float]]:
    """Per-position counts [positions] discounted, plus the record's trials and accepted rows at the
    positions they cover, scaled down together so position 0 holds at most `max_trials` trials."""
    trials, successes = [t * discount for t in trials], [x * discount for x in successes]
    n = min(record.spec_len, len(trials))
    for j, (reached, accepted) in enumerate(zip(record.trials_per_pos()[:n], record.accepted_per_pos[:n])):
        trials[j] += reached
        successes[j] += accepted
    if trials and trials[0] > max_trials:
        scale = max_trials / trials[0]
        trials, successes = [t * scale for t in trials], [x * scale for x in successes]
    return trials, successes


class ArmAcceptance:
    """Per-arm (spec_len) conditional acceptance per position, shrunk towards pooled rates."""

    def __init__(self, max_spec_len: int, shrinkage: float = 20.0, discount: float = 0.99, max_trials: float = 400.0,
                 arm_std: float = 0.05):
        if shrinkage <= 0 or max_trials <= 0 or arm_std < 0 or not 0.0 < discount <= 1.0:
            raise ValueError("shrinkage and max_trials must be positive, arm_std >= 0 and discount in (0, 1]")
        self.max_spec_len, self.shrinkage, self.discount, self.max_trials = max_spec_len, shrinkage, discount, max_trials
        self.arm_std = arm_std                          # prior std of an arm's rates about the pooled ones
        self.trials = [[0.0] * s for s in range(max_spec_len + 1)]      # [arm][position < arm]
        self.successes = [[0.0] * s for s in range(max_spec_len + 1)]

    def observe(self, record: StepRecord) -> None:
        """Discount every arm's counts (an arm not played lately reverts to the pooled rates, which
        follow a drift), add the step's to its arm, cap that arm's evidence at `max_trials` trials."""
        d = self.discount
        self.trials = [[t * d for t in row] for row in self.trials]
        self.successes = [[x * d for x in row] for row in self.successes]
        s = min(record.spec_len, self.max_spec_len)
        if s:
            self.trials[s], self.successes[s] = add_counts(self.trials[s], self.successes[s], record, 1.0,
                                                           self.max_trials)

    def rates(self, pooled: list[float]) -> list[list[float]]:
        """[arm][position] rates: the arm's own counts plus `shrinkage` pseudo-trials at `pooled`."""
        k = self.shrinkage
        return [[(x + k * r) / (t + k) for t, x, r in zip(self.trials[s], self.successes[s], pooled)]
                for s in range(self.max_spec_len + 1)]

    def sample(self, pooled: list[float], rng: np.random.Generator) -> list[list[float]]:
        """[arm][position] rates with each arm's own deviation from the pooled rates drawn: one
        N(0, arm_std^2 * k / (t + k)) shift per arm (t its trials at position 0), so an arm seldom
        played stays uncertain even where the pooled estimate is sure (Thompson sampling)."""
        return self._shifted(pooled, rng.standard_normal(self.max_spec_len + 1).tolist())

    def upper(self, pooled: list[float], kappa: float) -> list[list[float]]:
        """[arm][position] rates shifted up by kappa arm-deviation stds (UCB)."""
        return self._shifted(pooled, [kappa] * (self.max_spec_len + 1))

    def _shifted(self, pooled: list[float], z: list[float]) -> list[list[float]]:
        k, out = self.shrinkage, []
        for s, rates in enumerate(self.rates(pooled)):
            shift = self.arm_std * z[s] * math.sqrt(k / (self.trials[s][0] + k)) if s else 0.0
            out.append([min(0.999, max(0.001, r + shift)) for r in rates])
        return out

    def lower(self, pooled: list[float], pooled_stds: list[float],
              rates: list[list[float]] | None = None) -> list[list[float]]:
        """[arm][position] rates one standard deviation low (the arm's evidence and the pooled one's);
        `rates`: `self.rates(pooled)` when the caller has it already."""
        k = self.shrinkage
        out = []
        for s, rates in enumerate(rates if rates is not None else self.rates(pooled)):
            arm_var = self.arm_std**2 * k / (self.trials[s][0] + k) if s else 0.0
            out.append([max(0.0, r - math.sqrt(r * (1.0 - r) / (t + k + 1.0) + (k * sd / (t + k)) ** 2 + arm_var))
                        for r, t, sd in zip(rates, self.trials[s], pooled_stds)])
        return out


class PositionCounts:
    """Rows that reached and rows accepted at each draft position, summed over step records: the one
    count every offline view of acceptance derives from (`acceptance_from_records`, the summary,
    the dashboard). It grows with the longest spec_len seen; `add` is O(spec_len)."""

    def __init__(self) -> None:
        self.trials: list[int] = []
        self.accepted: list[int] = []

    def add(self, record: StepRecord) -> None:
        grow = record.spec_len - len(self.trials)
        if grow > 0:
            self.trials += [0] * grow
            self.accepted += [0] * grow
        for j, (t, a) in enumerate(zip(record.trials_per_pos(), record.accepted_per_pos)):
            self.trials[j] += t
            self.accepted[j] += a

    write = add                                       # a PositionCounts is a sink

    def rates(self) -> list[float | None]:
        """Accepted over reached per position (None where no row reached it)."""
        return [a / t if t else None for a, t in zip(self.accepted, self.trials)]

    def padded(self, length: int) -> tuple[list[int], list[int]]:
        """(trials, accepted) cut or zero-padded to `length` positions."""
        pad = [0] * max(0, length - len(self.trials))
        return (self.trials + pad)[:length], (self.accepted + pad)[:length]


def acceptance_from_records(records: Sequence[StepRecord], max_spec_len: int) -> dict[str, Any]:
    """Per-position conditional acceptance from step records: rows accepted at j over rows that reached j,
    with the Jeffreys prior (+0.5, +1) so a position seen a few times never reads as certain; and
    `per_token`, all positions pooled (accepted drafts over drafts that were reached: the i.i.d.
    acceptance rate's maximum-likelihood estimate)."""
    counts = PositionCounts()
    for r in records:
        counts.add(r)
    trials, accepted = counts.padded(max_spec_len)
    rates = [(a + 0.5) / (t + 1.0) if t else None for a, t in zip(accepted, trials)]  # Jeffreys: never 0 or 1
    last = next((r for r in rates if r is not None), 0.0)
    filled = []
    for r in rates:
        last = r if r is not None else last
        filled.append(round(last, 4))
    return {"per_pos": filled, "trials_per_pos": trials, "accepted_per_pos": accepted, "steps": len(records),
            "per_token": round(sum(accepted) / sum(trials), 4) if sum(trials) else None,
            "coverage_per_pos": draft_coverage(records, max_spec_len)}


def draft_coverage(records: Sequence[StepRecord], max_spec_len: int) -> list[float]:
    """[max_spec_len] fraction of rows whose drafter proposed at least j + 1 tokens."""
    drafted, rows = [0] * max_spec_len, [0] * max_spec_len
    for r in records:
        for j, n in enumerate(r.rows_drafted_per_pos[:max_spec_len]):
            drafted[j] += n
            rows[j] += r.batch_size
    return [round(d / n, 4) if n else 1.0 for d, n in zip(drafted, rows)]
