"""`AutoSpec`: wrap a HuggingFace target (and a drafter) behind a `generate()` like the target's own.

Contract:
- `generate(input_ids, attention_mask=None, **generation arguments)` returns what
  `target.generate` returns for the same arguments: a LongTensor [batch, prompt + new tokens],
  the prompt as given (left padding honoured), each row padded with `pad_token_id` after its end
  (or HF's `GenerateDecoderOnlyOutput` with `return_dict_in_generate`). The arguments are resolved
  as HF resolves them (`autospec.backends.generation`: the call, its generation_config, the model's): HF's
  own logits processors run at every verified position with that position's prefix, user
  processors and stopping criteria, stop strings, max_time, several EOS ids, max_length, a
  streamer (batch 1), num_return_sequences when sampling. Greedy output is token-identical to the
  target's greedy decoding; sampling follows the target's processed distribution. More rows than
  `max_batch_size` are run by continuous batching (rows join as others finish), not refused.
- `serve(requests)` runs a continuous-batching workload (requests with their own budgets and
  arrival times, and as dicts their own generation settings: temperature, top_p, repetition_penalty,
  stop_strings, eos_token_id, ...; each row is processed with its own, as `target.generate` on that
  request alone would) and returns a `ServeResult`. An invalid request (empty prompt, a token id outside
  the vocabulary, a bad budget or arrival time, a duplicate id, a key autospec does not honour)
  is rejected on its own before it joins the batch (`rejected`: id -> reason) and the others are
  served. If the run fails midway (a controller or sink that raises, a device error,
  KeyboardInterrupt) serve still returns every finished request, names the unfinished ones and the
  cause (`error`), and the engine serves the next call exactly: every call builds its own caches
  and drafter state, and drops them when it returns.
- `draft` is a HF causal LM with the target's vocabulary, "ngram" (prompt lookup) or None (no
  speculation). A draft on another device is moved to the target's device; its dtype is kept. A
  draft model does no work for a row until a step drafts for it (its prefill is deferred and
  batched), so a run that never speculates never runs the draft.
- The prior: with `cost_model="auto"` (the default) a controller that takes one gets a cost model
  for this pair on this machine without being asked (`backends.calibration`: the profile cache,
  else a shipped profile measured on this device, else a calibration of a few seconds on first
  use, cached for later processes); a profile name, path or `CostModel` is used as given; None
  means a flat prior. `summary()["prior"]` and the run metadata say which, from where. The
  bandits get `ENGINE_CONTROLLER_OPTIONS` on this engine (see below).
- Every step's `StepRecord` goes to the sinks: `records` keeps the last `records_window` of them
  (None: all), `summary()` covers every step since construction (kept incrementally), a
  `RunWriter` (`run_name=`, or any sink passed in `sinks`) gets the full log on disk. The
  controller persists across calls and keeps learning.
- `cpu_prepack` (None: wherever it applies): on a CPU bfloat16 model the linear weights of the target
  and of a bfloat16 CPU draft are reordered once for oneDNN (`backends.prepack`) and used inside
  `generate`/`serve` only; outputs are bit-identical, memory grows by one copy of those weights.
  True insists (ValueError if the target cannot be packed); False never packs.
- Bad input raises ValueError before any compute: a target or draft autospec cannot serve exactly
  (`backends.attention.UnsupportedModel`: stateful, no KV cache, encoder-decoder, an attention
  implementation it cannot mask), a generation argument it does not honour (REFUSED_ARGUMENTS in
  `autospec.backends.generation`: beams, contrastive search, DoLa, constraints, guidance, watermarking,
  output_attentions, use_cache=False, HF's assistant and prompt lookup (autospec's drafters
  replace them), an unknown keyword),
  mismatched vocabularies or tokenizers, empty prompts, prompts that do not fit the model's
  context, max_new_tokens < 1, an invalid spec_len.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from loguru import logger
from tqdm.auto import tqdm

from autospec.controllers import build_controller, names_option, takes_cost_model
from autospec.cost_model import CostModel
from autospec.lazy import lazy_module
from autospec.loop import run_step
from autospec.runs import MemorySink, RunWriter
from autospec.summary import RunningSummary
from autospec.types import StepRecord

# torch, transformers and the HF backend load on first use (constructing an AutoSpec), not when this
# module is imported: `from autospec import AutoSpec` stays a fraction of a second (issue 21), and a
# program that built its model first has them loaded already. Type checkers and the import graph
# (`.importlinter`) read the real imports.
if TYPE_CHECKING:
    import torch

    from autospec.backends import attention, calibration, drafters, generation, hf, prepack
    from autospec.backends import sampling as samplers
    from autospec.backends.generation import Call
    from autospec.backends.hf import GenerationRequest, HFBackend, RequestResult
    from autospec.backends.processing import Processing
    from autospec.backends.sampling import SamplingConfig
else:
    torch = lazy_module("torch")
    attention, calibration, drafters, generation, hf, prepack, samplers = (
        lazy_module(f"autospec.backends.{name}")
        for name in ("attention", "calibration", "drafters", "generation", "hf", "prepack", "sampling"))


def inference_mode(method):
    """`method` run under `torch.inference_mode()`, entered at the call (torch loads on first use)."""
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return method(*args, **kwargs)
    return run


@dataclass
class ServeResult:
    results: list[RequestResult]
    unfinished: list[int | str]
    records: list[StepRecord]
    wall_time_s: float
    prefill_time_s: float
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    rejected: dict[int | str, str] = field(default_factory=dict)     # request id -> why it was refused

    @property
    def num_output_tokens(self) -> int:
        return sum(len(r.output_ids) for r in self.results)

    @property
    def throughput_tps(self) -> float:
        return self.num_output_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0


class AutoSpec:
    def __init__(self, target: torch.nn.Module, draft: torch.nn.Module | str | None = "ngram",
                 controller: Any = "auto", *, cost_model: CostModel | str | None = "auto", max_spec_len: int = 8,
                 max_batch_size: int = 16, seed: int = 0, tokenizer: Any = None, draft_tokenizer: Any = None,
                 ngram_max_n: int = 3, sinks: Sequence[Any] = (), cpu_prepack: bool | None = None,
                 records_window: int | None = 10_000, run_name: str | None = None,
                 runs_dir: str | Path | None = None, **controller_options: Any):
        if not isinstance(max_spec_len, int) or not 0 <= max_spec_len <= 64:
            raise ValueError(f"max_spec_len must be an integer in 0..64, got {max_spec_len!r}")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        self.target = target.eval()
        self.device = next(target.parameters()).device
        self.plans = {"target": attention.attention_plan(target)}       # refuses what cannot be served exactly
        self.draft = self._check_draft(draft, tokenizer, draft_tokenizer)
        if isinstance(self.draft, torch.nn.Module):
            self.plans["draft"] = attention.attention_plan(self.draft)
        self.max_spec_len = max_spec_len if self.draft is not None else 0
        self.max_batch_size, self.seed, self.ngram_max_n = max_batch_size, seed, ngram_max_n
        self.tokenizer = tokenizer                          # the default `tokenizer=` for stop_strings
        self.cost_model, self.prior_source = self._prior(cost_model, controller)
        cost_model = self.cost_model
        for option, value in ENGINE_CONTROLLER_OPTIONS.items():                             # the bandits
            if isinstance(controller, str) and names_option(controller, option):
                controller_options.setdefault(option, value)
        self.controller = controller if not isinstance(controller, str) else build_controller(
            controller, max_spec_len=self.max_spec_len, cost_model=cost_model, seed=seed, **controller_options)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # one stream across calls
        self.records_window = records_window
        self.memory = MemorySink(records_window)
        self.totals = RunningSummary()
        self.run_writer = None if run_name is None else RunWriter(run_name, self._run_meta(), runs_dir)
        self.sinks = [self.memory, self.totals, *sinks, *filter(None, [self.run_writer])]
        self.token_limit = generation.vocabulary_limit(self.target, self.draft)
        self.last_serve: ServeResult | None = None
        self.prepacked = [prepack.maybe_packed(self.target, cpu_prepack)]       # True: the target must be packable
        if isinstance(self.draft, torch.nn.Module) and self.draft is not self.target:
            self.prepacked.append(prepack.maybe_packed(self.draft, False if cpu_prepack is False else None))

    def _prior(self, cost_model: Any, controller: Any) -> tuple[CostModel | None, dict[str, Any]]:
        """The controller's cost model and where it came from. "auto": found or calibrated for this
        pair on this machine (`backends.calibration`) when the controller takes a prior and there is
        something to speculate with; a name or path: that profile; None: a flat prior."""
        if isinstance(cost_model, CostModel) or (isinstance(cost_model, str) and cost_model != "auto"):
            model = cost_model if isinstance(cost_model, CostModel) else CostModel.from_profile(cost_model)
            calibration.check_profile_matches(model, self.target)
            return model, {"kind": "given", "path": model.name}
        if cost_model is None:
            return None, {"kind": "none", "why": "cost_model=None: a flat prior"}
        if cost_model != "auto":
            raise ValueError(f"cost_model must be a CostModel, a profile name or path, 'auto' or None, got {cost_model!r}")
        if self.max_spec_len == 0 or not (isinstance(controller, str) and takes_cost_model(controller)):
            return None, {"kind": "none", "why": "the controller takes no prior" if self.max_spec_len else "no drafter"}
        try:
            prior = calibration.find_prior(self.target, self.draft, self.max_batch_size, self.max_spec_len)
        except Exception as exc:            # noqa: BLE001 - serving must not depend on the prior's search
            logger.warning(f"no cost model for the controller ({type(exc).__name__}: {exc}); it starts from a flat "
                           "prior (pass cost_model= a profile to give it one)")
            return None, {"kind": "none", "why": f"calibration failed: {type(exc).__name__}: {exc}"}
        return prior.cost_model, prior.source

    def _run_meta(self) -> dict[str, Any]:
        draft = self.draft if isinstance(self.draft, (str, type(None))) else type(self.draft).__name__
        return {"kind": "hf", "target": type(self.target).__name__, "drafter": draft,
                "controller": getattr(self.controller, "name", type(self.controller).__name__),
                "max_batch_size": self.max_batch_size, "max_spec_len": self.max_spec_len, "prior": self.prior_source}

    def close(self) -> None:
        """Close the run log opened by `run_name=` (its run.json says "finished")."""
        if self.run_writer is not None and not self.run_writer.closed:
            self.run_writer.close()

    def __enter__(self) -> "AutoSpec":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- checks -----------------------------------------------------------------------------
    def _check_draft(self, draft: Any, tokenizer: Any, draft_tokenizer: Any) -> torch.nn.Module | str | None:
        if draft is None or draft == "ngram":
            return draft
        if isinstance(draft, str):
            raise ValueError(f"draft must be a model, 'ngram' or None, got {draft!r}")
        target_vocab = attention.text_config(self.target).vocab_size
        draft_vocab = attention.text_config(draft).vocab_size
        if target_vocab != draft_vocab:
            raise ValueError(f"target and draft vocabularies differ: target vocab_size={target_vocab}, "
                             f"draft vocab_size={draft_vocab}; the draft must share the target's tokenizer")
        if tokenizer is not None and draft_tokenizer is not None and tokenizer.get_vocab() != draft_tokenizer.get_vocab():
            raise ValueError(f"target and draft tokenizers differ ({len(tokenizer)} vs {len(draft_tokenizer)} tokens, "
                             "or the same size with other ids); speculative decoding needs one tokenizer")
        draft_device = next(draft.parameters()).device
        if draft_device != self.device:
            logger.info(f"moving the draft from {draft_device} to the target's device {self.device}")
            draft = draft.to(self.device)
        return draft.eval()

    # --- the HF-like API --------------------------------------------------------------------
    @property
    def records(self) -> list[StepRecord]:
        return self.memory.records

    def summary(self) -> dict[str, Any]:
        """Totals over every step since construction (not just the records window), and `prior`:
        where the controller's cost model came from (cache, shipped, calibrated, given or none)."""
        return {**self.totals.as_dict(), "prior": self.prior_source}

    @inference_mode
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 generation_config: Any = None, logits_processor: Any = None, stopping_criteria: Any = None,
                 streamer: Any = None, tokenizer: Any = None, **kwargs: Any) -> Any:
        """Like `target.generate(...)`, speculatively: the same arguments (generation config fields
        as keywords or in `generation_config`, logits processors, stopping criteria, stop strings
        with `tokenizer`, a streamer, dict outputs), resolved and applied as HF does; anything it
        cannot honour raises ValueError naming it, before compute (`autospec.backends.generation`)."""
        call = generation.resolve_call(self.target, input_ids, attention_mask, generation_config, logits_processor,
                                       stopping_criteria, streamer, tokenizer or self.tokenizer, kwargs)
        return self._generate(call)

    def _generate(self, call: Call) -> Any:
        prompts = generation.split_prompts(call.input_ids, call.attention_mask)  # max_new_tokens: checked already
        for i, prompt in enumerate(prompts):
            problem = self._prompt_problem(prompt, call.max_new_tokens)
            if problem:
                raise ValueError(f"prompt {i} {problem}")
        requests = [hf.GenerationRequest(p, call.max_new_tokens, i, view=call.views[i]) for i, p in enumerate(prompts)]
        on_tokens = (lambda request, tokens: call.streamer.put(torch.tensor(tokens))) if call.streamer else None
        backend = self._backend(call.sampling, call.eos_token_ids, requests, call.processing,
                                keep_scores=call.output_scores or call.output_logits, on_tokens=on_tokens)
        self._run(backend, len(requests), progress=False)
        if call.streamer is not None:
            call.streamer.end()
        results = [backend.results[i] for i in range(len(prompts))]
        sequences = generation.assemble_output(call.input_ids, [r.output_ids for r in results], call.pad_token_id)
        return generation.dict_output(sequences, results, call) if call.return_dict else sequences

    def as_custom_generate(self):
        """A callable for `target.generate(..., custom_generate=spec.as_custom_generate())`: it takes
        the processors and criteria HF prepared (the user's ones and those of the generation config)."""
        def custom_generate(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
                            streamer=None, synced_gpus=False, **model_kwargs):
            if model is not self.target:
                raise ValueError("this custom_generate belongs to another target model")
            unknown = sorted(k for k, v in model_kwargs.items() if v is not None and k not in HF_PREPARED_KWARGS)
            if unknown:
                raise ValueError(f"generate arguments {unknown} reached custom_generate as model inputs autospec does "
                                 "not feed, so they are refused rather than ignored")
            user = generation.user_processors(self.target, generation_config, logits_processor, input_ids,
                                              model_kwargs.get("attention_mask"))
            criteria = [c for c in (stopping_criteria or []) if type(c).__name__ not in generation.LOOP_CRITERIA]
            call = generation.resolve_call(self.target, input_ids, model_kwargs.get("attention_mask"),
                                           generation_config, user, None, streamer, None, {},
                                           prepared_criteria=criteria)
            return self._generate(call)
        return custom_generate

    def serve(self, requests: Sequence[GenerationRequest | dict | Sequence[int]], *, max_new_tokens: int = 64,
              eos_token_id: int | list[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, progress: bool = True,
              tokenizer: Any = None) -> ServeResult:
        """Continuous batching over `requests` (arrival_s offsets honoured on the wall clock); see the
        module docstring for what an invalid request or a failure midway returns. A dict request may
        carry its own generation settings (temperature, top_p, repetition_penalty, stop_strings with
        `tokenizer`, eos_token_id, ...: serve_settings()); its row is processed with them, as
        `target.generate` on that request alone with those settings would, the others as given here."""
        generation.check_max_new_tokens(max_new_tokens)
        base = {"do_sample": do_sample, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                "eos_token_id": eos_token_id}
        all_own = self._model_config_needs_processing(base)
        args = generation.resolve_generation_args(self.target, None, check=not all_own,
                                                  max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                                  pad_token_id=None, do_sample=do_sample, temperature=temperature,
                                                  top_k=top_k, top_p=top_p)
        reqs, rejected = self._admissible(requests, max_new_tokens, base, tokenizer or self.tokenizer, all_own)
        memory, totals = MemorySink(self.records_window), RunningSummary()
        t0 = time.perf_counter()
        sampling = samplers.SamplingConfig(do_sample=args["do_sample"], temperature=args["temperature"],
                                           top_k=args["top_k"], top_p=args["top_p"])
        backend = self._backend(sampling, args["eos_token_ids"], reqs) if reqs else None
        error = self._run(backend, len(reqs), progress, [memory, totals], catch=True) if backend else None
        done = [backend.results[r.request_id] for r in reqs if r.request_id in backend.results] if backend else []
        result = ServeResult(done, backend.unfinished_ids() if backend else [], memory.records,
                             time.perf_counter() - t0, backend.prefill_time_s if backend else 0.0, error,
                             totals.as_dict() if memory.num_written else {}, rejected)
        log_outcome(result)
        self.last_serve = result
        return result

    def _model_config_needs_processing(self, base: dict[str, Any]) -> bool:
        """The model's generation_config sets processors (e.g. a checkpoint's repetition_penalty): then
        every request is processed as HF would (its fields autospec refuses raise here, for the call)."""
        config = getattr(self.target, "generation_config", None)
        try:
            if config is not None:
                generation.refuse_unhonoured_config(config, "the model's generation_config")
            return False
        except ValueError:
            given = {k: v for k, v in base.items() if v is not None}
            generation.prepare_config(self.target, None, given | {"max_new_tokens": 1})
            return True

    def _admissible(self, items: Sequence[Any], max_new_tokens: int, base: dict[str, Any] | None = None,
                    tokenizer: Any = None, all_own: bool = False) -> tuple[list[GenerationRequest], dict]:
        """The valid requests, and {request id: reason} for each invalid one (rejected on its own)."""
        valid, rejected, seen = [], {}, set()
        shared: dict[Any, Any] = {}                      # one Processing per distinct settings
        for index, item in enumerate(items):
            key = request_key(item, index)
            try:
                request = as_request(item, index, max_new_tokens)
                problem = request_problem(request, seen) or self._prompt_problem(request.prompt_ids,
                                                                                 request.max_new_tokens)
                own = {k: item[k] for k in set(item) & serve_settings()} if isinstance(item, dict) else {}
                if not problem and (own or all_own):
                    self._own_settings(request, own, base or {}, tokenizer, shared)
            except ValueError as exc:
                problem = str(exc)
            if problem:
                rejected[key] = f"request {key!r} {problem}"
                continue
            seen.add(request.request_id)
            valid.append(request)
        return valid, rejected

    def _own_settings(self, request: GenerationRequest, settings: dict[str, Any], base: dict[str, Any],
                      tokenizer: Any, shared: dict[Any, Any]) -> None:
        """Resolve a request's own settings over serve()'s as HF resolves generate's (the model's
        generation config under them), and give the request its Processing, sampling choice and EOS."""
        merged = {**{k: v for k, v in base.items() if v is not None}, **settings,
                  "max_new_tokens": request.max_new_tokens}
        config, _ = generation.prepare_config(self.target, None, dict(merged))
        prompt = torch.tensor([request.prompt_ids], device=self.device)                # [1, P]
        generation.resolve_lengths(self.target, config, merged, None, prompt)
        eos_ids, _ = generation.special_tokens(self.target, config, 1, self.device)
        key = (settings_key(merged), request.max_new_tokens + len(request.prompt_ids)
               if config.forced_eos_token_id is not None else None)
        if key not in shared:
            shared[key] = generation.build_processing(self.target, config, prompt, None, None, tokenizer,
                                                      self.device, torch.ones_like(prompt), want_scores=True)
        request.processing, request.do_sample = shared[key], bool(config.do_sample)
        request.eos_token_ids = tuple(eos_ids)

    # --- internals ----------------------------------------------------------------------------
    def _prompt_problem(self, prompt: list[int], max_new_tokens: int) -> str | None:
        """Why this prompt cannot be served (empty, an id outside the vocabulary, too long), or None."""
        if not prompt:
            return "is empty: every row needs at least one token"
        low, high = min(prompt), max(prompt)
        if low < 0 or high >= self.token_limit:
            bad = low if low < 0 else high
            return (f"has token id {bad} at position {prompt.index(bad)}, outside the vocabulary "
                    f"(0..{self.token_limit - 1})")
        limit = getattr(attention.text_config(self.target), "max_position_embeddings", None)
        if limit and len(prompt) + max_new_tokens + self.max_spec_len > limit:
            return (f"has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} and spec_len up to "
                    f"{self.max_spec_len} it exceeds the model's context of {limit}")
        return None

    def _backend(self, sampling: SamplingConfig, eos_token_ids: list[int], requests: list[GenerationRequest],
                 processing: Processing | None = None, keep_scores: bool = False, on_tokens: Any = None) -> HFBackend:
        """A fresh backend for one call. With HF processing, target and draft both draw from processed
        scores (the warpers are in HF's list), so both sample them plain; else both use `sampling`."""
        slots = max(len(r.prompt_ids) + r.max_new_tokens for r in requests) + 2 * self.max_spec_len + 2
        generator = self.generator
        rows = self.max_batch_size
        if processing is not None and processing.has_processors:          # warpers are in HF's processor list
            sampling = samplers.SamplingConfig(do_sample=sampling.do_sample)
        drafter = None
        if self.draft == "ngram":
            drafter = drafters.NgramDrafter(max_n=self.ngram_max_n, device=self.device)
        elif self.draft is not None:
            drafter = drafters.ModelDrafter(self.draft, sampling, rows, slots, generator, plan=self.plans["draft"])
        backend = hf.HFBackend(self.target, drafter, sampling=sampling, eos_token_ids=eos_token_ids,
                               max_batch_size=rows, max_spec_len=self.max_spec_len, slots_capacity=slots,
                               generator=generator, plan=self.plans["target"], processing=processing,
                               keep_scores=keep_scores, on_tokens=on_tokens)
        backend.submit(requests)
        return backend

    def _run(self, backend: HFBackend, num_requests: int, progress: bool, call_sinks: Sequence[Any] = (),
             catch: bool = False) -> str | None:
        """Drive `backend` to the end; with `catch`, a failure (or KeyboardInterrupt) midway is
        returned as its description instead of raised, and what finished stays in the backend."""
        bar = tqdm(total=num_requests, desc="requests", unit="req", disable=not progress)
        try:
            with contextlib.ExitStack() as stack:
                for packed in filter(None, self.prepacked):
                    stack.enter_context(packed.active())
                self._loop(backend, [*self.sinks, *call_sinks], bar)
        except (Exception, KeyboardInterrupt) as exc:    # a failure mid-serve keeps what finished
            if not catch:
                raise
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            bar.close()
        return None

    def _loop(self, backend: HFBackend, sinks: list[Any], bar: tqdm) -> None:
        backend.start()
        while not backend.done():
            run_step(backend, self.controller, sinks)
            bar.update(len(backend.results) - bar.n)


# The bandits' settings on this engine (`controllers.bandit`), for what its steps do not show:
# - switch_margin: a longer draft must beat the best shorter one's posterior goodput by 8% x
#   (1 - 1 / batch_size). SmolLM2 at batch 8 (chat, 64 tokens per request): per step spec_len 1-2
#   tie with plain decoding (+1% / -4%), end to end they lose 10-20% (a ragged drain, split
#   admissions); the margin keeps such ties plain.
# - draw_margin, min_run: on real text an arm's acceptance depends on the arms before it (SmolLM2 +
#   its distilled draft at batch 1: first-position acceptance 0.46 at spec_len 2, 0.67 at 3), so a
#   draw must beat the greedy arm by 3% to be tried, and is then tried for 8 steps in a row.
# - shortfall_floor, known_steps, explore_fraction: the posterior flatters arms it has not seen
#   under their own schedule, so only an arm with 4 own steps is greedy, and an exploring step is
#   charged at least 15% of its time (less the gain the prior is sure of) against a 1% budget.
# - switch_cost: the first drafting step after plain ones pays the lazy draft's prefill and catch-up
#   (on a 2-core AVX2 CPU at batch 1: 100-200 ms against a 55 ms plain step), so a probe is spaced
#   by its measured cost and an exploring run pays its own switch.
# - lookahead, realized_charge: a fresh engine may explore within 1% of the time its running rows
#   still need (not only of the time it has run), and an exploring run is billed what it really
#   lost against the greedy arm (net, a switch included), not a predicted shortfall with a floor:
#   on a 2-core AVX-512 CPU at batch 1-2, where spec_len 1-4 beat plain decoding by 10-25%, the first
#   call otherwise stayed plain for ~45 of its 64 steps (benchmarks/controller_real.py, 4 rounds:
#   static2 with the distilled draft 0.898 -> 0.953 of the best fixed spec_len, static1 0.875 -> 0.889).
ENGINE_CONTROLLER_OPTIONS = {"switch_margin": 0.08, "draw_margin": 0.03, "min_run": 8, "shortfall_floor": 0.15,
                             "known_steps": 4, "explore_fraction": 0.01, "switch_cost": True, "lookahead": True,
                             "realized_charge": True}

# What target.generate itself prepares and hands to a custom_generate (autospec builds its own cache,
# positions and logits); any other model input there came from the user and is refused.
HF_PREPARED_KWARGS = {"attention_mask", "position_ids", "logits_to_keep", "cache", "past_key_values", "use_cache",
                      "cache_position", "output_attentions", "output_hidden_states", "return_dict"}
REQUEST_KEYS = {"prompt_ids", "max_new_tokens", "request_id", "arrival_s"}


@functools.cache
def serve_settings() -> frozenset[str]:
    """Generation settings a serve() request may carry for itself (what makes a different output per row)."""
    return frozenset(generation.APPLIED) - {"max_length", "max_new_tokens", "num_return_sequences",
                                            "return_dict_in_generate", "output_scores", "output_logits",
                                            "use_cache", "pad_token_id"}


def settings_key(settings: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in settings.items() if k != "max_new_tokens"))


def request_key(item: Any, index: int) -> int | str:
    """The id a request is reported under (its own when it has a usable one, else its index)."""
    rid = item.request_id if isinstance(item, hf.GenerationRequest) else (
        item.get("request_id", index) if isinstance(item, dict) else index)
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else index


def as_request(item: Any, index: int, max_new_tokens: int) -> GenerationRequest:
    """A GenerationRequest from a request, a dict with REQUEST_KEYS, or a list of token ids
    (ValueError naming what is wrong with it)."""
    if isinstance(item, hf.GenerationRequest):
        token_list(item.prompt_ids)
        return item
    if isinstance(item, dict):
        unknown = sorted(set(item) - REQUEST_KEYS - serve_settings())
        if unknown:
            raise ValueError(f"has keys autospec does not honour: {unknown} (a request takes {sorted(REQUEST_KEYS)} "
                             "and generation settings of its own: autospec.entrypoints.engine.serve_settings())")
        if "prompt_ids" not in item:
            raise ValueError("has no prompt_ids")
        return hf.GenerationRequest(token_list(item["prompt_ids"]), item.get("max_new_tokens", max_new_tokens),
                                    item.get("request_id", index), item.get("arrival_s", 0.0))
    return hf.GenerationRequest(token_list(item), max_new_tokens, index)


def token_list(ids: Any) -> list[int]:
    ids = ids.tolist() if hasattr(ids, "tolist") else ids
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise ValueError(f"prompt_ids must be a list of token ids, got {type(ids).__name__}")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ValueError("prompt_ids must hold integer token ids only")
    return list(ids)


def request_problem(request: GenerationRequest, seen: set) -> str | None:
    """What is wrong with a request's id, budget or arrival time (None: nothing)."""
    rid, budget, arrival = request.request_id, request.max_new_tokens, request.arrival_s
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        return f"has request_id {rid!r}: it must be an int or a str"
    if rid in seen:
        return "repeats an earlier request's id; ids must be unique within a serve() call"
    if not generation.valid_budget(budget):
        return f"has max_new_tokens={budget!r}: it must be an integer >= 1"
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or not 0 <= arrival < float("inf"):
        return f"has arrival_s={arrival!r}: it must be a finite number of seconds >= 0"
    return None


def log_outcome(result: ServeResult) -> None:
    for rid, reason in result.rejected.items():
        logger.warning(f"rejected: {reason}")
    if result.error:
        logger.error(f"serve stopped early ({result.error}); {len(result.results)} requests finished, "
                     f"{len(result.unfinished)} did not: {result.unfinished}")
