"""Tiny random models of every causal-LM family in the installed transformers (for the family matrix).

`tiny_config(model_type, **overrides)` shrinks the family's own config class (its defaults, with
every size field it has set small); `build(model_type, ...)` makes a float32 model with a fixed
seed. `BUILD_SKIPS` names the families that cannot be built tiny here, each with its reason.
"""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

VOCAB = 128
HIDDEN = 64
HEADS = 4
LAYERS = 4          # enough for interleaved layer kinds (e.g. 3 sliding + 1 full)

SIZES = {
    "vocab_size": VOCAB, "hidden_size": HIDDEN, "d_model": HIDDEN, "n_embd": HIDDEN, "n_embed": HIDDEN,
    "embed_dim": HIDDEN, "intermediate_size": 2 * HIDDEN, "ffn_dim": 2 * HIDDEN, "n_inner": 2 * HIDDEN,
    "ffn_hidden_size": 2 * HIDDEN, "moe_intermediate_size": HIDDEN, "shared_expert_intermediate_size": HIDDEN,
    "expert_intermediate_size": HIDDEN, "intermediate_size_mlp": 2 * HIDDEN,
    "num_hidden_layers": LAYERS, "n_layer": LAYERS, "num_layers": LAYERS, "n_layers": LAYERS,
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS, "num_heads": HEADS,
    "num_key_value_heads": 2, "n_kv_heads": 2, "multi_query_group_num": 2, "head_dim": HIDDEN // HEADS,
    "kv_channels": HIDDEN // HEADS, "max_position_embeddings": 512, "n_positions": 512, "max_seq_len": 512,
    "n_ctx": 512, "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "moe_k": 2, "n_shared_experts": 1, "num_shared_experts": 1,
    "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "kv_lora_rank": 16, "q_lora_rank": 32,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "qk_head_dim": 16,
    "rotary_dim": 8, "rotary_emb_base": 10000, "window_size": 8, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": False, "use_cache": True,
    "encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
    "decoder_attention_heads": HEADS, "encoder_ffn_dim": 2 * HIDDEN, "decoder_ffn_dim": 2 * HIDDEN,
    "num_encoder_layers": LAYERS, "num_decoder_layers": LAYERS, "d_ff": 2 * HIDDEN, "d_kv": HIDDEN // HEADS,
}

# Families that cannot be built tiny here, or whose own `generate` fails on the tiny config (the
# matrix skips them with these reasons; a listed family that builds again fails the matrix).
BUILD_SKIPS: dict[str, str] = {
    "blt": "its config has no num_hidden_layers (separate local and global stacks); target.generate fails on it",
    "cohere_compass_text": "its config class raises KeyError('full_attention') when its layer pattern is shrunk",
    "dbrx": "DbrxAttentionConfig has no rope_theta: the config class cannot build a model from its defaults",
    "dory": "target.generate itself fails on the tiny config (looped layers slice past keys by the window)",
    "gemma3n": "needs the timm package for its vision tower; its text model is in the matrix (gemma3n_text)",
    "gemma4_assistant": "its config validation rejects the shrunk sizes (hidden_size_per_layer_input must be 0)",
    "hrm_text": "target.generate itself fails on the tiny config (looped stacks index cache layers past the count)",
    "kolibri1_1": "target.generate itself fails on the tiny config (KeyError on a layer index in its indexer)",
    "lfm2_moe": "its config class cannot be built from its defaults (TypeError on a None layer pattern)",
    "musicgen": "an audio encoder-decoder whose config lacks the dropout its causal-LM class reads",
    "musicgen_melody": "an audio encoder-decoder whose config lacks the dropout its causal-LM class reads",
    "qwen4_exp": "its config defaults leave the head sizes None",
    "qwen4_exp_text": "its config defaults leave the head sizes None",
    "reformer": "its LM head needs is_decoder=True and chunked LSH attention set up beyond the defaults",
    "xmod": "target.generate needs set_default_language() first (language adapters)",
}


def causal_lm_model_types() -> list[str]:
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def tiny_config(model_type: str, **overrides):
    config = AutoConfig.for_model(model_type)
    for cfg in _all_configs(config):
        layers = vars(cfg).get("num_hidden_layers")
        for name, value in SIZES.items():
            _try_set(cfg, name, value)
        for name, value in list(vars(cfg).items()):            # per-layer lists (layer_types, patterns ...)
            if isinstance(value, list) and layers and len(value) == layers and layers > LAYERS:
                _try_set(cfg, name, _shrink_list(value, LAYERS), lists=True)
        _try_set(cfg, "num_kv_shared_layers", 0)     # shared KV layers: see the +kv_sharing variants
        if "qk_rope_head_dim" in vars(cfg):             # multi-head latent attention: rope on its own dims
            _try_set(cfg, "head_dim", cfg.qk_rope_head_dim)
            _try_set(cfg, "num_key_value_heads", HEADS)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name, value in overrides.items():
        setattr(text, name, value)
    return config


def _all_configs(config) -> list:
    """The config and its nested sub-configs (text, vision, audio ...), each once."""
    found, stack = [], [config]
    while stack:
        cfg = stack.pop()
        if any(cfg is f for f in found):
            continue
        found.append(cfg)
        stack.extend(v for v in vars(cfg).values() if hasattr(v, "to_dict") and hasattr(v, "model_type"))
    return found


def _try_set(cfg, name: str, value, lists: bool = False) -> None:
    try:
        if name in vars(cfg) or name in getattr(cfg, "attribute_map", {}):
            if lists or not isinstance(getattr(cfg, name), (list, dict)):
                setattr(cfg, name, value)
    except Exception:       # read-only properties and per-layer attributes keep their defaults
        pass


def _shrink_list(items: list, n: int) -> list:
    """The first n entries, keeping at least one of each kind that appears in the full list."""
    head = list(items[:n])
    for kind in dict.fromkeys(items):
        if kind not in head:
            head[-1] = kind
    return head


def build(model_type: str, attn_implementation: str | None = None, seed: int = 0, **overrides):
    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)
    return model.eval()


# --- the family matrix ---------------------------------------------------------------------------
NEW_TOKENS = 14
# (batch size, controller, drafter, max_batch_size): every spec_len 0 / 3 / 7 / auto, both drafters,
# batch 1, 3 and 8, ragged left-padded prompts, EOS mid-run at batch 8, continuous batching (8 rows, 3 slots).
RUNS = [(1, "fixed:3", "draft", 4), (1, "auto", "ngram", 4), (3, "fixed:0", "draft", 4), (3, "fixed:7", "ngram", 4),
        (3, "auto", "draft", 4), (8, "fixed:7", "draft", 3), (8, "fixed:3", "ngram", 3), (8, "auto", "draft", 3)]
EAGER_RUNS = [(3, "fixed:3", "draft", 4), (8, "auto", "ngram", 3)]


WINDOW = 5              # smaller than prompt + output, so sliding / chunked layers really slide
ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
SLIDING_TAIL = ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
# Configurations a family's defaults do not reach: (model type, config fields).
VARIANTS = {
    "falcon+alibi": ("falcon", {"alibi": True}),
    "qwen2+sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": WINDOW, "layer_types": SLIDING_TAIL}),
    "qwen2_moe+sliding": ("qwen2_moe", {"use_sliding_window": True, "sliding_window": WINDOW,
                                        "layer_types": SLIDING_TAIL}),
    "gemma3n_text+kv_sharing": ("gemma3n_text", {"num_kv_shared_layers": 2, "layer_types": ALTERNATING}),
    "gemma4_text+kv_sharing": ("gemma4_text", {"num_kv_shared_layers": 2, "layer_types": ALTERNATING}),
    "mixtral+sliding": ("mixtral", {"sliding_window": WINDOW}),
    "phi3+sliding": ("phi3", {"sliding_window": WINDOW}),
    "phimoe+sliding": ("phimoe", {"sliding_window": WINDOW}),
    "starcoder2+sliding": ("starcoder2", {"sliding_window": WINDOW}),
    "lfm2+conv": ("lfm2", {"layer_types": ["conv", "full_attention", "conv", "full_attention"]}),
    "qwen3+sliding": ("qwen3", {"use_sliding_window": True, "sliding_window": WINDOW, "layer_types": SLIDING_TAIL}),
}


def matrix_entries() -> list[str]:
    return causal_lm_model_types() + sorted(VARIANTS)


WINDOW_FIELDS = ("sliding_window", "attention_chunk_size", "window_size")


def window_overrides(model_type: str) -> dict:
    """Shrink the family's own window fields (sliding window, attention chunk, local window)."""
    text = tiny_config(model_type)
    text = text.get_text_config(decoder=True) if hasattr(text, "get_text_config") else text
    return {n: WINDOW for n in WINDOW_FIELDS if isinstance(getattr(text, n, None), int)}


def family_group(model_type: str) -> str:
    """'decoder-only', 'encoder-decoder' (the decoder half of such a family) or 'encoder' (an
    encoder family run as a decoder with is_decoder=True)."""
    import inspect
    import transformers
    if getattr(AutoConfig.for_model(model_type), "is_encoder_decoder", False):
        return "encoder-decoder"
    cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type], None)
    if cls is not None and "is_decoder" in inspect.getsource(cls.__init__):
        return "encoder"
    return "decoder-only"


def check_family(model_type: str) -> dict:
    """Build the family tiny and compare AutoSpec's greedy output with the target's own generate
    (every failure is reported in the result, never raised: results cross process boundaries)."""
    try:
        return _check_family(model_type)
    except Exception as exc:                      # noqa: BLE001
        return {"model_type": model_type, "group": "?", "status": "unbuildable",
                "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _check_family(model_type: str) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from loguru import logger
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    logger.disable("autospec")
    family, extra = VARIANTS.get(model_type, (model_type, {}))
    result = {"model_type": model_type, "group": family_group(family)}
    overrides = {**window_overrides(family), **extra}
    result["window"] = {k: v for k, v in overrides.items() if k in WINDOW_FIELDS}
    for attn, runs in ((None, RUNS), ("eager", EAGER_RUNS)):
        try:
            pair = build(family, attn, 0, **overrides), build(family, attn, 1, **overrides)
        except Exception as exc:                  # noqa: BLE001 - reported as unbuildable, with the cause
            result["eager" if attn else "default"] = {"status": "unbuildable",
                                                      "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        if attn is None:
            result["attn"] = pair[0].config._attn_implementation
            result["config_model_type"] = pair[0].config.model_type
        result["eager" if attn else "default"] = _check_pair(*pair, runs)
    default = result["default"]
    result["status"], result["reason"] = default["status"], default.get("reason", "")
    return result


def _check_pair(target, draft, runs) -> dict:
    from autospec import AutoSpec
    from autospec.backends.attention import UnsupportedModel
    try:
        AutoSpec(target, draft)
        AutoSpec(target, "ngram")
    except UnsupportedModel as exc:
        return {"status": "refused", "reason": str(exc), "category": exc.category}
    except Exception as exc:                      # noqa: BLE001 - a crash is a failure of the family
        return {"status": "error", "reason": f"AutoSpec(...) raised {type(exc).__name__}: {str(exc)[:300]}"}
    try:
        references = {b: _reference(target, b) for b in sorted({run[0] for run in runs})}
    except Exception as exc:                      # noqa: BLE001 - transformers' own generate fails on this config
        return {"status": "unbuildable", "reason": f"target.generate fails: {type(exc).__name__}: {str(exc)[:200]}"}
    notes = set()
    try:
        for batch_size, controller, drafter, max_batch_size in runs:
            ids, mask, eos, ref = references[batch_size]
            spec = AutoSpec(target, draft if drafter == "draft" else "ngram", controller=controller,
                            max_batch_size=max_batch_size)
            out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=0)
            if out.shape == ref.shape and torch.equal(out, ref):
                continue
            if _hf_self_consistent(target, ids, mask, eos, ref) or not _equals_unpadded(target, ids, mask, eos, out):
                return {"status": "different",
                        "reason": f"batch {batch_size}, {controller}, {drafter}: tokens differ from target.generate"}
            notes.add("target.generate's batched output shifts with left padding (its generate passes no "
                      "position_ids); autospec equals its unpadded per-row output")
    except Exception as exc:                      # noqa: BLE001 - a crash is a failure of the family
        return {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"status": "exact", "notes": sorted(notes)}


def _reference(target, batch_size: int):
    ids, mask, eos = _workload(target, batch_size)
    return ids, mask, eos, _hf_greedy(target, ids, mask, eos)


def _workload(target, batch_size: int):
    from tests.backends.tiny_models import mid_run_eos, ragged_batch
    ids, mask = ragged_batch(batch_size, 100, seed=batch_size, min_len=3, max_len=12)
    eos = -1
    if batch_size == 8:
        eos = mid_run_eos(_hf_greedy(target, ids, mask, -1), ids.shape[1])
    return ids, mask, eos


def _hf_greedy(target, ids, mask, eos):
    with torch.no_grad():
        return target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                               eos_token_id=eos, pad_token_id=0)


def _unpadded_rows(target, ids, mask, eos) -> list[torch.Tensor]:
    """Each row's new tokens from the target's own generate on that row alone, unpadded."""
    rows = []
    for i in range(ids.shape[0]):
        row = ids[i : i + 1, mask[i].bool()]
        rows.append(_hf_greedy(target, row, torch.ones_like(row), eos)[0, row.shape[1]:])
    return rows


def _hf_self_consistent(target, ids, mask, eos, ref) -> bool:
    """Whether the target's batched generate equals its per-row unpadded generate."""
    return _equals_unpadded(target, ids, mask, eos, ref)


def _equals_unpadded(target, ids, mask, eos, out) -> bool:
    return all(torch.equal(alone, out[i, ids.shape[1]:][: len(alone)])
               for i, alone in enumerate(_unpadded_rows(target, ids, mask, eos)))
