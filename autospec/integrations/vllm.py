"""autospec's controller choosing vLLM's speculation length K every step (vLLM 0.32 / 0.33, V1 engine).

Use (vLLM's own environment; autospec does not depend on vLLM):

    LLM(model, speculative_config={"method": "ngram", "num_speculative_tokens": 4,
                                   "num_speculative_tokens_per_batch_size": [[1, 256, 4]]},
        scheduler_cls="autospec.integrations.vllm.AutoSpecScheduler",
        additional_config={"autospec": {"controller": "auto", "profile": "...", "run_name": "vllm"}})

or `AUTOSPEC_VLLM=1` in the environment, which makes autospec's scheduler vLLM's default through
the `vllm.general_plugins` entry point (`register`) when no other scheduler_cls is set.

Contract:
- `AutoSpecScheduler(vllm_config, ...)` is an `AutoSpecAsyncScheduler` (an `AsyncScheduler`
  subclass) when `scheduler_config.async_scheduling` is on, else an `AutoSpecSyncScheduler` (a
  `Scheduler` subclass); both call vLLM's own `schedule()` / `update_from_output()` and only
  replace `dynamic_sd_lookup`, the table vLLM indexes once per `schedule()`, by one that asks
  `autospec.integrations.vllm_steps.SpecLenDecisions` at the number of decode rows (rows still in
  their prefill excluded). Settings: `additional_config["autospec"]` (`VllmSettings`).
- Refused at start-up, naming the field: a vLLM version outside `SUPPORTED_VLLM` or whose
  internals moved (`self_check`), no dynamic speculative decoding
  (`speculative_config.num_speculative_tokens_per_batch_size` unset, or vLLM switched it off),
  `parallel_config.data_parallel_size` > 1, a bad autospec setting, an unknown controller, a
  profile of another model.
- The static table vLLM was given stays the fallback (a failing controller: logged, then vLLM's
  table decides) and, with arms="table" (the default), the upper envelope of K at each batch size:
  on GPU vLLM prepares CUDA graphs only for the K values its table uses.
- In-process use (an `LLM` built with `VLLM_ENABLE_V1_MULTIPROCESSING=0`: `autospec profile --engine
  vllm`, `benchmarks/vllm_online.py`): `in_process_scheduler(llm)` finds autospec's scheduler,
  `set_policy` switches who chooses K between workloads (a controller, or a static schedule played
  by vLLM's own lookup), `run_phases` serves token-id prompts in phases of fixed concurrency (a
  closed loop: a finished request's slot takes the phase's next one) and times them.
- This is the only module of autospec that imports vLLM, and it does so on first use of the
  scheduler classes (module `__getattr__`), so `register` can run in every vLLM process cheaply.
"""
from __future__ import annotations

import os
import time
from typing import Any

from loguru import logger

from autospec.integrations.vllm_steps import SpecLenDecisions, VllmSettings, build_decisions

SUPPORTED_VLLM = ("0.32", "0.33")
CLASS_NAMES = ("AutoSpecScheduler", "AutoSpecSyncScheduler", "AutoSpecAsyncScheduler")
_classes: dict[str, Any] = {}


def vllm_version() -> str:
    import vllm
    return getattr(vllm, "__version__", "unknown")


def check_version(version: str) -> None:
    """vLLM's scheduler interface is not public: only the versions this integration was tested on."""
    if ".".join(version.split(".")[:2]) not in SUPPORTED_VLLM:
        raise RuntimeError(f"autospec.integrations.vllm supports vLLM {', '.join(SUPPORTED_VLLM)}, found vLLM "
                           f"{version}: its scheduler internals may have moved (see self_check)")


def self_check(scheduler: Any) -> None:
    """The internals this integration reads, present on this vLLM (RuntimeError naming what moved)."""
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.outputs import ModelRunnerOutput
    wanted = {"Scheduler.dynamic_sd_lookup": hasattr(scheduler, "dynamic_sd_lookup"),
              "Scheduler.num_spec_tokens": hasattr(scheduler, "num_spec_tokens"),
              "Scheduler.running": hasattr(scheduler, "running"),
              "SchedulerOutput.num_spec_tokens_to_schedule": _has_field(SchedulerOutput, "num_spec_tokens_to_schedule"),
              "SchedulerOutput.scheduled_spec_decode_tokens": _has_field(SchedulerOutput,
                                                                         "scheduled_spec_decode_tokens"),
              "ModelRunnerOutput.sampled_token_ids": _has_field(ModelRunnerOutput, "sampled_token_ids"),
              "ModelRunnerOutput.req_id_to_index": _has_field(ModelRunnerOutput, "req_id_to_index")}
    moved = [name for name, present in wanted.items() if not present]
    if moved:
        raise RuntimeError(f"autospec.integrations.vllm: vLLM {vllm_version()} lacks {moved}, which this "
                           "integration reads; its scheduler internals moved")


def _has_field(cls: type, name: str) -> bool:
    fields = getattr(cls, "__dataclass_fields__", {})
    return name in fields or name in getattr(cls, "__annotations__", {})


def config_problem(vllm_config: Any, dynamic_sd_lookup: Any) -> str | None:
    """Why autospec cannot choose K in this vLLM config (the field to change), or None."""
    if getattr(vllm_config.parallel_config, "data_parallel_size", 1) > 1:
        return ("parallel_config.data_parallel_size > 1: vLLM disables dynamic speculative decoding with data "
                "parallelism (ranks would diverge), so autospec cannot choose K per step")
    if dynamic_sd_lookup is None:
        return ("speculative_config.num_speculative_tokens_per_batch_size is not set, or vLLM switched dynamic "
                "speculative decoding off for this config (e.g. a drafting method it does not support on this "
                "runner): autospec chooses K through it; set it, e.g. to [[1, max_num_seqs, num_speculative_tokens]]")
    return None


class OnlineLookup:
    """Stands in for `Scheduler.dynamic_sd_lookup` (a dense list batch size -> K): indexing it asks
    the controller; `static` is the table vLLM built (fallback and upper envelope)."""

    def __init__(self, scheduler: Any, static: list[int]):
        self.scheduler, self.static = scheduler, list(static)

    def __len__(self) -> int:
        return len(self.static)

    def __getitem__(self, num_scheduled_rows: int) -> int:
        static_k = self.static[min(int(num_scheduled_rows), len(self.static) - 1)]
        decode_rows = sum(1 for r in self.scheduler.running if not _prefilling(r))
        return self.scheduler.autospec.choose(decode_rows, static_k)


def _prefilling(request: Any) -> bool:
    """A running request that has produced no token yet (its prompt, or a chunk of it, runs now)."""
    return request.is_prefill_chunk or (request.num_output_tokens == 0 and request.num_output_placeholders == 0)


class _AutoSpecMixin:
    """What autospec adds to vLLM's scheduler; `clock` may be replaced (tests: a simulated clock)."""

    autospec: SpecLenDecisions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)             # the version was checked when the class was built
        self_check(self)
        problem = config_problem(self.vllm_config, self.dynamic_sd_lookup)
        if problem:
            raise ValueError(f"autospec: {problem}")
        additional = getattr(self.vllm_config, "additional_config", None) or {}
        settings = VllmSettings.parse(additional.get("autospec"), self.num_spec_tokens)
        model = self.vllm_config.model_config
        self.autospec = build_decisions(settings, getattr(model, "hf_config", None), clock=self._clock,
                                        meta={"model": str(getattr(model, "model", "")), "vllm": vllm_version()})
        self.dynamic_sd_lookup = OnlineLookup(self, self.dynamic_sd_lookup)
        logger.info(f"autospec: {settings.controller} chooses K <= {settings.max_spec_len} per step "
                    f"(prior: {settings.profile or 'flat'}, arms: {settings.arms})")

    def _clock(self) -> float:
        return time.perf_counter()

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        started_s = self.autospec.clock()
        output = super().schedule(*args, **kwargs)
        self.autospec.scheduled(output.total_num_scheduled_tokens, started_s)
        return output

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        self.autospec.completed(scheduler_output, model_runner_output)      # never raises (falls back)
        return super().update_from_output(scheduler_output, model_runner_output)

    def shutdown(self) -> None:
        self.autospec.close()
        super().shutdown()


def _build_classes() -> dict[str, Any]:
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    check_version(vllm_version())
    sync = type("AutoSpecSyncScheduler", (_AutoSpecMixin, Scheduler), {"__module__": __name__})
    async_ = type("AutoSpecAsyncScheduler", (_AutoSpecMixin, AsyncScheduler), {"__module__": __name__})

    class AutoSpecScheduler:
        """vLLM's `scheduler_cls`: the AsyncScheduler subclass under async scheduling, else the Scheduler one."""

        def __new__(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
            base = async_ if vllm_config.scheduler_config.async_scheduling else sync
            return base(vllm_config, *args, **kwargs)

    AutoSpecScheduler.__module__ = __name__
    return {"AutoSpecScheduler": AutoSpecScheduler, "AutoSpecSyncScheduler": sync, "AutoSpecAsyncScheduler": async_}


def validate_export(document: dict[str, Any], model: str | None = None) -> Any:
    """`autospec plan --export vllm` output checked by autospec's rules (`autospec.export.validate_vllm`),
    then by vLLM's own: its schedule validator and a `SpeculativeConfig` built from the export
    (ngram here unless the export names a draft `model`). Returns the SpeculativeConfig."""
    from vllm.config import SpeculativeConfig
    from vllm.v1.spec_decode.dynamic.utils import validate_and_normalize_dynamic_sd_schedule

    from autospec.export import ExportError, validate_vllm
    validate_vllm(document)
    config = dict(document.get("speculative_config", document))
    try:
        validate_and_normalize_dynamic_sd_schedule(config["num_speculative_tokens_per_batch_size"])
        if model is not None:
            config["model"] = model
        elif config.get("method") != "ngram":                # no draft at hand: the schedule under ngram
            config = {**config, "method": "ngram", "prompt_lookup_max": 3}
            config.pop("model", None)
        return SpeculativeConfig(**config)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"vLLM {vllm_version()} rejects the export: {exc}") from exc


def in_process_llm(**engine_args: Any) -> Any:
    """`vllm.LLM(**engine_args)` with its engine core in this process (its scheduler reachable)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM
    return LLM(**engine_args)


def in_process_scheduler(llm: Any) -> Any:
    """autospec's scheduler inside `llm` (RuntimeError when vLLM runs its engine core in another
    process, or with another scheduler)."""
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    scheduler = getattr(core, "scheduler", None)
    if scheduler is None:
        raise RuntimeError("the LLM's engine core runs in another process: build it with "
                           "VLLM_ENABLE_V1_MULTIPROCESSING=0 to reach its scheduler")
    if not isinstance(getattr(scheduler, "autospec", None), SpecLenDecisions):
        raise RuntimeError(f"the LLM's scheduler is {type(scheduler).__name__}, not autospec's: build it with "
                           "scheduler_cls='autospec.integrations.vllm.AutoSpecScheduler'")
    return scheduler


def set_policy(scheduler: Any, controller: Any | None = None, schedule: list[list[int]] | None = None,
               cost_model: Any = None) -> None:
    """Who chooses K from the next step on: `controller` (within `schedule`'s K where given), or, with
    controller None, vLLM's own lookup over `schedule` ([[lo, hi, K], ...], vLLM's format: indexed by
    the number of scheduled rows, prefills included). Call it while the engine is idle."""
    if schedule is not None:
        from vllm.v1.spec_decode.dynamic.utils import (build_dynamic_sd_schedule_lookup,
                                                       validate_and_normalize_dynamic_sd_schedule)
        normalized = validate_and_normalize_dynamic_sd_schedule(schedule)
        scheduler.dynamic_sd_lookup.static = build_dynamic_sd_schedule_lookup(
            normalized, scheduler.scheduler_config.max_num_seqs, scheduler.num_spec_tokens)
    scheduler.autospec.use(controller, cost_model)


def run_phases(llm: Any, phases: list[tuple[int, list[list[int]]]], max_tokens: int,
               progress: Any = None) -> dict[str, Any]:
    """Greedy generation of every phase's prompts (token ids), `max_tokens` each (EOS ignored), at most
    `concurrency` requests in flight within a phase; phases run one after another. Returns the token
    ids per request (in order), the wall time per phase and in all."""
    from vllm import SamplingParams
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    engine, tokens, phase_s = llm.llm_engine, {}, []
    t0 = time.perf_counter()
    for p, (concurrency, prompts) in enumerate(phases):
        started = time.perf_counter()
        waiting = [(f"p{p}-r{i}", ids) for i, ids in enumerate(prompts)]
        in_flight = 0
        while waiting or in_flight:
            while waiting and in_flight < concurrency:
                request_id, ids = waiting.pop(0)
                engine.add_request(request_id, {"prompt_token_ids": list(ids)}, params)
                in_flight += 1
            for out in engine.step():
                if out.finished:
                    tokens[out.request_id] = list(out.outputs[0].token_ids)
                    in_flight -= 1
                    if progress is not None:
                        progress.update(1)
        phase_s.append(time.perf_counter() - started)
    order = [f"p{p}-r{i}" for p, (_, prompts) in enumerate(phases) for i in range(len(prompts))]
    return {"tokens": [tokens[r] for r in order], "phase_s": phase_s, "wall_s": time.perf_counter() - t0}


def __getattr__(name: str) -> Any:
    if name in CLASS_NAMES:
        if not _classes:
            _classes.update(_build_classes())
        return _classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> None:
    """`vllm.general_plugins` entry point, run by vLLM in each of its processes: with AUTOSPEC_VLLM=1,
    autospec's scheduler becomes the default `scheduler_cls` (a scheduler_cls set by the user wins)."""
    if os.environ.get("AUTOSPEC_VLLM", "0") not in ("1", "true", "yes"):
        return
    from vllm.config.scheduler import SchedulerConfig
    original = SchedulerConfig.get_scheduler_cls
    if getattr(original, "autospec", False):
        return

    def get_scheduler_cls(self: Any) -> Any:
        if self.scheduler_cls is None:
            return __getattr__("AutoSpecScheduler")
        return original(self)

    get_scheduler_cls.autospec = True
    SchedulerConfig.get_scheduler_cls = get_scheduler_cls
