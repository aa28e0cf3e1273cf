"""Contextual bandits over spec_len = 0..max_spec_len with the batch size as context.

Contract: `BanditController` keeps the statistics; its subclasses (`ucb`, `thompson`) only turn
them into per-arm values for `choose`. Two kinds of arm statistics:

- `prior="model"` (`ModelArms`): the cost model is the prior. An arm's goodput is factored as
  measured tokens over measured time: `b * E[tokens | acceptance] / (T_model(b, s) * c(b, s))`.
  The acceptance posterior (per draft position) is shared by every context, and pooled over arms
  as the anchor of each arm's own (`ArmAcceptance`: `arm_shrinkage` pseudo-trials of the pooled
  rates), so a step at any spec_len teaches all of them while an arm whose steps start at easier
  or harder positions than others' is seen as it is; `c` is a per-(context, arm) correction of the modelled step
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

Exploration is bounded by what the posterior knows. The greedy arm is the shortest spec_len whose
posterior mean goodput is within a margin of the best mean, `switch_margin * (1 - 1 / batch_size)`:
on a real engine speculating costs more than its steps show (rows that accept different numbers of
drafts finish at different steps, so a batch drains raggedly and admissions split into small
prefills; a single row has nothing to drain), so a longer draft must earn its keep by that margin.
The defaults (no margins, runs of 1) suit the simulated backend, whose steps are the whole cost
and whose acceptance does not depend on the schedule; `AutoSpec` (the HF engine, real text) passes
`ENGINE_CONTROLLER_OPTIONS`. Each step the policy's draw (`model_values` / `flat_values`) is played only among the
*plausible* arms, those whose goodput upper bound (mean + `plausible_z` std) reaches the best arm's
lower bound, so an arm predicted far below the best is never tried where it is expensive, and only
when it beats the greedy arm's mean by the margin, and by at least `draw_margin` (a draw within it
is not worth a switch: switching arms has a cost of its own, since an arm's acceptance depends on
where the steps before it left off). An exploring draw is played for `min_run` consecutive steps
at its batch-size context (its acceptance is then its own, not the previous arm's), each step
charged to the budget like the first, and a run starts only when the budget can pay for all of it.
A draw that
differs from the greedy arm is played only while the time lost to such draws stays within
`explore_fraction` of the time run (both discounted by `budget_discount` per step): a draw's cost
is its step time times its predicted relative shortfall, 1 - mean[drawn] / mean[greedy] (1 for an
arm never measured under a flat prior; at least `shortfall_floor`, for a posterior that flatters
the arms it knows least), so neither a flat nor a wrong prior can lose more than about
`explore_fraction` before the evidence corrects the means.

With `known_steps` > 0 (the HF engine) only a *known* arm can be greedy: spec_len 0, or an arm with
that many own timed steps at the context and own draft trials; an arm the posterior merely predicts
to be good is reached through a charged exploring run, charged at least `shortfall_floor` less the
gain the posterior predicts (a prior that is sure of a large gain explores at once, a near-tie pays
the floor). With `switch_cost` (the HF engine) the extra time of a step that starts drafting after
plain steps (a lazy draft's prefill and catch-up of what it has not seen) is measured per context:
it is not taken as the arm's own step time, an exploring run pays it, and it spaces the probes.
With `lookahead` (the HF engine) the budget also counts the time the running rows still need
(`StepContext.remaining_tokens` at the last step's time per token): a fresh engine may explore
within `explore_fraction` of the call in progress instead of waiting until it has run long enough
to pay, so a prior that predicts a gain is tried in a call's first steps. With `realized_charge`
(the HF engine) an exploring step is charged what it really lost: its time less the time the
greedy arm would have taken for the same tokens (at the greedy arm's mean goodput; a switch's
catch-up included), instead of its predicted shortfall. A step that gained pays back earlier
losses (the balance never drops below 0), since one step's tokens are noisy and only a run's sum
says what it cost: a draw that turns out better than the greedy arm costs nothing, and the budget
bounds the time really lost, not the time spent learning. A run is then admitted on its predicted
shortfall without `shortfall_floor` (a near-tie is cheap to try; if the posterior flattered it,
the real bill says so and the budget stops the next run).

Every statistic is discounted by a factor per step so the bandit tracks drift. Plain decoding
(spec_len 0) teaches nothing about acceptance, so after a run of consecutive steps at 0 the
bandit plays spec_len 1 once: the run is `probe_every` steps, or longer where the cost model says a
spec_len-1 step costs much more than a plain one (large batches), so probing never costs more than
`probe_cost_fraction` of the time (a probe 50% dearer than a plain step comes every 100 steps).
"""
from __future__ import annotations

import math

import numpy as np

from autospec.acceptance import AcceptanceEstimator, ArmAcceptance
from autospec.cost_model import CostModel
from autospec.protocols import ArmScores
from autospec.types import StepContext, StepRecord

from .base import NUM_BUCKETS, BaseController, bucket_of, check_float, check_int
from .model import initial_acceptance, require_cost_model


MIN_CHARGE = 0.01      # the least relative shortfall an exploring run's draw is charged (so it is played as a run)


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

    def values(self, batch_size: int, rates_by_arm: list[list[float]], log_correction: list[float]) -> np.ndarray:
        """[arms] goodput b * E[tokens](arm s's rates) / (T_model * exp(log_correction))."""
        times = self.step_times(batch_size)
        out = []
        for s in range(self.max_spec_len + 1):
            tokens = reach = 1.0
            for rate in rates_by_arm[s][:s]:
                reach *= rate
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
                 probe_cost_fraction: float = 0.005, explore_fraction: float = 0.03, plausible_z: float = 2.0,
                 budget_discount: float = 0.999, switch_margin: float = 0.0, arm_shrinkage: float = 20.0,
                 draw_margin: float = 0.0, min_run: int = 1, shortfall_floor: float = 0.0, known_steps: int = 0,
                 switch_cost: bool = False, lookahead: bool = False, realized_charge: bool = False):
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
        self.explore_fraction = check_float("explore_fraction", explore_fraction, 0.0, 1.0)
        self.plausible_z = check_float("plausible_z", plausible_z, 0.0, 10.0)
        self.budget_discount = check_float("budget_discount", budget_discount, 0.0, 1.0, open_low=True)
        self.switch_margin = check_float("switch_margin", switch_margin, 0.0, 0.5)
        self.draw_margin = check_float("draw_margin", draw_margin, 0.0, 0.5)
        self.min_run = check_int("min_run", min_run, 1)
        self.shortfall_floor = check_float("shortfall_floor", shortfall_floor, 0.0, 1.0)
        self.known_steps = check_int("known_steps", known_steps, 0)
        for name, flag in (("switch_cost", switch_cost), ("lookahead", lookahead), ("realized_charge", realized_charge)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.switch_cost, self.lookahead, self.realized_charge = switch_cost, lookahead, realized_charge
        self.switch_s = np.zeros(NUM_BUCKETS)     # [contexts] measured extra seconds of a switch from 0 to drafting
        self.prior = prior
        self.rng = np.random.default_rng(seed)
        self.acceptance = AcceptanceEstimator(max(1, self.max_spec_len), initial_acceptance(prior_acceptance, cost_model),
                                              discount=acceptance_discount, max_trials=acceptance_max_trials)
        self.arm_acceptance = ArmAcceptance(self.max_spec_len, check_float("arm_shrinkage", arm_shrinkage, 0.0, 1e6,
                                                                          open_low=True),
                                            discount=acceptance_discount, max_trials=acceptance_max_trials)
        if prior == "model":
            cost_model = require_cost_model(cost_model, f"{type(self).__name__} with prior='model'")
            self.arms: ModelArms | FlatArms = ModelArms(cost_model, self.max_spec_len, cost_prior_scale,
                                                        machine_prior_std, time_discount, neighbour_weight)
        else:
            self.arms = FlatArms(self.max_spec_len, time_discount, neighbour_weight)
        self.num_steps = 0
        self._steps_at_zero = 0
        self.run_time_s = 0.0               # discounted seconds of every step
        self.explore_cost_s = 0.0           # discounted seconds lost (as predicted) to exploring draws
        self._shortfall = 0.0               # the predicted relative shortfall of the arm just chosen
        self._run: tuple[int, int, int] | None = None      # (arm, steps left, context) of an exploring run
        self._last_arm = 0
        self._last_step_s = 0.0
        self._last_tokens_per_row = 1.0     # tokens each row emitted in the last step
        self._greedy_tps = 0.0              # the greedy arm's mean goodput when the current draw was chosen

    def choose(self, ctx: StepContext) -> int:
        if self.max_spec_len == 0:
            return 0
        run = self._run
        if run is not None and run[1] > 0 and run[2] == bucket_of(ctx.batch_size):
            self._run = (run[0], run[1] - 1, run[2])            # an exploring run goes on
            return self.clamp(run[0], ctx)
        best = self._select(ctx)
        if best != self._last_arm and self._shortfall > 0 and self.min_run > 1:
            self._run = (best, self.min_run - 1, bucket_of(ctx.batch_size))
        else:
            self._run = None
        return best

    def _select(self, ctx: StepContext) -> int:
        mean, std, measured = self.posterior(ctx.batch_size)
        top = int(np.argmax(mean))
        margin = self.switch_margin * (1.0 - 1.0 / max(1, ctx.batch_size))      # nothing to drain at batch 1
        greedy = self._greedy(mean, self.known(ctx.batch_size, measured), margin)
        plausible = mean + self.plausible_z * std >= mean[top] - self.plausible_z * std[top]
        values = self.model_values(ctx.batch_size) if self.prior == "model" else self.flat_values(ctx.batch_size)
        best = int(np.argmax(np.where(plausible, values, -np.inf)))
        if measured[best] and measured[greedy] and values[best] <= (1.0 + max(margin, self.draw_margin)) * mean[greedy]:
            best = greedy                                   # a draw within the margin is not worth a switch
        shortfall = 0.0 if best == greedy else self._charge(mean, measured, best, greedy, margin)
        budget_s = self.explore_fraction * (self.run_time_s + self._lookahead_s(ctx))
        if shortfall > 0 and self.explore_cost_s + self._run_cost_s(ctx.batch_size, best, shortfall) > budget_s:
            best, shortfall = greedy, 0.0                   # the budget cannot pay for this run
        self._greedy_tps = float(mean[greedy])
        if best == 0 and self._steps_at_zero + 1 >= self.probe_interval(ctx.batch_size):
            best = 1                                        # the probe has its own budget (probe_interval)
        self._shortfall = shortfall
        return self.clamp(best, ctx)

    def _charge(self, mean: np.ndarray, measured: np.ndarray, best: int, greedy: int, margin: float) -> float:
        """The relative shortfall an exploring draw of `best` is charged per step: its predicted one,
        at least the margin, and at least `shortfall_floor` less the gain the posterior predicts for
        it (an arm the prior says is far better is tried at once; a near-tie pays the floor). With
        `realized_charge` the floor is left out: the bill is what the run really lost, so the
        prediction only has to say whether the budget can pay for it."""
        if not measured[best] or mean[greedy] <= 0:
            return 1.0                                                   # nothing is known of it
        relative = float(mean[best] / mean[greedy]) - 1.0               # the predicted gain (> 0) or shortfall (< 0)
        least = MIN_CHARGE if self.min_run > 1 else 0.0                 # a run is started by a charged draw
        floor = 0.0 if self.realized_charge else self.shortfall_floor - max(0.0, relative)   # the bill is real
        return max(least, floor, margin, min(1.0, -relative))

    @staticmethod
    def _greedy(mean: np.ndarray, known: np.ndarray, margin: float) -> int:
        """The shortest known arm whose mean is within `margin` of the best known mean (every arm
        when none is known yet)."""
        known = known if known.any() else np.ones_like(known)
        best = float(mean[known].max())
        return int(np.flatnonzero(known & (mean >= (1.0 - margin) * best))[0])

    def known(self, batch_size: int, measured: np.ndarray) -> np.ndarray:
        """[arms] the arms whose goodput at this batch size rests on their own evidence: spec_len 0,
        and every arm with at least `known_steps` own timed steps at this context (discounted, its
        neighbours' pooled) and as many own draft trials at position 0. Only a known arm is played
        without paying the exploration budget; with `known_steps` 0, every measured arm is known."""
        if self.known_steps == 0 or not isinstance(self.arms, ModelArms):
            return measured
        steps, _ = self.arms.log_time.pooled(bucket_of(batch_size))
        trials = [row[0] if row else math.inf for row in self.arm_acceptance.trials]
        return np.array([s == 0 or (steps[s] >= self.known_steps and trials[s] >= self.known_steps)
                         for s in range(len(measured))])

    def _lookahead_s(self, ctx: StepContext) -> float:
        """With `lookahead`, the seconds the running rows still need: their most remaining tokens at
        the last step's seconds per token of a row (0 without it or before any step)."""
        if not self.lookahead or self._last_step_s <= 0:
            return 0.0
        return ctx.remaining_tokens * self._last_step_s / self._last_tokens_per_row

    def _exploring_cost_s(self, record: StepRecord, surcharge_s: float) -> float:
        """What a step charges the exploration budget: nothing for a greedy step; for an exploring
        one its predicted shortfall of its time plus the switch it paid, or with `realized_charge`
        the time it took beyond the greedy arm's for the same tokens (< 0 where it gained)."""
        if self._shortfall <= 0:
            return 0.0
        if self.realized_charge and self._greedy_tps > 0:
            return record.step_time_s - record.num_emitted_tokens / self._greedy_tps
        return self._shortfall * record.step_time_s + surcharge_s

    def _run_cost_s(self, batch_size: int, arm: int, shortfall: float) -> float:
        """What an exploring run of `min_run` steps of `arm` is predicted to cost the budget (inf
        before any step was measured: nothing to pay with yet)."""
        if self._last_step_s <= 0:
            return math.inf
        switch_s = self.switch_s[bucket_of(batch_size)] if self._last_arm == 0 else 0.0
        return self.min_run * shortfall * self._expected_step_s(batch_size, arm) + switch_s

    def _expected_step_s(self, batch_size: int, arm: int) -> float:
        """The last step's time scaled to `arm` by the cost model's ratio (as is, without one)."""
        if not isinstance(self.arms, ModelArms):
            return self._last_step_s
        times = self.arms.step_times(batch_size)
        return self._last_step_s * times[arm] / times[min(self._last_arm, self.max_spec_len)]

    def _switch_surcharge_s(self, record: StepRecord) -> float:
        """With `switch_cost`, the seconds a step that starts drafting after plain steps took beyond
        what the model predicts from the plain step before it (a lazy draft's prefill and catch-up
        of the tokens it has not seen), learnt per context; 0 for every other step."""
        if not self.switch_cost or record.spec_len == 0 or self._last_arm != 0 or self._last_step_s <= 0:
            return 0.0
        surcharge = max(0.0, record.step_time_s - self._expected_step_s(record.batch_size, record.spec_len))
        bucket = bucket_of(record.batch_size)
        self.switch_s[bucket] = surcharge if self.switch_s[bucket] == 0 else 0.5 * (self.switch_s[bucket] + surcharge)
        return surcharge

    def observe(self, record: StepRecord) -> None:
        surcharge_s = self._switch_surcharge_s(record)
        self._last_step_s = record.step_time_s
        self.num_steps += 1
        self._steps_at_zero = self._steps_at_zero + 1 if record.spec_len == 0 else 0
        self._last_arm = record.spec_len
        d = self.budget_discount
        self.run_time_s = d * self.run_time_s + record.step_time_s
        self.explore_cost_s = max(0.0, d * self.explore_cost_s + self._exploring_cost_s(record, surcharge_s))
        self._last_tokens_per_row = max(1.0, record.num_emitted_tokens / max(1, record.batch_size))
        if self._run is None:
            self._shortfall = 0.0                               # a run keeps charging its first step's
        self.acceptance.observe(record)
        self.arm_acceptance.observe(record)
        if surcharge_s == 0.0:                                  # a switch's time is not the arm's own
            self.arms.observe(record)

    def probe_interval(self, batch_size: int) -> int:
        """Steps at spec_len 0 between two probes: `probe_every`, longer where a probe is dear."""
        switch_s = self.switch_s[bucket_of(batch_size)]
        extra = 0.0                                                  # a probe's extra cost, relative
        if isinstance(self.arms, ModelArms):
            times = self.arms.step_times(batch_size)
            extra = max(0.0, times[1] / times[0] - 1.0)
        if switch_s > 0 and self._last_step_s > 0:
            extra += switch_s / self._last_step_s                    # and the draft's catch-up, as measured
        return max(self.probe_every, math.ceil(extra / self.probe_cost_fraction))

    def _rates(self) -> list[float]:
        return self.acceptance.rates()[: self.max_spec_len]

    def arm_rates(self, pooled: list[float]) -> list[list[float]]:
        """[arm][position] acceptance: each arm's own evidence about `pooled` (the mean, a draw, a bound)."""
        return self.arm_acceptance.rates(pooled[: self.max_spec_len])

    def scores(self, ctx: StepContext) -> ArmScores:
        """Posterior mean and std of each arm's goodput (tokens/s) at this batch size."""
        mean, std, _ = self.posterior(ctx.batch_size)
        return ArmScores({s: (float(m), float(sd)) for s, (m, sd) in enumerate(zip(mean, std))})

    def posterior(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, std, measured) [arms]: each arm's goodput (tokens/s) at this batch size, and
        whether it rests on measurements (always, under the model prior)."""
        b = batch_size
        if isinstance(self.arms, FlatArms):
            n, mean, std = self.arms.estimate(bucket_of(b))
            measured = n > 1e-3
            return b * mean, np.where(measured, b * std, np.inf), measured
        mean_c, std_c = self.arms.correction(b)
        pooled = self._rates()
        rates = self.arm_rates(pooled)
        mean = self.arms.values(b, rates, mean_c)
        low_rates = self.arm_acceptance.lower(pooled, self.acceptance.stds()[: self.max_spec_len], rates)
        tokens_rel = 1.0 - self.arms.values(b, low_rates, mean_c) / mean
        rel_std = np.sqrt(tokens_rel**2 + np.square(std_c))
        return mean, mean * rel_std, np.ones(len(mean), dtype=bool)

    def model_values(self, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def flat_values(self, batch_size: int) -> np.ndarray:
        raise NotImplementedError

