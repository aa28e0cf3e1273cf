"""Contextual bandits over spec_len = 0..max_spec_len with the batch size as context.

Contract: `BanditController` keeps the statistics; its subclasses (`ucb`, `thompson`) only turn
them into per-arm values for `choose`. Two kinds of arm statistics:

- `prior="model"` (`ModelArms`): the cost model is the prior. An arm's goodput is factored as
  measured tokens over measured time: `b * E[tokens | acceptance] / (T_model(b, s) * c(b, s))`.
  The acceptance posterior (per draft position) is shared by every arm and context, so a step at
  any spec_len teaches all of them; `c` is a per-(context, arm) correction of the modelled step
  time in two levels: log c = m + e, where the context-level m ~ N(0, `machine_prior_std`^2)
  (the whole machine faster or slower than its profile) and the arm-level e ~ N(0, sd^2) with sd
  the cost model's own accuracy for that cell (`CostModel.log_time_stds`: small where measured,
  large where extrapolated) times `cost_prior_scale`, i.e. `noise^2 / sd^2` pseudo-observations. m is estimated from every measured arm of the context, each
  weighted by its own uncertainty, so arms never measured start from it (a machine 2x slower
  than its profile is learned from one arm and applied to all), while one badly predicted arm
  moves m only partly. A context borrows `neighbour_weight` of the observations of the adjacent
  batch-size contexts.
- `prior="none"` (`FlatArms`): no cost model; the mean measured goodput per row of each
  (context, arm), every arm tried once per context before the policy's rule applies.

Every statistic is discounted by a factor per step so the bandit tracks drift. Plain decoding
(spec_len 0) teaches nothing about acceptance, so after a run of consecutive steps at 0 the
bandit plays spec_len 1 once: the run is `probe_every` steps, or longer where the cost model says a
spec_len-1 step costs much more than a plain one (large batches), so probing never costs more than
`probe_cost_fraction` of the time (a probe 50% dearer than a plain step comes every 100 steps).
"""
from __future__ import annotations

import math

import numpy as np

from autospec.acceptance import AcceptanceEstimator
from autospec.cost_model import CostModel
from autospec.protocols import ArmScores
from autospec.types import StepContext, StepRecord

from .base import NUM_BUCKETS, BaseController, bucket_of, check_float, check_int
from .model import initial_acceptance, require_cost_model


class DiscountedStats:
    """Discounted count and sum per (context, arm); a context's neighbours are pooled on read.

    Discounting is lazy: values are stored multiplied by discount^-t, so a step costs O(1) instead
    of decaying every array; the store is renormalised before the factor grows too large.
    """

    def __init__(self, num_arms: int, discount: float, neighbour_weight: float):
        self.num_arms = num_arms
        self.store = np.zeros((NUM_BUCKETS, 2 * num_arms))  # [contexts, (count | sum) per arm]
        self.discount = discount
        self._inflate = 1.0  # discount^-t
        self._weights = _neighbour_weights(neighbour_weight)

    def add(self, bucket: int, arm: int, value: float) -> None:
        self._inflate /= self.discount
        if self._inflate > 1e100:
            self.store /= self._inflate
            self._inflate = 1.0
        self.store[bucket, arm] += self._inflate
        self.store[bucket, self.num_arms + arm] += self._inflate * value

    def pooled(self, bucket: int) -> tuple[np.ndarray, np.ndarray]:
        """(effective count [arms], effective sum [arms]) of a context with its neighbours'."""
        pooled = (self._weights[bucket] @ self.store) / self._inflate
        return pooled[: self.num_arms], pooled[self.num_arms:]


def _neighbour_weights(weight: float) -> np.ndarray:
    """[contexts, contexts]: row k is 1 at k and `weight` at k - 1 and k + 1."""
    w = np.eye(NUM_BUCKETS)
    idx = np.arange(NUM_BUCKETS - 1)
    w[idx, idx + 1] = weight
    w[idx + 1, idx] = weight
    return w


class ModelArms:
    """Cost-model prior: modelled step times corrected per (context, arm) by measured times."""

    def __init__(self, cost_model: CostModel, max_spec_len: int, cost_prior_scale: float,
                 machine_prior_std: float, discount: float, neighbour_weight: float, noise_std: float = 0.05):
        self.cost_model = cost_model
        self.max_spec_len = max_spec_len
        self.prior_scale = cost_prior_scale
        self.machine_var = machine_prior_std**2
        self.log_time = DiscountedStats(max_spec_len + 1, discount, neighbour_weight)
        self.noise_var = noise_std**2
        self._noise_n = 10.0  # pseudo-observations behind the noise estimate
        self._last: tuple[int, np.ndarray] | None = None  # (context, correction mean) from the last read

    def step_times(self, batch_size: int) -> np.ndarray:
        return self.cost_model.step_times_s(batch_size, self.max_spec_len)

    def observe(self, record: StepRecord) -> None:
        if record.step_time_s <= 0:
            return
        y = math.log(record.step_time_s / self.step_times(record.batch_size)[record.spec_len])
        bucket = bucket_of(record.batch_size)
        last = self._last
        mean = last[1] if last and last[0] == record.batch_size else self.correction(record.batch_size)[0]
        residual = (y - mean[record.spec_len]) ** 2
        self.noise_var = (self._noise_n * self.noise_var + residual) / (self._noise_n + 1.0)
        self._noise_n = min(self._noise_n + 1.0, 200.0)
        self.log_time.add(bucket, record.spec_len, y)
        self._last = None

    def correction(self, batch_size: int) -> tuple[list[float], list[float]]:
        """Posterior (mean, std) [arms] of log(measured / modelled step time) at a batch size."""
        mean, own_std, shared_std = self.correction_parts(batch_size)
        return mean, [math.sqrt(o * o + c * c) for o, c in zip(own_std, shared_std)]

    def correction_parts(self, batch_size: int) -> tuple[list[float], list[float], list[float]]:
        """(mean, own std, shared std) [arms] of log(measured / modelled step time) at a batch size.

        An arm's correction is mean + own_std * z_arm + shared_std * z_m: z_arm its own, z_m the
        context level m's, common to every arm (a joint draw moves unmeasured arms together).
        Plain floats over the arms: a step's choose + observe must stay within tens of microseconds.
        """
        n, total = (a.tolist() for a in self.log_time.pooled(bucket_of(batch_size)))
        noise_var = max(self.noise_var, 1e-6)
        prior_var = [(self.prior_scale * sd) ** 2 for sd in self.cost_model.log_time_stds(batch_size, self.max_spec_len)]
        w_sum = wm_sum = 0.0
        for nk, tk, pv in zip(n, total, prior_var):      # the context level m, from measured arms
            if nk > 1e-6:
                w = 1.0 / (pv + noise_var / nk)
                w_sum, wm_sum = w_sum + w, wm_sum + w * tk / nk
        m_var = 1.0 / (1.0 / self.machine_var + w_sum)
        m = wm_sum * m_var
        mean, own_std, shared_std = [], [], []
        for nk, tk, pv in zip(n, total, prior_var):      # each arm about m
            precision = 1.0 / pv + nk / noise_var
            mean.append((m / pv + tk / noise_var) / precision)
            own_std.append(math.sqrt(1.0 / precision))
            shared_std.append(math.sqrt(m_var) / (1.0 + nk * pv / noise_var))
        self._last = (batch_size, mean)
        return mean, own_std, shared_std

    def values(self, batch_size: int, rates: list[float], log_correction: list[float]) -> np.ndarray:
        """[arms] goodput b * E[tokens](rates) / (T_model * exp(log_correction))."""
        times = self.step_times(batch_size)
        out = [batch_size / (times[0] * math.exp(log_correction[0]))]
        tokens = reach = 1.0
        for s in range(1, self.max_spec_len + 1):
            reach *= rates[s - 1]
            tokens += reach
            out.append(batch_size * tokens / (times[s] * math.exp(log_correction[s])))
        return np.array(out)


class FlatArms:
    """No prior: measured goodput per row of each (context, arm)."""

    def __init__(self, max_spec_len: int, discount: float, neighbour_weight: float):
        self.stats = DiscountedStats(max_spec_len + 1, discount, neighbour_weight)
        self.rel_noise_var = 0.25  # (std / mean)^2 of one step's goodput, before any data

    def observe(self, record: StepRecord) -> None:
        per_row = record.goodput_tps / max(1, record.batch_size)
        self.stats.add(bucket_of(record.batch_size), record.spec_len, per_row)

    def estimate(self, bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, mean per-row goodput, std of that mean) [arms]; untried arms have count 0."""
        n, total = self.stats.pooled(bucket)
        mean = np.where(n > 0, total / np.maximum(n, 1e-12), 0.0)
        scale = float(mean.max()) if n.max() > 0 else 1.0
        std = np.sqrt(self.rel_noise_var) * scale / np.sqrt(np.maximum(n, 1e-12))
        return n, mean, std


class BanditController(BaseController):
    """Statistics and bookkeeping shared by the UCB and Thompson-sampling policies."""

    def __init__(self, *, max_spec_len: int = 8, cost_model: CostModel | None = None, prior: str = "model",
                 seed: int = 0, prior_acceptance: float | None = None, acceptance_discount: float = 0.99,
                 acceptance_max_trials: float = 400.0, time_discount: float = 0.998, cost_prior_scale: float = 1.0,
                 machine_prior_std: float = 0.5, neighbour_weight: float = 0.25, probe_every: int = 25,
                 probe_cost_fraction: float = 0.005):
        super().__init__(max_spec_len)
        if prior not in ("model", "none"):
            raise ValueError(f"prior must be 'model' or 'none', got {prior!r}")
        check_float("acceptance_discount", acceptance_discount, 0.0, 1.0, open_low=True)
        check_float("time_discount", time_discount, 0.0, 1.0, open_low=True)
        check_float("cost_prior_scale", cost_prior_scale, 0.0, 100.0, open_low=True)
        check_float("machine_prior_std", machine_prior_std, 0.0, 10.0, open_low=True)
        check_float("neighbour_weight", neighbour_weight, 0.0, 1.0)
        self.probe_every = check_int("probe_every", probe_every, 1)
        self.probe_cost_fraction = check_float("probe_cost_fraction", probe_cost_fraction, 0.0, 1.0, open_low=True)
        self.prior = prior
        self.rng = np.random.default_rng(seed)
        self.acceptance = AcceptanceEstimator(max(1, self.max_spec_len), initial_acceptance(prior_acceptance, cost_model),
                                              discount=acceptance_discount, max_trials=acceptance_max_trials)
        if prior == "model":
            cost_model = require_cost_model(cost_model, f"{type(self).__name__} with prior='model'")
            self.arms: ModelArms | FlatArms = ModelArms(cost_model, self.max_spec_len, cost_prior_scale,
                                                        machine_prior_std, time_discount, neighbour_weight)
        else:
            self.arms = FlatArms(self.max_spec_len, time_discount, neighbour_weight)
        self.num_steps = 0
        self._steps_at_zero = 0

    def choose(self, ctx: StepContext) -> int:
        if self.max_spec_len == 0:
            return 0
        values = self.model_values(ctx.batch_size) if self.prior == "model" else self.flat_values(ctx.batch_size)
        best = int(np.argmax(values))
        if best == 0 and self._steps_at_zero + 1 >= self.probe_interval(ctx.batch_size):
            best = 1
        return self.clamp(best, ctx)

    def observe(self, record: StepRecord) -> None:
        self.num_steps += 1
        self._steps_at_zero = self._steps_at_zero + 1 if record.spec_len == 0 else 0
        self.acceptance.observe(record)
        self.arms.observe(record)

    def probe_interval(self, batch_size: int) -> int:
        """Steps at spec_len 0 between two probes: `probe_every`, longer where a probe is dear."""
        if not isinstance(self.arms, ModelArms):
            return self.probe_every
        times = self.arms.step_times(batch_size)
        extra = max(0.0, times[1] / times[0] - 1.0)                  # a probe's extra cost, relative
        return max(self.probe_every, math.ceil(extra / self.probe_cost_fraction))

    def _rates(self) -> list[float]:
        return self.acceptance.rates()[: self.max_spec_len]

    def scores(self, ctx: StepContext) -> ArmScores:
        """Posterior mean and std of each arm's goodput (tokens/s) at this batch size."""
        b = ctx.batch_size
        if isinstance(self.arms, FlatArms):
            n, mean, std = self.arms.estimate(bucket_of(b))
            return ArmScores({s: (float(b * mean[s]), float(b * std[s]) if n[s] > 0 else math.inf)
                              for s in range(len(mean))})
        mean_c, std_c = self.arms.correction(b)
        mean = self.arms.values(b, self._rates(), mean_c)
        low_rates = [max(0.0, r - sd) for r, sd in zip(self._rates(), self.acceptance.stds())]
        tokens_rel = 1.0 - self.arms.values(b, low_rates, mean_c) / mean
        rel_std = np.sqrt(tokens_rel**2 + np.square(std_c))
        return ArmScores({s: (float(mean[s]), float(mean[s] * rel_std[s])) for s in range(len(mean))})

    def model_values(self, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def flat_values(self, batch_size: int) -> np.ndarray:
        raise NotImplementedError
