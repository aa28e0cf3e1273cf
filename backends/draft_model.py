"""A distilled draft model and its checkpoint format.

Contract:
- `DraftLM` is the target's first `num_layers` decoder layers (its own copies) and final norm,
  reading the target's embedding and output head (shared, frozen; a subset head is a copy of its
  rows, made once): the target's vocabulary by construction. Its head may be restricted to a
  vocabulary subset (`vocab_subset`); tokens outside
  it get logit -inf, which greedy verification and rejection sampling both handle exactly. It
  answers the HF causal-LM call the backends make (`forward(input_ids, position_ids,
  attention_mask, cache=..., logits_to_keep=...)` -> `.logits` over the full vocabulary).
- A saved draft is `draft.safetensors` (its own weights in bfloat16 + the subset) and
  `draft_config.json` (layer count, the target's shape, the weights' sha256, the training record).
  `load_draft(target, folder)` rebuilds it offline and raises `DraftCheckpointError` naming the
  problem for a missing, corrupted, truncated or mismatched checkpoint.
- `hf_draft_folder(kind, target_dir, out)` writes a draft as a plain HF checkpoint folder that other
  engines load (vLLM's `draft_model`): 'first:N' (the target's first N layers) or 'distilled' (the
  shipped draft's layers and norm on the target's embedding). Such a folder has the target's FULL
  head: the shipped draft's vocabulary subset cannot be written in that format, so its greedy
  proposals there may differ from autospec's (only acceptance changes; the target verifies).
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from autospec.backends.drafters import forward_kwargs
from autospec.backends.models import truncated_config, truncated_draft

CONFIG_FILE, WEIGHTS_FILE = "draft_config.json", "draft.safetensors"
SHIPPED_DRAFT = "smollm2-135m-draft"


class DraftLM(nn.Module):
    """The target's first layers + its frozen embedding and head, optionally over a vocabulary subset."""

    def __init__(self, target: nn.Module, num_layers: int, vocab_subset: torch.Tensor | None = None):
        super().__init__()
        config = truncated_config(target, num_layers)
        self.config = config
        device, dtype = target.device, target.dtype
        self.model = type(target.model)(config).to(device=device, dtype=dtype)
        self.model.embed_tokens = target.model.embed_tokens
        for mine, theirs in zip(self.model.layers, target.model.layers):
            mine.load_state_dict(theirs.state_dict())
        self.model.norm.load_state_dict(target.model.norm.state_dict())
        subset = vocab_subset if vocab_subset is not None else torch.arange(config.vocab_size)
        self.register_buffer("vocab_subset", subset.to(device=device, dtype=torch.long), persistent=False)
        head = target.lm_head.weight.detach()                              # [V, hidden], frozen
        if len(subset) < config.vocab_size:
            head = head[self.vocab_subset].clone()                          # [subset, hidden]: gathered once, not per token
        self.head = nn.Linear(config.hidden_size, len(subset), bias=False, device="meta")
        self.head.weight = nn.Parameter(head, requires_grad=False)          # a plain Linear: CPU prepacking applies
        self.model.embed_tokens.requires_grad_(False)
        self._cache_kw = forward_kwargs(self.model)

    def hidden(self, input_ids, position_ids=None, attention_mask=None, cache=None, use_cache=False):
        out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                         use_cache=use_cache, **({self._cache_kw: cache} if cache is not None else {}))
        return out.last_hidden_state                                      # [b, q, hidden]

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # [b, q, subset]; a strided hidden (a slice of positions) sends CPU bf16 matmuls down a ~100x slower path
        return self.head(hidden.contiguous())

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, cache=None, past_key_values=None,
                use_cache=True, logits_to_keep: int | torch.Tensor = 0, **_: Any):
        h = self.hidden(input_ids, position_ids, attention_mask, cache if cache is not None else past_key_values, use_cache)
        if isinstance(logits_to_keep, torch.Tensor):
            h = h[:, logits_to_keep]                                        # [b, len(keep), hidden]
        elif logits_to_keep:
            h = h[:, -logits_to_keep:]
        small = self.subset_logits(h)
        if len(self.vocab_subset) == self.config.vocab_size:
            return SimpleNamespace(logits=small)
        full = small.new_full((*small.shape[:-1], self.config.vocab_size), float("-inf"))
        full[..., self.vocab_subset] = small
        return SimpleNamespace(logits=full)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("embed_tokens")}


def save_draft(draft: DraftLM, out: Path, record: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    weights = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in draft.trainable_state().items()}
    weights["vocab_subset"] = draft.vocab_subset.cpu().to(torch.int32)
    path = out / WEIGHTS_FILE
    save_file(weights, str(path))
    config = {"format": "autospec-draft/1", "num_layers": draft.config.num_hidden_layers,
              "target_shape": {k: getattr(draft.config, k) for k in ("hidden_size", "vocab_size", "intermediate_size")},
              "vocab_subset_size": len(draft.vocab_subset), "sha256": _sha256(path), "training": record}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class DraftCheckpointError(ValueError):
    """A draft checkpoint that is missing, corrupted or made for another target."""


def load_draft(target: nn.Module, folder: str | Path) -> DraftLM:
    """Rebuild a saved draft on top of `target` (offline); refuses a bad or mismatched checkpoint."""
    folder = Path(folder)
    config = _read_config(folder)
    shape = {k: getattr(target.config, k, None) for k in config["target_shape"]}
    if shape != config["target_shape"]:
        raise DraftCheckpointError(f"draft in {folder} was made for a target with {config['target_shape']}, "
                                   f"but this target has {shape}")
    path = folder / WEIGHTS_FILE
    weights = _read_weights(folder, config)
    subset = weights.pop("vocab_subset").long()
    draft = DraftLM(target, config["num_layers"], subset)
    missing, unexpected = draft.model.load_state_dict({k: v.to(target.dtype) for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.startswith("embed_tokens")]
    if missing or unexpected:
        raise DraftCheckpointError(f"{path} does not fit a {config['num_layers']}-layer draft: "
                                   f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return draft.eval()


def _read_weights(folder: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after its sha256 matched `config` (DraftCheckpointError otherwise)."""
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.exists() or _sha256(path) != config["sha256"]:
        raise DraftCheckpointError(f"{path} is missing or corrupted (its sha256 does not match {CONFIG_FILE})")
    try:
        return load_file(str(path))
    except Exception as exc:                      # safetensors raises several types on damaged files
        raise DraftCheckpointError(f"{path} cannot be read: {exc}") from exc


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise DraftCheckpointError(f"no {CONFIG_FILE} in {folder}: not an autospec draft") from None
    except ValueError as exc:
        raise DraftCheckpointError(f"{folder / CONFIG_FILE} is not valid JSON: {exc}") from None
    for key in ("format", "num_layers", "target_shape", "sha256"):
        if key not in config:
            raise DraftCheckpointError(f"{folder / CONFIG_FILE} lacks '{key}'")
    return config


def shipped_draft_dir() -> Path:
    return Path(str(resources.files("autospec") / "data" / SHIPPED_DRAFT))


def load_shipped_draft(target: nn.Module) -> DraftLM:
    folder = shipped_draft_dir()
    if not (folder / CONFIG_FILE).exists():
        raise DraftCheckpointError(f"no shipped draft in {folder}: run `autospec distill --out {folder}`")
    return load_draft(target, folder)


def make_draft(kind: str, target: Any) -> Any:
    """A drafter for `AutoSpec` by name: 'ngram', 'distilled' (the shipped draft) or 'first:N' (the
    target's first N layers)."""
    if kind == "ngram":
        return "ngram"
    if kind.startswith("first:"):
        return truncated_draft(target, int(kind.split(":", 1)[1]))
    if kind == "distilled":
        return load_shipped_draft(target)
    raise ValueError(f"--draft must be ngram, distilled or first:N, got {kind!r}")


def hf_draft_folder(kind: str, target_dir: str | Path, out: str | Path) -> Path:
    """`kind` ('first:N' or 'distilled') as an HF checkpoint folder beside the target's files (module
    contract); reuses `out` when it already holds the same draft."""
    import shutil

    from safetensors.torch import load_file, save_file

    target_dir, out = Path(target_dir), Path(out)
    config = json.loads((target_dir / "config.json").read_text())
    num_layers, own = _hf_draft_layers(kind, config["num_hidden_layers"])
    stamp = {"kind": kind, "num_layers": num_layers, "target": str(target_dir)}
    if (out / "autospec_draft.json").exists() and json.loads((out / "autospec_draft.json").read_text()) == stamp:
        return out
    weights = {k: v for k, v in load_file(str(target_dir / "model.safetensors")).items()
               if not k.startswith("model.layers.") or int(k.split(".")[2]) < num_layers}
    weights.update({f"model.{k}": v.to(weights["model.norm.weight"].dtype) for k, v in own.items()})
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config["num_hidden_layers"] = num_layers
    if config.get("layer_types"):
        config["layer_types"] = config["layer_types"][:num_layers]
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (target_dir / name).exists():
            shutil.copy(target_dir / name, out / name)
    (out / "autospec_draft.json").write_text(json.dumps(stamp))
    return out


def _hf_draft_layers(kind: str, total_layers: int) -> tuple[int, dict[str, torch.Tensor]]:
    """(layer count, the draft's own weights keyed as in the target's `model.` module) for `kind`."""
    if kind.startswith("first:"):
        num_layers = int(kind.split(":", 1)[1])
        if not 1 <= num_layers < total_layers:
            raise ValueError(f"first:N needs N in 1..{total_layers - 1}, got {num_layers}")
        return num_layers, {}
    if kind == "distilled":
        folder = shipped_draft_dir()
        config = _read_config(folder)
        weights = _read_weights(folder, config)
        weights.pop("vocab_subset")
        return config["num_layers"], weights
    raise ValueError(f"an HF draft folder is made from 'first:N' or 'distilled', got {kind!r}")
