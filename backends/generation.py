"""Resolving a `generate(...)` call the way `target.generate` resolves it.

Contract:
- `resolve_call(target, input_ids, attention_mask, generation_config, logits_processor,
  stopping_criteria, streamer, tokenizer, kwargs)` merges the call's arguments, its
  generation_config and the model's own through transformers' `_prepare_generation_config`, resolves
  max_length / max_new_tokens, EOS and pad as HF does, and returns a `Call`: the prompts, the
  budget, the sampling settings and, when anything beyond plain greedy / temperature / top-k /
  top-p is asked for, a `Processing` (HF's own processor list and stopping criteria, applied by
  the backend at every verified position).
- `resolve_generation_args(target, generation_config, check, **explicit)` (serve's path): explicit
  arguments, else the configs, else transformers' defaults; `refuse_unhonoured_config` refuses a
  config field the serve path does not apply. `split_prompts` / `assemble_output` turn generate's
  left-padded tensors into prompts and the outputs back; `vocabulary_limit` is one past the largest
  token id both models of a pair can embed.
- Every GenerationConfig field is in HONOURED_ARGUMENTS (applied, or changing nothing for a
  decoder-only model) or REFUSED_ARGUMENTS (ValueError naming it when set to a value that would
  change the output). Unknown keywords raise too, as HF raises for unused model kwargs. All of it
  before any compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from autospec.backends.attention import text_config
from autospec.backends.processing import Processing, View
from autospec.backends.sampling import SamplingConfig

# Applied as HF applies them (tests/backends/test_generate_args.py compares each with target.generate).
APPLIED = ("bad_words_ids", "begin_suppress_tokens", "do_sample", "encoder_repetition_penalty", "eos_token_id", "epsilon_cutoff", "eta_cutoff",
           "exponential_decay_length_penalty", "forced_bos_token_id", "forced_eos_token_id", "max_length",
           "max_new_tokens", "max_time", "min_length", "min_new_tokens", "min_p", "no_repeat_ngram_size",
           "num_return_sequences", "output_logits", "output_scores", "pad_token_id", "remove_invalid_values",
           "renormalize_logits", "repetition_penalty", "return_dict_in_generate", "sequence_bias", "stop_strings",
           "suppress_tokens", "temperature", "top_h", "top_k", "top_p", "typical_p", "use_cache")
# Change nothing for a decoder-only model fed input_ids at num_beams=1 without an assistant (HF
# ignores them there too): metadata, runtime knobs of HF's own cache and compile, beam-only and
# assistant-only settings; HF also ignores encoder_no_repeat_ngram_size here (it warns). The encoder
# repetition penalty is applied: for a decoder-only model HF's "encoder input" is the prompt.
INERT = ("assistant_confidence_threshold", "assistant_lookbehind", "bos_token_id", "cache_config",
         "cache_implementation", "compile_config", "continuous_batching_config", "decoder_start_token_id",
         "disable_compile", "diversity_penalty", "early_stopping", "encoder_no_repeat_ngram_size", "is_assistant", "length_penalty", "low_memory", "max_cache_len",
         "max_matching_ngram_size", "num_assistant_tokens", "num_assistant_tokens_schedule", "num_beam_groups",
         "prefill_chunk_size", "target_lookbehind", "transformers_version")
HONOURED_ARGUMENTS = {name: "applied" for name in APPLIED} | {name: "inert" for name in INERT}

# name -> a value that changes the output and is refused (None: the field is refused whenever set).
REFUSED_ARGUMENTS: dict[str, Any] = {
    "num_beams": 4, "penalty_alpha": 0.6, "dola_layers": "high", "constraints": None, "force_words_ids": [[5]],
    "guidance_scale": 1.5, "watermarking_config": None, "output_attentions": True, "output_hidden_states": True,
    "prompt_lookup_num_tokens": 3, "token_healing": True, "assistant_early_exit": 1, "assistant_ensemble_weight": 0.5,
    "speculation_type": None, "use_mtp": True,
}
ADVICE = {"prompt_lookup_num_tokens": 'use AutoSpec(target, "ngram")',
          "num_beams": "beam search is not speculative decoding; use the target's own generate",
          "assistant_model": "pass the draft model as AutoSpec(target, draft)"}
# generate() keywords that are not GenerationConfig fields.
REFUSED_CALL_ARGUMENTS = ("prefix_allowed_tokens_fn", "assistant_model", "negative_prompt_ids",
                          "negative_prompt_attention_mask", "custom_generate", "assistant_tokenizer", "inputs_embeds",
                          "synced_gpus", "trust_remote_code", "past_key_values", "position_ids")
NATIVE = {"TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"}   # SamplingConfig does these itself
LOOP_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria"}                        # the backend's budget and EOS


@dataclass
class Call:
    input_ids: torch.Tensor                      # [b, P] as given (after num_return_sequences expansion)
    attention_mask: torch.Tensor                 # [b, P]
    max_new_tokens: int
    eos_token_ids: list[int]
    pad_token_id: int
    sampling: SamplingConfig                     # the draft's (and, without processing, the target's)
    processing: Processing | None
    streamer: Any = None
    return_dict: bool = False
    output_scores: bool = False
    output_logits: bool = False
    views: list[View] = field(default_factory=list)


def refuse_call_arguments(kwargs: dict[str, Any]) -> None:
    for name in REFUSED_CALL_ARGUMENTS:
        value = kwargs.pop(name, None)
        if value is not None and not (name == "synced_gpus" and value is False):
            raise ValueError(f"generate argument {name!r} is not taken by autospec"
                             + (f": {ADVICE[name]}" if name in ADVICE else ", so it is refused rather than ignored"))


def refuse_config(config: Any) -> None:
    """Fields set to values that would change the output and that autospec does not apply."""
    from transformers import GenerationConfig
    defaults = {**vars(GenerationConfig()), **GenerationConfig._get_default_generation_params()}
    for name in REFUSED_ARGUMENTS:
        value = getattr(config, name, None)
        if value is not None and value is not False and not same_value(value, defaults.get(name)):
            advice = ADVICE.get(name, "unset it, or use the target's own generate")
            raise ValueError(f"generation argument {name}={value!r} is not honoured by autospec, so it is refused "
                             f"rather than ignored: {advice}")
    if config.use_cache is False:
        raise ValueError("generation argument use_cache=False is not honoured by autospec (speculative decoding "
                         "verifies drafts against its own KV cache)")


def same_value(value: Any, default: Any) -> bool:
    """value == default, False where the comparison itself fails (a tensor against a number)."""
    try:
        return bool(value == default)
    except Exception:                      # noqa: BLE001 - e.g. a tensor compared with a number
        return False


def prepare_config(target: Any, generation_config: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """HF's own merge (call > generation_config > model's > defaults); leftover model kwargs are refused."""
    refuse_call_arguments(kwargs)
    config, model_kwargs = target._prepare_generation_config(generation_config, **kwargs)
    fields = set(vars(config))                  # HF keeps output_attentions / output_hidden_states in both
    unknown = sorted(k for k, v in model_kwargs.items() if v is not None and k != "attention_mask" and k not in fields)
    if unknown:
        raise ValueError(f"generate arguments {unknown} are not generation arguments autospec knows (nor mask "
                         "arguments), so they are refused rather than ignored")
    refuse_config(config)
    return config, model_kwargs


def valid_budget(max_new_tokens: Any) -> bool:
    """An integer >= 1 (a bool is not one)."""
    return isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool) and max_new_tokens >= 1


def check_max_new_tokens(max_new_tokens: Any) -> None:
    if not valid_budget(max_new_tokens):
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")


def resolve_lengths(target: Any, config: Any, kwargs: dict[str, Any], generation_config: Any,
                    input_ids: torch.Tensor) -> int:
    """max_new_tokens as HF derives it, through HF's own `_prepare_generated_length` (which also sets
    the config's max_length / min_length that processors such as forced EOS read)."""
    def unset(name: str) -> bool:
        return all(v is None for v in (kwargs.get(name), getattr(generation_config, name, None),
                                       getattr(target.generation_config, name, None)))
    if config.max_new_tokens is None and unset("max_length"):
        raise ValueError("max_new_tokens is required (or max_length, or a generation_config that sets one)")
    if config.max_new_tokens is not None:
        check_max_new_tokens(config.max_new_tokens)
    width = input_ids.shape[1]
    target._prepare_generated_length(config, unset("max_length"), unset("min_length"), "input_ids", width, input_ids)
    new = int(config.max_length) - width
    if new < 1:
        raise ValueError(f"max_length={config.max_length} leaves no room after the prompt's {width} tokens: "
                         "give max_new_tokens")
    return new


def special_tokens(target: Any, config: Any, batch_size: int, device: torch.device) -> tuple[list[int], int]:
    """(EOS ids, pad id) as HF's `_prepare_special_tokens` sets them (pad falls back to the first EOS)."""
    target._prepare_special_tokens(config, True, device=device, batch_size=batch_size)
    eos = config._eos_token_tensor
    eos_ids = [] if eos is None else [int(t) for t in eos.reshape(-1).tolist() if int(t) >= 0]
    pad = config._pad_token_tensor
    return eos_ids, int(pad) if pad is not None else (eos_ids or [0])[0]


def build_processing(target: Any, config: Any, prompt_ids: torch.Tensor, logits_processor: Any, stopping_criteria: Any,
                     tokenizer: Any, device: torch.device, mask: torch.Tensor, want_scores: bool,
                     prepared_criteria: list | None = None) -> Processing | None:
    """HF's processor list and extra stopping criteria, or None when the native path is exact.
    `prepared_criteria`: criteria HF already built (custom_generate), used as they are."""
    from transformers import LogitsProcessorList, StoppingCriteriaList
    user = logits_processor if logits_processor is not None else LogitsProcessorList()

    def build(prompts: torch.Tensor, masks: torch.Tensor):
        return target._get_logits_processor(config, input_ids_seq_length=prompts.shape[1], encoder_input_ids=prompts,
                                            logits_processor=user, device=device,
                                            model_kwargs={"attention_mask": masks})
    names = {type(p).__name__ for p in build(prompt_ids, mask)}
    if prepared_criteria is None:
        criteria = target._get_stopping_criteria(config, tokenizer=tokenizer, stopping_criteria=(
            stopping_criteria if stopping_criteria is not None else StoppingCriteriaList()))
    extra = [c for c in (criteria if prepared_criteria is None else prepared_criteria)
             if type(c).__name__ not in LOOP_CRITERIA]
    needs = bool(names - NATIVE) or want_scores
    if not needs and not extra:
        return None
    return Processing(build if needs else None, StoppingCriteriaList(extra) if extra else None, device)


def sampling_settings(config: Any) -> SamplingConfig:
    if not config.do_sample:
        return SamplingConfig(do_sample=False)
    top_p = config.top_p if config.top_p is not None and config.top_p < 1.0 else None
    return SamplingConfig(do_sample=True, temperature=float(config.temperature or 1.0), top_k=config.top_k or None,
                          top_p=top_p)


def check_streamer(streamer: Any, input_ids: torch.Tensor) -> None:
    """HF hands the prompt to the streamer first (its own batch check raises there); autospec
    streams one row only, so any other streamer with a batch is refused the same way."""
    if streamer is None:
        return
    streamer.put(input_ids.cpu())
    if input_ids.shape[0] > 1:
        raise ValueError(f"{type(streamer).__name__} only supports batch size 1 in autospec (got "
                         f"{input_ids.shape[0]} rows)")


def expand_returns(config: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """num_return_sequences copies of each row, as HF's `_expand_inputs_for_generation` makes them."""
    n = int(config.num_return_sequences or 1)
    if n > 1 and not config.do_sample:
        raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different than 1 "
                         f"(got {n}).")
    return (input_ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)) if n > 1 else (input_ids, mask)


def resolve_call(target: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, generation_config: Any,
                 logits_processor: Any, stopping_criteria: Any, streamer: Any, tokenizer: Any,
                 kwargs: dict[str, Any], prepared_criteria: list | None = None) -> Call:
    raw = dict(kwargs)
    config, _ = prepare_config(target, generation_config, kwargs)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    eos_ids, pad = special_tokens(target, config, input_ids.shape[0], input_ids.device)
    mask = attention_mask if attention_mask is not None else \
        target._prepare_attention_mask_for_generation(input_ids, config, {})      # HF masks pad tokens it finds
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    ids, mask = expand_returns(config, input_ids, mask)
    max_new = resolve_lengths(target, config, raw, generation_config, ids)
    want_scores = bool(config.return_dict_in_generate and (config.output_scores or config.output_logits))
    processing = build_processing(target, config, ids, logits_processor, stopping_criteria, tokenizer,
                                  ids.device, mask, want_scores, prepared_criteria)
    check_streamer(streamer, ids)
    views = [View(row, m) for row, m in zip(ids.tolist(), mask.tolist())]
    return Call(ids, mask, max_new, eos_ids, pad, sampling_settings(config), processing, streamer,
                bool(config.return_dict_in_generate), bool(config.output_scores), bool(config.output_logits), views)


def user_processors(target: Any, config: Any, prepared: Any, input_ids: torch.Tensor, mask: Any) -> Any:
    """The user's own processors among those HF prepared for a custom_generate: HF merges them into
    the config's (a user one replaces the config's of its type), so they are those the config's own
    list does not hold as they are."""
    from transformers import LogitsProcessorList
    mask = mask if mask is not None else torch.ones_like(input_ids)
    own = {type(p): p for p in target._get_logits_processor(config, input_ids_seq_length=input_ids.shape[1],
                                                            encoder_input_ids=input_ids,
                                                            logits_processor=LogitsProcessorList(),
                                                            device=input_ids.device,
                                                            model_kwargs={"attention_mask": mask})}
    return LogitsProcessorList([p for p in (prepared or []) if not _same_state(p, own.get(type(p)))])


def _same_state(a: Any, b: Any) -> bool:
    if b is None or set(vars(a)) != set(vars(b)):
        return False
    for key, value in vars(a).items():
        other = vars(b)[key]
        if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            if not (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) and value.shape == other.shape
                    and torch.equal(value.cpu(), other.cpu())):
                return False
        elif not same_value(value, other):
            return False
    return True


def dict_output(sequences: torch.Tensor, results: list, call: Call) -> Any:
    """HF's GenerateDecoderOnlyOutput: sequences, and per generated position [b, V] scores / logits
    (NaN for a row past its end: HF computes those on pad tokens, autospec does not run them)."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput
    steps = sequences.shape[1] - call.input_ids.shape[1]

    def per_step(kind: str) -> tuple[torch.Tensor, ...]:
        rows = [getattr(r, kind) for r in results]
        vocab = rows[0].shape[-1]
        table = torch.full((len(rows), steps, vocab), float("nan"), device=rows[0].device)   # [b, T, V]
        for i, row in enumerate(rows):
            table[i, : len(row)] = row
        return tuple(table[:, t] for t in range(steps))
    return GenerateDecoderOnlyOutput(sequences=sequences, scores=per_step("scores") if call.output_scores else None,
                                     logits=per_step("logits") if call.output_logits else None)


# --- serve()'s arguments and generate()'s tensors (the engine's side of a call) ---------------------


def resolve_generation_args(target: torch.nn.Module, generation_config: Any, check: bool = True,
                            **explicit: Any) -> dict[str, Any]:
    """Explicit arguments, else `generation_config`'s, else the target's own generation config,
    else transformers' own defaults (so sampling with nothing set uses top_k=50, as HF does). With
    `check`, a config that sets a field this native path does not apply raises ValueError naming it."""
    sources = {"the call's generation_config": generation_config,
               "the model's generation_config": getattr(target, "generation_config", None)}
    configs = [c for c in sources.values() if c is not None]
    for source, config in sources.items():
        if config is not None and check:
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
        if value is not None and not same_value(value, defaults.get(name)):
            raise ValueError(f"{source} sets {name}={value!r}, which autospec does not honour yet, so it is refused "
                             "rather than ignored: unset it, or use the target's own generate")


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


def vocabulary_limit(target: torch.nn.Module, draft: Any) -> int:
    """One past the largest token id every model in the pair can embed."""
    models = [m for m in (target, draft) if isinstance(m, torch.nn.Module)]
    return min(_num_embeddings(m) for m in models)


def _num_embeddings(model: torch.nn.Module) -> int:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    return int(rows) if rows else int(text_config(model).vocab_size)
