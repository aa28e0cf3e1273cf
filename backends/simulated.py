"""A simulated backend: batched speculative decoding whose steps cost what a measured profile says.

Contract:
- Step time = spec_len * T_draft(b) + T_target(b, spec_len + 1) from the `CostModel`, each term
  times an independent log-normal noise factor exp(N(0, noise_std)).
- Each row has its own acceptance rate: `AcceptanceSpec` draws it per request (a fixed `mean`, or
  Beta(alpha, beta)) and adds a drift `amplitude * sin(2 pi step / period_steps)` shared by all
  rows (clipped to [0.01, 0.99]). Per step a row accepts its leading drafts while uniform draws
  fall below its rate (i.i.d. per position).
- A row never drafts past its request's remaining budget, so every accepted token is emitted and
  every row emits the target's bonus token.
- `Workload` is one of: a static batch (`batch_size`: full slots, finished requests replaced at
  once), a trace (`schedule` of (steps, batch_size) phases), or continuous batching (`arrival_rate`
  requests/s, Poisson or Gamma inter-arrival times, FIFO admission under `max_batch_size`).
- Separate seeded random streams for requests, acceptance and timing, so two controllers run on
  the same seed see the same requests and (as far as their choices allow) the same draws.
- `true_goodput_vector(max_spec_len)` is the exact expected goodput of each spec_len for the step
  about to run: what the oracle maximises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autospec.cost_model import CostModel, validate_acceptance
from autospec.types import StepContext, StepRecord, validate_spec_len

MIN_RATE, MAX_RATE = 0.01, 0.99


@dataclass(frozen=True)
class AcceptanceSpec:
    """Per-request acceptance: `mean` (i.i.d.) or Beta(`beta`), plus a sinusoidal drift."""

    mean: float = 0.7
    beta: tuple[float, float] | None = None
    drift_amplitude: float = 0.0
    drift_period_steps: int = 2000

    def __post_init__(self) -> None:
        validate_acceptance(self.mean, "acceptance")
        if self.beta is not None and (len(self.beta) != 2 or min(self.beta) <= 0):
            raise ValueError(f"acceptance_beta must be two positive numbers (alpha, beta), got {self.beta}")
        if not 0.0 <= self.drift_amplitude < 1.0:
            raise ValueError(f"drift amplitude must be in [0, 1), got {self.drift_amplitude}")
        if self.drift_period_steps < 1:
            raise ValueError(f"drift period must be >= 1 step, got {self.drift_period_steps}")

    @property
    def base_mean(self) -> float:
        return self.beta[0] / (self.beta[0] + self.beta[1]) if self.beta else self.mean

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Base rates [n] for n new requests."""
        if self.beta is None:
            return np.full(n, self.mean)
        return rng.beta(self.beta[0], self.beta[1], size=n)

    def offset(self, step: int) -> float:
        if not self.drift_amplitude:
            return 0.0
        return self.drift_amplitude * math.sin(2.0 * math.pi * step / self.drift_period_steps)


@dataclass(frozen=True)
class Workload:
    """What arrives: a static batch, a batch-size schedule, or requests at a rate."""

    batch_size: int | None = None
    schedule: tuple[tuple[int, int], ...] | None = None
    arrival_rate: float | None = None
    arrival: str = "poisson"
    gamma_cv: float = 2.0
    num_requests: int = 1000
    output_len: tuple[int, int] = (64, 512)
    max_batch_size: int = 256
    steps: int = 2000
    context_len: int = 512

    def __post_init__(self) -> None:
        modes = [m for m in ("batch_size", "schedule", "arrival_rate") if getattr(self, m) is not None]
        if len(modes) != 1:
            raise ValueError(f"give exactly one of batch_size, schedule, arrival_rate (got {modes or 'none'})")
        _check_positive("batch_size", self.batch_size)
        _check_positive("arrival_rate", self.arrival_rate)
        for steps, b in self.schedule or ():
            _check_positive("schedule steps", steps)
            _check_positive("schedule batch_size", b)
        if self.arrival not in ("poisson", "gamma"):
            raise ValueError(f"arrival must be 'poisson' or 'gamma', got {self.arrival!r}")
        for name in ("gamma_cv", "num_requests", "max_batch_size", "steps", "context_len"):
            _check_positive(name, getattr(self, name))
        lo, hi = self.output_len
        if not 1 <= lo <= hi:
            raise ValueError(f"output_len must be (min, max) with 1 <= min <= max, got {self.output_len}")

    @property
    def mode(self) -> str:
        return "static" if self.batch_size else "schedule" if self.schedule else "continuous"

    def target_batch_size(self, step: int) -> int | None:
        """Slots to keep full at this step (None in continuous mode)."""
        if self.batch_size:
            return self.batch_size
        if self.schedule:
            return _phase_batch_size(self.schedule, step)
        return None


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _phase_batch_size(schedule: tuple[tuple[int, int], ...], step: int) -> int:
    total = sum(steps for steps, _ in schedule)
    step %= total
    for steps, batch_size in schedule:
        if step < steps:
            return batch_size
        step -= steps
    return schedule[-1][1]


@dataclass
class Request:
    request_id: int
    arrival_s: float
    output_len: int
    base_acceptance: float
    admit_s: float = math.nan
    first_token_s: float = math.nan
    finish_s: float = math.nan
    num_generated: int = 0


@dataclass
class _Rows:
    """The running batch, one entry per row."""

    requests: list[Request] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requests)


class SimulatedBackend:
    def __init__(self, cost_model: CostModel, workload: Workload, acceptance: AcceptanceSpec | None = None,
                 *, max_spec_len: int = 8, noise_std: float = 0.03, seed: int = 0):
        if not isinstance(max_spec_len, int) or max_spec_len < 0:
            raise ValueError(f"max_spec_len must be a non-negative integer, got {max_spec_len!r}")
        if not 0.0 <= noise_std < 1.0:
            raise ValueError(f"noise_std must be in [0, 1), got {noise_std}")
        self.cost_model, self.workload = cost_model, workload
        self.acceptance = acceptance or AcceptanceSpec()
        self.max_spec_len, self.noise_std = max_spec_len, noise_std
        self._rng_requests = np.random.default_rng([seed, 1])
        self._rng_accept = np.random.default_rng([seed, 2])
        self._rng_time = np.random.default_rng([seed, 3])
        self.step_index, self.clock_s = 0, 0.0
        self.rows = _Rows()
        self.finished: list[Request] = []
        self._queue: list[Request] = []
        self._next_id = 0
        self._arrivals = self._make_arrivals() if workload.mode == "continuous" else []
        self._refill()

    # --- requests -------------------------------------------------------------------------
    def _new_request(self, arrival_s: float) -> Request:
        lo, hi = self.workload.output_len
        request = Request(self._next_id, arrival_s, int(self._rng_requests.integers(lo, hi + 1)),
                          float(self.acceptance.draw(self._rng_requests, 1)[0]))
        self._next_id += 1
        return request

    def _make_arrivals(self) -> list[Request]:
        w = self.workload
        if w.arrival == "poisson":
            gaps = self._rng_requests.exponential(1.0 / w.arrival_rate, w.num_requests)
        else:
            shape = 1.0 / w.gamma_cv**2
            gaps = self._rng_requests.gamma(shape, 1.0 / (w.arrival_rate * shape), w.num_requests)
        return [self._new_request(t) for t in np.cumsum(gaps)][::-1]  # reversed: pop() = earliest

    def _admit(self, request: Request) -> None:
        request.admit_s = self.clock_s
        self.rows.requests.append(request)

    def _refill(self) -> None:
        """Fill slots: to the target size (static/schedule) or from arrived requests (continuous)."""
        target = self.workload.target_batch_size(self.step_index)
        if target is not None:
            del self.rows.requests[target:]
            while len(self.rows) < target:
                self._admit(self._new_request(self.clock_s))
            return
        while self._arrivals and self._arrivals[-1].arrival_s <= self.clock_s:
            self._queue.append(self._arrivals.pop())
        if not self.rows.requests and not self._queue and self._arrivals:
            self.clock_s = self._arrivals[-1].arrival_s
            self._queue.append(self._arrivals.pop())
        while self._queue and len(self.rows) < self.workload.max_batch_size:
            self._admit(self._queue.pop(0))

    # --- the Backend protocol -------------------------------------------------------------
    def done(self) -> bool:
        if self.step_index >= self.workload.steps:
            return True
        return self.workload.mode == "continuous" and not (self.rows.requests or self._queue or self._arrivals)

    def context(self) -> StepContext:
        return StepContext(step=self.step_index, batch_size=len(self.rows), max_spec_len=self.max_spec_len,
                           mean_context_len=float(self.workload.context_len),
                           max_context_len=self.workload.context_len, time_s=self.clock_s)

    def row_rates(self) -> np.ndarray:
        """[batch] each row's acceptance rate at this step."""
        base = np.fromiter((r.base_acceptance for r in self.rows.requests), float, len(self.rows))
        return np.clip(base + self.acceptance.offset(self.step_index), MIN_RATE, MAX_RATE)

    def _draft_caps(self) -> np.ndarray:
        """[batch] most drafts each row may propose: its remaining budget minus the bonus token."""
        return np.fromiter((r.output_len - r.num_generated - 1 for r in self.rows.requests), int, len(self.rows))

    def true_goodput_vector(self, max_spec_len: int) -> np.ndarray:
        """[max_spec_len + 1] expected tokens/s of each spec_len for the step about to run."""
        b = len(self.rows)
        if b == 0:
            return np.zeros(max_spec_len + 1)
        a, caps = self.row_rates(), self._draft_caps()
        drafts = np.minimum(np.arange(max_spec_len + 1)[None, :], caps[:, None])   # [batch, S+1]
        tokens = ((1.0 - a[:, None] ** (drafts + 1)) / (1.0 - a[:, None])).sum(0)  # [S+1]
        return tokens / self.cost_model.step_times_s(b, max_spec_len)

    def step(self, spec_len: int) -> StepRecord:
        spec_len = validate_spec_len(spec_len, self.max_spec_len)
        b = len(self.rows)
        if b == 0:
            raise RuntimeError("step() called with an empty batch: check done() first")
        oracle = float(self.true_goodput_vector(self.max_spec_len).max())
        accepted_per_pos, num_drafts, accepted_rows = self._verify(spec_len)
        draft_s, verify_s = self._timing(b, spec_len)
        record = StepRecord(
            step=self.step_index, batch_size=b, spec_len=spec_len, num_draft_tokens=num_drafts,
            num_accepted_tokens=int(accepted_per_pos.sum()), accepted_per_pos=tuple(int(x) for x in accepted_per_pos),
            draft_time_s=draft_s, verify_time_s=verify_s, controller="", time_s=self.clock_s + draft_s + verify_s,
            mean_context_len=float(self.workload.context_len), oracle_goodput_tps=oracle,
        )
        self._commit(accepted_rows + 1, record.time_s)
        return record

    def _verify(self, spec_len: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Draw acceptance: (accepted_per_pos [spec_len], drafts proposed, accepted per row [batch])."""
        draws = self._rng_accept.random((len(self.rows), max(1, self.max_spec_len)))   # [batch, S]
        drafts = np.minimum(spec_len, self._draft_caps())                                # [batch]
        hit = draws[:, :spec_len] < self.row_rates()[:, None]                            # [batch, s]
        hit &= np.arange(spec_len)[None, :] < drafts[:, None]
        leading = np.cumprod(hit, axis=1)                                                # [batch, s]
        return leading.sum(0), int(drafts.sum()), leading.sum(1)

    def _timing(self, batch_size: int, spec_len: int) -> tuple[float, float]:
        noise = np.exp(self.noise_std * self._rng_time.standard_normal(2))
        draft_s = spec_len * self.cost_model.draft_time_s(batch_size) * noise[0]
        return float(draft_s), float(self.cost_model.target_time_s(batch_size, spec_len + 1) * noise[1])

    def _commit(self, emitted: np.ndarray, end_s: float) -> None:
        """Emit tokens, retire finished requests, advance the clock, refill the slots."""
        still_running = []
        for request, n in zip(self.rows.requests, emitted):
            if request.num_generated == 0:
                request.first_token_s = end_s
            request.num_generated += int(n)
            if request.num_generated >= request.output_len:
                request.finish_s = end_s
                self.finished.append(request)
            else:
                still_running.append(request)
        self.rows.requests = still_running
        self.clock_s = end_s
        self.step_index += 1
        self._refill()
