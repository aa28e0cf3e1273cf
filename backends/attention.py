"""How a model's attention must be fed over autospec's ragged cache, and what autospec refuses.

Contract:
- `attention_plan(model)` -> `AttentionPlan`, or `UnsupportedModel` (a ValueError naming the model
  type and the reason) for a model autospec cannot run exactly: a stateful model (HF's own
  `_is_stateful`, or a config whose layer kinds are not attention: recurrent, state-space, linear
  attention), one with no KV cache, one whose forward takes no attention_mask (xLSTM: nothing could
  mask padding or rejected drafts), an encoder-decoder or cross-attention model, an attention
  implementation whose mask cannot be given per row, or layer kinds the model cannot take apart.
  It reads the model's config and class only: no forward runs.
- Layer kinds come from the config the way transformers reads them: `layer_types` when the config
  has it, else every layer `sliding_attention` when `sliding_window` is set (and not switched off
  by `use_sliding_window`) and the model's code builds a sliding mask, `chunked_attention` the same
  way for `attention_chunk_size`, else `full_attention`; `indexed_attention` (DeepSeek sparse attention) is causal over the keys its
  indexer picks, the indexer's own keys kept in the slot cache too. Each kind's visibility rule is
  transformers' own mask function
  (`masking_utils.causal_mask_function`, `sliding_window_causal_mask_function`,
  `chunked_causal_mask_function`), evaluated on REAL token positions (accepted tokens only), so
  the holes rejected drafts leave in the cache never shorten or lengthen a window.
- `mask_form`: `"bool"` (True = attend) for sdpa; `"additive"` (0 / finfo.min in the model's dtype)
  for eager, which adds the mask to the scores. flex attention is refused: with torch 2.13 on CPU
  transformers' own `generate` cannot compile it (inductor C++ error), so autospec cannot check
  its masks against it; flash attention takes no per-row 4D mask.
- `positions_from_slots`: the model's forward takes no `position_ids` (it derives positions or
  ALiBi biases from cache slots or from a 2D mask), or its attention carries a slot-indexed local
  window buffer. Such a model is fed HF's own layout: each row's tokens contiguous and
  right-aligned in the cache (compacted before every forward, padding only on the left), with a
  2D mask of the valid slots; then slot distances are real position distances, as in
  `target.generate`.
- `mask_for(plan, ...)`: the model-facing mask, one tensor when every layer has the same kind, or
  a dict keyed by kind for models that take one (transformers' `causal_mask_mapping`).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

FULL, SLIDING, CHUNKED = "full_attention", "sliding_attention", "chunked_attention"
INDEXED = "indexed_attention"             # sparse attention (DSA): causal mask, top-k keys picked by an indexer
ATTENTION_KINDS = (FULL, SLIDING, CHUNKED, INDEXED)
NO_ATTENTION_KINDS = ("moe", "mlp")          # layers transformers caches nothing for
CAUSAL_KINDS = (FULL, INDEXED)                # every earlier token visible (no window)
MASK_FORMS = {"sdpa": "bool", "eager": "additive"}
MASK_DICT_CHECK = re.compile(r"isinstance\(\s*(\w+\s*:=\s*)?attention_mask\s*,\s*dict\s*\)")
STATEFUL_KIND_WORDS = ("linear", "mamba", "conv", "recurrent", "rnn", "hybrid", "ssm", "lstm", "rwkv", "deltanet")


STATEFUL, NO_KV_CACHE, ENCODER_DECODER, NOT_CAUSAL, SLOT_POSITIONS, ATTENTION_IMPL, LAYER_KINDS, CACHED_FORWARD = (
    "stateful", "no-kv-cache", "encoder-decoder", "not-causal", "slot-positions", "attention-implementation",
    "layer-kinds", "cached-forward")
NO_MASK = "no-attention-mask"
# Families whose own cached forward in transformers 5.24 differs from their cache-free forward (one
# decode step after a 5-token prefill, tiny random float32 model, max |logit difference|), so no
# cache layout reproduces their `generate`; measured, not assumed (llama: 8e-8).
INCONSISTENT_CACHED_FORWARD = {"megatron-bert": 0.036, "xlm-roberta-xl": 0.022}


class UnsupportedModel(ValueError):
    """A model autospec cannot run exactly; the message names its type, the reason and what to do.
    `category` says which rule refused it (STATEFUL, NO_KV_CACHE, ENCODER_DECODER, ...)."""

    def __init__(self, message: str, category: str):
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class AttentionPlan:
    kinds: tuple[str, ...]                  # per layer: full / sliding / chunked attention
    sliding_window: int | None = None
    chunk_size: int | None = None
    mask_form: str = "bool"                 # "bool" | "additive"
    keyed: bool = False                     # the model takes a dict of masks keyed by layer kind
    positions_from_slots: bool = False      # feed HF's contiguous right-aligned layout + a 2D mask
    takes_position_ids: bool = True         # the forward has a `position_ids` input

    @property
    def distinct_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.kinds))


FULL_BOOL = AttentionPlan(kinds=(FULL,))


def text_config(model: torch.nn.Module):
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def attention_plan(model: torch.nn.Module) -> AttentionPlan:
    """The plan for feeding `model`, or UnsupportedModel naming why it cannot be served exactly."""
    config = text_config(model)
    check_servable(model, config)
    kinds = layer_kinds(model, config)
    check_kinds(model, kinds)
    keyed = len(set(kinds)) > 1
    if keyed and not takes_mask_dict(model):
        refuse(model, f"its layers mix {sorted(set(kinds))} but its forward takes one mask for all layers", LAYER_KINDS)
    return AttentionPlan(kinds=kinds, sliding_window=getattr(config, "sliding_window", None),
                         chunk_size=getattr(config, "attention_chunk_size", None),
                         mask_form=mask_form(model), keyed=keyed,
                         positions_from_slots=positions_from_slots(model),
                         takes_position_ids=takes_position_ids(model))


def refuse(model: torch.nn.Module, reason: str, category: str) -> None:
    model_type = getattr(model.config, "model_type", None) or type(model).__name__
    raise UnsupportedModel(f"autospec cannot serve {type(model).__name__} (model type {model_type!r}) exactly: {reason}. "
                           "Use the model's own `generate` for it.", category)


def check_servable(model: torch.nn.Module, config) -> None:
    """Refuse what speculative decoding over a KV cache cannot run exactly."""
    if getattr(model.config, "is_encoder_decoder", False):
        refuse(model, "it is an encoder-decoder model (autospec serves decoder-only causal LMs)", ENCODER_DECODER)
    if getattr(config, "add_cross_attention", False):
        refuse(model, "it has cross-attention layers (autospec serves decoder-only causal LMs)", ENCODER_DECODER)
    if getattr(config, "causal", True) is False or getattr(config, "is_causal", True) is False:
        refuse(model, "its attention is bidirectional (its config says causal=False): it is not a causal LM",
               NOT_CAUSAL)
    gap = INCONSISTENT_CACHED_FORWARD.get(getattr(model.config, "model_type", ""))
    if gap is not None:
        refuse(model, f"transformers' own cached forward for it differs from its cache-free forward (by {gap} in "
                      "the logits after one cached step), so no cache layout reproduces its generate", CACHED_FORWARD)
    if getattr(model, "_is_stateful", False):
        refuse(model, "it is stateful (recurrent / state-space / linear-attention state lives outside a KV cache, "
                      "so rejected drafts cannot be rolled back)", STATEFUL)
    forward = inspect.signature(model.forward).parameters
    if "cache" not in forward and "past_key_values" not in forward:
        refuse(model, "its forward takes no KV cache", NO_KV_CACHE)
    if getattr(config, "use_cache", True) is False:
        refuse(model, "its config sets use_cache=False", NO_KV_CACHE)
    if "attention_mask" not in forward:
        refuse(model, "its forward takes no attention_mask, so padding, other rows' slots and rejected drafts cannot "
                      "be masked out (a recurrent model such as xLSTM keeps its state in the cache instead)", NO_MASK)
    check_positions(model)


def layer_kinds(model: torch.nn.Module, config) -> tuple[str, ...]:
    """Per-layer attention kind, as transformers builds the model's masks: `layer_types` when the
    config declares them, else one kind for every layer, sliding / chunked only when the config sets
    the window AND the model's code builds that mask (a config may carry a window only its
    flash-attention path reads: refused, see below). Layers without attention (`moe`, `mlp`) are left out."""
    declared = getattr(config, "layer_types", None)
    n = getattr(config, "num_hidden_layers", None) or 1
    if declared:
        return tuple(k for k in declared if k not in NO_ATTENTION_KINDS)
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        if not _source_mentions(model, "create_sliding_window_causal_mask"):
            refuse(model, f"its config sets sliding_window={config.sliding_window} but its code builds full-attention "
                          "masks, so transformers' own cache drops keys that its mask shows: its output depends on "
                          "how it is cached", LAYER_KINDS)
        return (SLIDING,) * n
    if getattr(config, "attention_chunk_size", None) is not None and _source_mentions(model, "create_chunked_causal_mask"):
        return (CHUNKED,) * n
    return (FULL,) * n


def _source_mentions(model: torch.nn.Module, pattern: str | re.Pattern) -> bool:
    """Whether the forward of any module class in the model contains `pattern`."""
    for cls in {type(m) for m in model.modules()}:
        try:
            source = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            continue
        if (pattern.search(source) if isinstance(pattern, re.Pattern) else pattern in source):
            return True
    return False


def check_kinds(model: torch.nn.Module, kinds: tuple[str, ...]) -> None:
    unknown = sorted(set(kinds) - set(ATTENTION_KINDS))
    if not unknown:
        return
    stateful = [k for k in unknown if any(word in k for word in STATEFUL_KIND_WORDS)]
    if stateful:
        refuse(model, f"it is stateful: its layer kinds {unknown} keep recurrent / state-space / convolution state "
                      "that cannot be rolled back after a rejected draft", STATEFUL)
    refuse(model, f"its layer kinds {unknown} are neither full, sliding, chunked nor indexed attention, so autospec "
                  "cannot mask them", LAYER_KINDS)


def mask_form(model: torch.nn.Module) -> str:
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    form = MASK_FORMS.get(implementation)
    if form is None:
        refuse(model, f'attn_implementation="{implementation}" is not one autospec masks exactly over its ragged cache '
                      '(it gives sdpa and eager per-row 4D masks; flash attention takes none, flex attention is '
                      'untested here); load the model with attn_implementation="sdpa" or "eager"', ATTENTION_IMPL)
    return form


def takes_mask_dict(model: torch.nn.Module) -> bool:
    """Whether the decoder's forward accepts masks keyed by layer kind (transformers' convention:
    `if not isinstance(causal_mask_mapping := attention_mask, dict): ...build them...`)."""
    return _source_mentions(model, MASK_DICT_CHECK)


def positions_from_slots(model: torch.nn.Module) -> bool:
    """The model derives positions from cache slots: no `position_ids` input (ALiBi over slots or
    from a 2D mask), ALiBi from a 2D mask (`config.alibi`), or a local-window buffer indexed by slot."""
    if not takes_position_ids(model):
        return True
    if getattr(text_config(model), "alibi", False):
        return True
    return any(_is_local_window_buffer(b) for name, b in model.named_buffers() if name.endswith(".bias"))


def takes_position_ids(model: torch.nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def check_positions(model: torch.nn.Module) -> None:
    """Refuse a model that numbers absolute positions by cache slot: it takes no `position_ids` yet
    has a position embedding, so its positions shift with padding and with rejected drafts."""
    if takes_position_ids(model):
        return
    embeddings = sorted({type(m).__name__ for m in model.modules() if _is_position_embedding(m)})
    if embeddings:
        refuse(model, f"its forward takes no position_ids, so its position embedding ({', '.join(embeddings)}) counts "
                      "cache slots, which ragged speculative rows cannot reproduce (its own batched generate shifts "
                      "positions with the padding)", SLOT_POSITIONS)


def _is_position_embedding(module: torch.nn.Module) -> bool:
    name = type(module).__name__
    return any(word in name for word in ("Positional", "PositionEmbedding", "Rotary"))


def _is_local_window_buffer(buffer: torch.Tensor) -> bool:
    """A square boolean [.., N, N] buffer that is causal but not full lower-triangular (a window)."""
    if buffer.dtype != torch.bool or buffer.dim() < 2 or buffer.shape[-1] != buffer.shape[-2]:
        return False
    square = buffer.reshape(-1, *buffer.shape[-2:])[0]
    return bool(torch.equal(square, square.tril())) and not bool(square.tril().all())


# --- masks ---------------------------------------------------------------------------------------
def visible(plan: AttentionPlan, kind: str, q_pos: torch.Tensor, kv_pos: torch.Tensor) -> torch.Tensor:
    """[b, q] query positions x [b, kv] key positions -> [b, q, kv] bool, transformers' rule for `kind`."""
    from transformers import masking_utils as mu
    if kind == SLIDING:
        rule = mu.sliding_window_causal_mask_function(plan.sliding_window)
    elif kind == CHUNKED:
        rule = mu.chunked_causal_mask_function(plan.chunk_size, torch.zeros(q_pos.shape[0], dtype=torch.long,
                                                                            device=q_pos.device))
    else:                                                       # full and indexed attention
        rule = mu.causal_mask_function
    batch = torch.arange(q_pos.shape[0], device=q_pos.device)[:, None, None]
    return rule(batch, None, q_pos[:, :, None], kv_pos[:, None, :])


def as_model_mask(mask: torch.Tensor, form: str, dtype: torch.dtype) -> torch.Tensor:
    """Boolean [.., q, kv] (True = attend) -> the form the attention implementation expects."""
    if form == "bool":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
