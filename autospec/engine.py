"""`AutoSpec`: wrap a HuggingFace target (and a drafter) behind a `generate()` like the target's own.

Contract:
- `generate(input_ids, attention_mask=None, max_new_tokens=..., ...)` returns what
  `target.generate` returns for the same arguments: a LongTensor [batch, prompt + new tokens],
  the prompt as given (left padding honoured), each row padded with `pad_token_id` after its EOS.
  Greedy output is token-identical to the target's greedy decoding; sampling follows the target's
  distribution. More rows than `max_batch_size` are run by continuous batching (rows join as
  others finish), not refused.
- `serve(requests)` runs a continuous-batching workload (requests with their own budgets and
  arrival times) and returns a `ServeResult`; if a step fails midway it still returns every
  finished request and names the unfinished ones.
- `draft` is a HF causal LM with the target's vocabulary, "ngram" (prompt lookup) or None (no
  speculation). A draft on another device is moved to the target's device; its dtype is kept.
- Every step's `StepRecord` lands in `records` (and in any extra sinks, e.g. a `RunWriter`); the
  controller persists across calls and keeps learning.
- `cpu_prepack` (None: wherever it applies): on a CPU bfloat16 model the linear weights of the target
  and of a bfloat16 CPU draft are reordered once for oneDNN (`backends.prepack`) and used inside
  `generate`/`serve` only; outputs are bit-identical, memory grows by one copy of those weights.
  True insists (ValueError if the target cannot be packed); False never packs.
- Bad input raises ValueError before any compute: a target or draft autospec cannot serve exactly
  (`backends.attention.UnsupportedModel`: stateful, no KV cache, encoder-decoder, an attention
  implementation it cannot mask), a `generate` argument it does not honour (any argument beyond
  the ones in its signature that would change what `target.generate` returns, e.g.
  repetition_penalty=1.7, num_beams=4, output_scores=True, an unknown keyword; and, through
  `as_custom_generate`, logits processors and stopping criteria other than length and EOS),
  mismatched vocabularies or tokenizers, empty prompts, prompts that do not fit the model's
  context, max_new_tokens < 1, an invalid spec_len.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from loguru import logger
from tqdm.auto import tqdm

from autospec.backends.attention import attention_plan, text_config
from autospec.backends.drafters import ModelDrafter, NgramDrafter
from autospec.backends.hf import GenerationRequest, HFBackend, RequestResult
from autospec.backends.prepack import maybe_packed
from autospec.backends.sampling import SamplingConfig
from autospec.controllers import build_controller
from autospec.cost_model import CostModel
from autospec.loop import run_step
from autospec.runs import MemorySink
from autospec.summary import summarize
from autospec.types import StepRecord


@dataclass
class ServeResult:
    results: list[RequestResult]
    unfinished: list[int | str]
    records: list[StepRecord]
    wall_time_s: float
    prefill_time_s: float
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def num_output_tokens(self) -> int:
        return sum(len(r.output_ids) for r in self.results)

    @property
    def throughput_tps(self) -> float:
        return self.num_output_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0


class AutoSpec:
    def __init__(self, target: torch.nn.Module, draft: torch.nn.Module | str | None = "ngram",
                 controller: Any = "auto", *, cost_model: CostModel | str | None = None, max_spec_len: int = 8,
                 max_batch_size: int = 16, seed: int = 0, tokenizer: Any = None, draft_tokenizer: Any = None,
                 ngram_max_n: int = 3, sinks: Sequence[Any] = (), cpu_prepack: bool | None = None,
                 **controller_options: Any):
        if not isinstance(max_spec_len, int) or not 0 <= max_spec_len <= 64:
            raise ValueError(f"max_spec_len must be an integer in 0..64, got {max_spec_len!r}")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        self.target = target.eval()
        self.device = next(target.parameters()).device
        self.plans = {"target": attention_plan(target)}                 # refuses what cannot be served exactly
        self.draft = self._check_draft(draft, tokenizer, draft_tokenizer)
        if isinstance(self.draft, torch.nn.Module):
            self.plans["draft"] = attention_plan(self.draft)
        self.max_spec_len = max_spec_len if self.draft is not None else 0
        self.max_batch_size, self.seed, self.ngram_max_n = max_batch_size, seed, ngram_max_n
        if isinstance(cost_model, str):
            cost_model = CostModel.from_profile(cost_model)
        if cost_model is not None:
            check_profile_matches(cost_model, target)
        self.cost_model = cost_model
        self.controller = controller if not isinstance(controller, str) else build_controller(
            controller, max_spec_len=self.max_spec_len, cost_model=cost_model, seed=seed, **controller_options)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # one stream across calls
        self.memory = MemorySink()
        self.sinks = [self.memory, *sinks]
        self.last_serve: ServeResult | None = None
        self.prepacked = [maybe_packed(self.target, cpu_prepack)]       # True: the target must be packable
        if isinstance(self.draft, torch.nn.Module) and self.draft is not self.target:
            self.prepacked.append(maybe_packed(self.draft, False if cpu_prepack is False else None))

    # --- checks -----------------------------------------------------------------------------
    def _check_draft(self, draft: Any, tokenizer: Any, draft_tokenizer: Any) -> torch.nn.Module | str | None:
        if draft is None or draft == "ngram":
            return draft
        if isinstance(draft, str):
            raise ValueError(f"draft must be a model, 'ngram' or None, got {draft!r}")
        target_vocab, draft_vocab = text_config(self.target).vocab_size, text_config(draft).vocab_size
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
        return summarize(self.records)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, do_sample: bool | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, generation_config: Any = None,
                 **kwargs: Any) -> torch.Tensor:
        """Like `target.generate(...)`, speculatively; see the module docstring. Any other argument
        that would change what `target.generate` returns raises ValueError naming it, before compute."""
        refuse_unhonoured(kwargs)
        args = resolve_generation_args(self.target, generation_config, max_new_tokens=max_new_tokens,
                                       eos_token_id=eos_token_id, pad_token_id=pad_token_id, do_sample=do_sample,
                                       temperature=temperature, top_k=top_k, top_p=top_p)
        prompts = split_prompts(input_ids, attention_mask)
        self._check_lengths(prompts, args["max_new_tokens"])
        requests = [GenerationRequest(p, args["max_new_tokens"], i) for i, p in enumerate(prompts)]
        backend = self._backend(args, requests)
        self._run(backend, requests, progress=False)
        outputs = [backend.results[i].output_ids for i in range(len(prompts))]
        return assemble_output(input_ids, outputs, args["pad_token_id"])

    def as_custom_generate(self):
        """A callable for `target.generate(..., custom_generate=spec.as_custom_generate())`."""
        def custom_generate(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
                            **model_kwargs):
            if model is not self.target:
                raise ValueError("this custom_generate belongs to another target model")
            refuse_processors(logits_processor, stopping_criteria)
            return self.generate(input_ids, attention_mask=model_kwargs.get("attention_mask"),
                                 generation_config=generation_config)
        return custom_generate

    def serve(self, requests: Sequence[GenerationRequest | dict | Sequence[int]], *, max_new_tokens: int = 64,
              eos_token_id: int | list[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, progress: bool = True) -> ServeResult:
        """Continuous batching over `requests` (arrival_s offsets honoured on the wall clock)."""
        reqs = [as_request(r, i, max_new_tokens) for i, r in enumerate(requests)]
        self._check_lengths([r.prompt_ids for r in reqs], max(r.max_new_tokens for r in reqs))
        args = resolve_generation_args(self.target, None, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                       pad_token_id=None, do_sample=do_sample, temperature=temperature,
                                       top_k=top_k, top_p=top_p)
        backend = self._backend(args, reqs)
        t0 = time.perf_counter()
        records, error = self._run(backend, reqs, progress=progress, catch=True)
        done = [backend.results[r.request_id] for r in reqs if r.request_id in backend.results]
        result = ServeResult(done, backend.unfinished_ids(), records, time.perf_counter() - t0,
                             backend.prefill_time_s, error, summarize(records) if records else {})
        if error:
            logger.error(f"serve stopped early ({error}); {len(done)} requests finished, "
                         f"{len(result.unfinished)} did not: {result.unfinished}")
        self.last_serve = result
        return result

    # --- internals ----------------------------------------------------------------------------
    def _check_lengths(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        limit = getattr(text_config(self.target), "max_position_embeddings", None)
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty: every row needs at least one token")
            if limit and len(p) + max_new_tokens + self.max_spec_len > limit:
                raise ValueError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} and "
                                 f"spec_len up to {self.max_spec_len} it exceeds the model's context of {limit}")

    def _backend(self, args: dict[str, Any], requests: list[GenerationRequest]) -> HFBackend:
        sampling = SamplingConfig(do_sample=args["do_sample"], temperature=args["temperature"],
                                  top_k=args["top_k"], top_p=args["top_p"])
        slots = max(len(r.prompt_ids) + r.max_new_tokens for r in requests) + 2 * self.max_spec_len + 2
        generator = self.generator
        rows = self.max_batch_size
        drafter = None
        if self.draft == "ngram":
            drafter = NgramDrafter(max_n=self.ngram_max_n, device=self.device)
        elif self.draft is not None:
            drafter = ModelDrafter(self.draft, sampling, rows, slots, generator, plan=self.plans["draft"])
        backend = HFBackend(self.target, drafter, sampling=sampling, eos_token_ids=args["eos_token_ids"],
                            max_batch_size=rows, max_spec_len=self.max_spec_len, slots_capacity=slots,
                            generator=generator, plan=self.plans["target"])
        backend.submit(requests)
        return backend

    def _run(self, backend: HFBackend, requests: list[GenerationRequest], progress: bool,
             catch: bool = False) -> tuple[list[StepRecord], str | None]:
        records: list[StepRecord] = []
        bar = tqdm(total=len(requests), desc="requests", unit="req", disable=not progress)
        try:
            with contextlib.ExitStack() as stack:
                for packed in filter(None, self.prepacked):
                    stack.enter_context(packed.active())
                self._loop(backend, records, bar)
        except Exception as exc:  # a failure mid-serve keeps what finished
            if not catch:
                raise
            return records, f"{type(exc).__name__}: {exc}"
        finally:
            bar.close()
        return records, None

    def _loop(self, backend: HFBackend, records: list[StepRecord], bar: tqdm) -> None:
        backend.start()
        while not backend.done():
            records.append(run_step(backend, self.controller, self.sinks))
            bar.update(len(backend.results) - bar.n)


def check_profile_matches(cost_model: CostModel, target: torch.nn.Module) -> None:
    """A profile that records its target's shape must describe this target."""
    shape = cost_model.profile.extra.get("target_shape")
    if not shape:
        return
    actual = {k: getattr(target.config, k, None) for k in shape}
    if actual != shape:
        raise ValueError(f"profile {cost_model.name} was measured for a target with {shape}, but this target has "
                         f"{actual}: profile this model pair with `autospec profile`")


REQUEST_KEYS = {"prompt_ids", "max_new_tokens", "request_id", "arrival_s"}


def as_request(item: Any, index: int, max_new_tokens: int) -> GenerationRequest:
    if isinstance(item, GenerationRequest):
        return item
    if isinstance(item, dict):
        unknown = sorted(set(item) - REQUEST_KEYS)
        if unknown:
            raise ValueError(f"request {index} has keys autospec does not honour: {unknown} (a request takes "
                             f"{sorted(REQUEST_KEYS)}; per-request sampling and stop settings are not supported yet)")
        return GenerationRequest(list(item["prompt_ids"]), int(item.get("max_new_tokens", max_new_tokens)),
                                 item.get("request_id", index), float(item.get("arrival_s", 0.0)))
    return GenerationRequest(list(item), max_new_tokens, index)


def resolve_generation_args(target: torch.nn.Module, generation_config: Any, **explicit: Any) -> dict[str, Any]:
    """Explicit arguments, else `generation_config`'s, else the target's own generation config,
    else transformers' own defaults (so sampling with nothing set uses top_k=50, as HF does). A
    config that sets a field autospec does not honour raises ValueError naming it."""
    sources = {"the call's generation_config": generation_config,
               "the model's generation_config": getattr(target, "generation_config", None)}
    configs = [c for c in sources.values() if c is not None]
    for source, config in sources.items():
        if config is not None:
            refuse_unhonoured_config(config, source)

    def pick(name: str, default: Any = None) -> Any:
        if explicit.get(name) is not None:
            return explicit[name]
        for config in configs:
            if getattr(config, name, None) is not None:
                return getattr(config, name)
        return default

    eos = pick("eos_token_id")
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    pad = pick("pad_token_id")
    max_new = pick("max_new_tokens")
    if max_new is None:
        raise ValueError("max_new_tokens is required (or a generation_config that sets it)")
    do_sample = bool(pick("do_sample", False))
    return {"max_new_tokens": max_new, "eos_token_ids": eos_ids, "pad_token_id": pad if pad is not None else (eos_ids or [0])[0],
            "do_sample": do_sample, "temperature": float(pick("temperature", 1.0)) if do_sample else 1.0,
            "top_k": pick("top_k", hf_defaults().get("top_k")) if do_sample else None,
            "top_p": pick("top_p") if do_sample else None}


HONOURED_FIELDS = {"max_length", "do_sample", "temperature", "top_k", "top_p", "use_cache"}
ASSISTANT_FIELDS = {"num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
                    "assistant_lookbehind", "target_lookbehind"}            # inert without an assistant model
BEAM_FIELDS = {"early_stopping", "length_penalty", "num_beam_groups", "diversity_penalty"}   # inert at num_beams 1
UNSET_FIELDS = ("min_new_tokens", "min_p", "sequence_bias", "guidance_scale", "stop_strings", "max_time",
                "penalty_alpha", "dola_layers", "constraints", "force_words_ids", "prompt_lookup_num_tokens",
                "watermarking_config")                                       # change the output whenever set


def hf_defaults() -> dict[str, Any]:
    """The values transformers' generate uses for fields a GenerationConfig leaves unset."""
    from transformers import GenerationConfig
    return getattr(GenerationConfig, "_get_default_generation_params", dict)()


def refuse_unhonoured_config(config: Any, source: str) -> None:
    """A generation config may set only what autospec honours, or values that change nothing."""
    defaults = hf_defaults()
    inert = HONOURED_FIELDS | ASSISTANT_FIELDS
    if getattr(config, "num_beams", None) in (None, 1):
        inert |= BEAM_FIELDS
    for name in [n for n in defaults if n not in inert] + list(UNSET_FIELDS):
        value = getattr(config, name, None)
        if value is not None and not _same(value, defaults.get(name)):
            raise ValueError(f"{source} sets {name}={value!r}, which autospec does not honour yet, so it is refused "
                             "rather than ignored: unset it, or use the target's own generate")


# Arguments HF's generate takes that autospec's drafters replace: where to go instead.
DRAFTER_ARGUMENTS = {"assistant_model": "pass the draft model as AutoSpec(target, draft)",
                     "prompt_lookup_num_tokens": 'use AutoSpec(target, "ngram")'}


def refuse_unhonoured(kwargs: dict[str, Any]) -> None:
    """Extra `generate` arguments are accepted only where they change nothing (None, or the value
    transformers uses when the argument is absent); anything else raises ValueError naming it,
    never a silent drop. `max_length` always asks for `max_new_tokens` instead."""
    from transformers import GenerationConfig
    fields = vars(GenerationConfig())
    neutral = {**fields, **hf_defaults()}
    for name, value in kwargs.items():
        if value is None or (name in neutral and name != "max_length" and _same(value, neutral[name])):
            continue
        if name in DRAFTER_ARGUMENTS:
            raise ValueError(f"generate argument {name!r} is not taken by autospec: {DRAFTER_ARGUMENTS[name]}")
        if name == "max_length":
            raise ValueError("generate argument max_length is not taken by autospec: give max_new_tokens")
        kind = "generation argument" if name in fields else "argument (not a generation or mask argument)"
        raise ValueError(f"generate {kind} {name}={value!r} is not honoured by autospec, so it is refused rather "
                         "than ignored: drop it, or use the target's own generate")


HONOURED_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria"}   # what generation_config's length and EOS build


def refuse_processors(logits_processor: Any, stopping_criteria: Any) -> None:
    """`target.generate(custom_generate=...)` hands over HF's processors and criteria: those autospec
    does not apply raise ValueError naming them (an empty list, length and EOS pass)."""
    processors = [type(p).__name__ for p in (logits_processor or [])]
    if processors:
        raise ValueError(f"logits processors {processors} are not applied by autospec, so they are refused rather "
                         "than ignored (set by the call or the model's generation_config)")
    criteria = [type(c).__name__ for c in (stopping_criteria or []) if type(c).__name__ not in HONOURED_CRITERIA]
    if criteria:
        raise ValueError(f"stopping criteria {criteria} are not applied by autospec, so they are refused rather than "
                         "ignored")


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except Exception:                      # noqa: BLE001 - e.g. a tensor compared with a number
        return False


def split_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
    """[b, P] (left-padded) ids -> each row's real prompt tokens."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: every row needs at least one token")
    if attention_mask is None:
        return input_ids.tolist()
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    return [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]


def assemble_output(input_ids: torch.Tensor, outputs: list[list[int]], pad_token_id: int) -> torch.Tensor:
    """Prompt as given + each row's new tokens, right-padded with pad_token_id to the longest row."""
    width = max(len(o) for o in outputs)
    new = torch.full((len(outputs), width), pad_token_id, dtype=torch.long)
    for i, o in enumerate(outputs):
        new[i, : len(o)] = torch.tensor(o, dtype=torch.long)
    return torch.cat([input_ids.cpu(), new], dim=1).to(input_ids.device)
