"""The engine-free half of autospec inside vLLM: settings, per-step decisions and their feedback.

vLLM's scheduler asks, once per `schedule()`, how many tokens every row should draft for the next
step (`dynamic_sd_lookup[batch_size]`); those drafts are verified one step later, and the result
reaches `update_from_output()`. `autospec.integrations.vllm` forwards exactly those three events
here; nothing in this module imports vLLM (it reads the few output fields it needs by name, so it
is tested with stand-ins in autospec's own environment).

Contract:
- `VllmSettings.parse(config, num_speculative_tokens, environ)` reads
  `additional_config["autospec"]` (or `AUTOSPEC_VLLM_*` environment variables where a key is
  absent): `controller` (a registry spec, default "auto"), `options` (the controller's options),
  `profile` (a profile name or path: the cost-model prior; absent: a flat prior), `max_spec_len`
  (default `num_speculative_tokens`), `arms` ("table": at each batch size no K above what vLLM's
  static table gives there, the K values vLLM prepared for, e.g. captured CUDA graphs; "all": any K
  up to `max_spec_len`), `run_name` / `runs_dir` (a `RunWriter` log for the dashboard), `seed`.
  Anything else, or a value out of range, is a ValueError naming the field, before serving starts.
- `SpecLenDecisions.choose(num_decode_rows, static_k)` returns the K for the step being scheduled
  (the controller's, clamped to 0..max_spec_len and, with arms="table", to `static_k`).
  `scheduled(total_tokens)` queues that decision (FIFO: vLLM completes steps in the order it
  scheduled them, also with async scheduling); `completed(scheduler_output, runner_output)` pops
  the step's own decision and attributes the verify result to the decision before it, the one
  whose drafts this step verified, as one `StepRecord` per step with decode rows: decode rows only
  (prefill chunks excluded), per-row accepted counts from the sampled tokens, a row without drafts
  rejected at position 0, step time from the clock (since the previous completion; since this
  step's schedule() when the engine sat idle in between).
- A controller or sink that raises disables the controller for the rest of the run: `choose` then
  returns `static_k` (vLLM's own table) and the failure is logged once; serving goes on. So does
  the live self-check, on any step where a row verified more drafts than the K chosen for it (the
  hook no longer reaches vLLM's drafter: the feedback would be wrong).
- `use(controller)` hands the decisions to another controller (None: vLLM's own table decides) while
  the engine is idle (profiling and benchmarks switch policies on one engine between workloads).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from loguru import logger

from autospec.controllers import build_controller
from autospec.cost_model import CostModel
from autospec.runs import RunWriter
from autospec.types import StepContext, StepRecord

KEYS = ("controller", "options", "profile", "max_spec_len", "arms", "run_name", "runs_dir", "seed")
ARMS = ("table", "all")


@dataclass(frozen=True)
class VllmSettings:
    controller: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    max_spec_len: int = 0
    arms: str = "table"
    run_name: str | None = None
    runs_dir: str | None = None
    seed: int = 0

    @classmethod
    def parse(cls, config: Mapping[str, Any] | None, num_speculative_tokens: int,
              environ: Mapping[str, str] = os.environ) -> "VllmSettings":
        given = dict(config or {})
        unknown = sorted(set(given) - set(KEYS))
        if unknown:
            raise ValueError(f"additional_config['autospec'] has unknown keys {unknown}; it takes {list(KEYS)}")
        for key in KEYS:
            env = environ.get(f"AUTOSPEC_VLLM_{key.upper()}")
            if key not in given and env is not None:
                given[key] = env
        return cls(**_checked(given, num_speculative_tokens))


def _checked(given: dict[str, Any], num_speculative_tokens: int) -> dict[str, Any]:
    """The settings with their types checked and the defaults that depend on vLLM's config filled."""
    out = dict(given)
    k_max = out.get("max_spec_len", num_speculative_tokens)
    if isinstance(k_max, str) and k_max.isdigit():
        k_max = int(k_max)
    if isinstance(k_max, bool) or not isinstance(k_max, int) or not 0 <= k_max <= num_speculative_tokens:
        raise ValueError(f"autospec max_spec_len={k_max!r} must be an integer in 0..{num_speculative_tokens} "
                         "(speculative_config.num_speculative_tokens, the most drafts vLLM sized its buffers for)")
    out["max_spec_len"] = k_max
    if out.get("arms", "table") not in ARMS:
        raise ValueError(f"autospec arms={out['arms']!r} must be one of {list(ARMS)}")
    if not isinstance(out.get("options", {}), dict):
        raise ValueError(f"autospec options must be a mapping of controller options, got {out['options']!r}")
    out["seed"] = int(out.get("seed", 0))
    return out


def profile_problem(cost_model: CostModel, hf_config: Any) -> str | None:
    """Why a profile (one that records its target's shape) does not describe vLLM's model, or None."""
    mismatch = cost_model.profile.target_shape_mismatch(hf_config)
    if not mismatch:
        return None
    shape, actual = mismatch
    return (f"autospec profile {cost_model.name} was measured for a target with {shape}, but vLLM serves "
            f"one with {actual}: give a profile of this model, or none (a flat prior)")


def build_decisions(settings: VllmSettings, hf_config: Any = None, clock: Callable[[], float] = time.perf_counter,
                    meta: dict[str, Any] | None = None) -> "SpecLenDecisions":
    """The controller (with its prior) and the run log the settings ask for; ValueError naming the
    field for an unknown controller or option, a missing profile or one of another model."""
    cost_model = CostModel.from_profile(settings.profile) if settings.profile else None
    problem = profile_problem(cost_model, hf_config) if cost_model is not None and hf_config is not None else None
    if problem:
        raise ValueError(problem)
    controller = build_controller(settings.controller, max_spec_len=settings.max_spec_len, cost_model=cost_model,
                                  seed=settings.seed, **settings.options)
    sinks = []
    if settings.run_name:
        run_meta = {"kind": "vllm", "controller": settings.controller, "max_spec_len": settings.max_spec_len,
                    "prior": settings.profile or "none", "arms": settings.arms, **(meta or {})}
        sinks.append(RunWriter(settings.run_name, run_meta, settings.runs_dir))
    return SpecLenDecisions(controller, settings.max_spec_len, settings.arms == "table", clock, sinks, cost_model)


@dataclass
class _Decision:
    num_decode_rows: int
    spec_len: int
    scheduled_s: float = 0.0                        # set when schedule() returns


class SpecLenDecisions:
    """The controller's side of vLLM's schedule() / update_from_output() loop (module contract)."""

    def __init__(self, controller: Any, max_spec_len: int, within_table: bool = True,
                 clock: Callable[[], float] = time.perf_counter, sinks: list[Any] | None = None,
                 cost_model: CostModel | None = None):
        self.max_spec_len, self.within_table = max_spec_len, within_table
        self.clock, self.sinks = clock, list(sinks or [])
        self.num_steps = 0                               # records observed
        self.choose_time_s = self.observe_time_s = 0.0
        self.use(controller, cost_model)

    def use(self, controller: Any | None, cost_model: CostModel | None = None) -> None:
        """From the next step on `controller` chooses K (None: vLLM's static table); call it while no
        step is in flight, as it forgets the decisions still queued."""
        self.controller = controller
        self.cost_model = cost_model                    # the controller's prior, where it has one
        self.active = controller is not None
        self.failure: str | None = None
        self._pending: _Decision | None = None          # chosen in the schedule() under way
        self._queue: deque[_Decision] = deque()         # scheduled, not yet completed (FIFO)
        self._verifying: _Decision | None = None        # whose drafts the next completion verifies
        self._last_completed_s: float | None = None
        self._step_ema_s = 0.0

    # --- schedule(): the decision -----------------------------------------------------------
    def choose(self, num_decode_rows: int, static_k: int) -> int:
        """K for the step being scheduled: the controller's at this many decode rows."""
        if not self.active:
            return static_k
        t0 = time.perf_counter()
        try:
            ctx = StepContext(step=self.num_steps, batch_size=max(1, num_decode_rows), max_spec_len=self.max_spec_len)
            k = max(0, min(int(self.controller.choose(ctx)), self.max_spec_len))
        except Exception as exc:        # noqa: BLE001 - a controller bug must not stop vLLM
            self._disable("choose", exc)
            return static_k
        finally:
            self.choose_time_s += time.perf_counter() - t0
        k = min(k, static_k) if self.within_table else k
        self._pending = _Decision(num_decode_rows, k)
        return k

    def scheduled(self, total_num_scheduled_tokens: int, started_s: float | None = None) -> None:
        """schedule() returned: queue its decision (a step with no decision drafts nothing, K = 0)."""
        decision, self._pending = self._pending, None
        if total_num_scheduled_tokens <= 0:
            return
        decision = decision or _Decision(0, 0)
        decision.scheduled_s = self.clock() if started_s is None else started_s
        self._queue.append(decision)

    # --- update_from_output(): the feedback ---------------------------------------------------
    def completed(self, scheduler_output: Any, runner_output: Any) -> StepRecord | None:
        """The step that `scheduler_output` scheduled has run: its record (None: no decode row or
        no decision verified), observed by the controller and written to the sinks."""
        if not self.active or scheduler_output.total_num_scheduled_tokens <= 0:
            return None
        now = self.clock()
        current = self._queue.popleft() if self._queue else _Decision(0, 0, now)
        verified, self._verifying = self._verifying, current
        step_s = self._step_time(current.scheduled_s, now)
        if verified is None:
            return None
        rows = decode_rows(scheduler_output, runner_output)
        if not rows:
            return None
        if not self._drafted_as_chosen(rows, verified.spec_len):
            return None
        record = step_record(self.num_steps, verified.spec_len, rows, step_s, now,
                             getattr(self.controller, "name", type(self.controller).__name__),
                             {"decision_decode_rows": verified.num_decode_rows})
        self._observe(record)
        return record

    def _drafted_as_chosen(self, rows: list[RowResult], spec_len: int) -> bool:
        """The live self-check, every step: no row verified more drafts than the K chosen for them.
        A row over it means this vLLM drafts something other than what dynamic_sd_lookup returned
        (its internals moved), so the controller is switched off rather than fed wrong feedback."""
        most = max(r.num_draft_tokens for r in rows)
        if most <= spec_len:
            return True
        self._disable("self-check", RuntimeError(
            f"a row verified {most} drafts where autospec chose K = {spec_len}: this vLLM does not draft the K its "
            "scheduler's dynamic_sd_lookup returns"))
        return False

    def _step_time(self, scheduled_s: float, now: float) -> float:
        """Since the previous completion (the engine's own per-step work included), unless the engine
        sat idle in between (a gap over twice the usual step): then since this step's schedule()."""
        last = self._last_completed_s
        idle = last is None or (self._step_ema_s > 0 and scheduled_s - last > 2.0 * self._step_ema_s)
        step_s = max(now - (scheduled_s if idle else last), 0.0)
        self._step_ema_s = step_s if not self._step_ema_s else 0.9 * self._step_ema_s + 0.1 * step_s
        self._last_completed_s = now
        return step_s

    def _observe(self, record: StepRecord) -> None:
        t0 = time.perf_counter()
        try:
            self.controller.observe(record)
            for sink in self.sinks:
                sink.write(record)
        except Exception as exc:        # noqa: BLE001 - a controller or sink bug must not stop vLLM
            self._disable("observe", exc)
        finally:
            self.observe_time_s += time.perf_counter() - t0
        self.num_steps += 1

    def _disable(self, where: str, exc: BaseException) -> None:
        self.active = False
        self.failure = f"{where}: {type(exc).__name__}: {exc}"
        logger.opt(exception=exc).error(f"autospec: the controller failed in {where} ({type(exc).__name__}: {exc}); "
                                        "vLLM's static table decides K from now on")

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close") and not getattr(sink, "closed", False):
                sink.close()


@dataclass(frozen=True)
class RowResult:
    num_draft_tokens: int           # drafts this row verified (vLLM's invalid ones excluded)
    num_accepted_tokens: int


def decode_rows(scheduler_output: Any, runner_output: Any) -> list[RowResult]:
    """The verify result of each decode row of a step: a row scheduled for exactly 1 + its drafts
    tokens (a prefill chunk is not one); accepted = sampled tokens - 1, at most its drafts."""
    spec = scheduler_output.scheduled_spec_decode_tokens or {}
    invalid = getattr(scheduler_output, "num_invalid_spec_tokens", None) or {}
    sampled, index = runner_output.sampled_token_ids, runner_output.req_id_to_index
    rows = []
    for req_id, num_tokens in scheduler_output.num_scheduled_tokens.items():
        drafts = spec.get(req_id, ())
        i = index.get(req_id)
        if num_tokens != 1 + len(drafts) or i is None or i >= len(sampled) or not len(sampled[i]):
            continue
        drafted = max(len(drafts) - invalid.get(req_id, 0), 0)
        rows.append(RowResult(drafted, min(len(sampled[i]) - 1, drafted)))
    return rows


def step_record(step: int, spec_len: int, rows: list[RowResult], step_s: float, now: float, controller: str,
                extra: dict[str, Any]) -> StepRecord:
    """A StepRecord of one vLLM step: `spec_len` is the K its drafts were proposed with; a row that
    drafted fewer counts as rejected at its first missing position (StepRecord's definition)."""
    accepted_per_pos = tuple(sum(r.num_accepted_tokens > j for r in rows) for j in range(spec_len))
    drafted_per_pos = tuple(sum(r.num_draft_tokens > j for r in rows) for j in range(spec_len))
    width = 1 + max((r.num_draft_tokens for r in rows), default=0)
    return StepRecord(step=step, batch_size=len(rows), spec_len=spec_len,
                      num_draft_tokens=sum(r.num_draft_tokens for r in rows),
                      num_accepted_tokens=sum(r.num_accepted_tokens for r in rows),
                      accepted_per_pos=accepted_per_pos, draft_time_s=0.0, verify_time_s=step_s,
                      controller=controller, time_s=now, verified_width=width,
                      rows_drafted_per_pos=drafted_per_pos, extra=extra)
