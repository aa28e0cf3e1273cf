"""`autospec distill`: build a small draft for a target and distil it on the target's own text.

Contract:
- The draft (`DraftLM`) is the target's first `num_layers` decoder layers (trainable copies) and
  a trainable final norm, reading the target's own embedding and output head (shared, frozen),
  so it has the target's vocabulary by construction. Its head may be restricted to the
  `vocab_size` tokens most frequent in the training text (a reduced-vocabulary head: on SmolLM2
  the full 49k x 576 head is two thirds of a 4-layer draft's cost); tokens outside it are never
  proposed (logit -inf), which greedy and rejection sampling both handle exactly.
- Training text is the target's continuations of a prompt set (one greedy and `samples` sampled
  per prompt); the teacher signal is the target's top-`teacher_top_k` distribution at every
  continuation position, from one teacher-forced forward per batch. The loss is the soft cross-
  entropy of the draft against that distribution (restricted to the draft's vocabulary).
- `--out DIR` receives `checkpoint.pt` every `checkpoint_every` optimizer steps (`--resume`
  continues from it, data included) and finally `draft.safetensors` + `draft_config.json`
  (shape, vocabulary, training record, sha256 of the weights). `load_draft(target, DIR)` rebuilds
  the draft offline and refuses a corrupted, truncated or mismatched checkpoint with a clear error.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autospec.cli import subcommand

CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE = "draft_config.json", "draft.safetensors", "checkpoint.pt"
SHIPPED_DRAFT = "smollm2-135m-draft"
TOPICS = ["the ocean", "a small bakery", "machine learning", "the history of Rome", "healthy breakfasts",
          "climate change", "learning to play guitar", "a trip to Japan", "saving money", "black holes",
          "a robot who learns to paint", "the water cycle", "job interviews", "electric cars", "honeybees",
          "the internet", "a rainy afternoon", "chess openings", "volcanoes", "friendship"]
TEMPLATES = ["Write a short story about {t}.", "Explain {t} to a ten-year-old.", "Give three facts about {t}.",
             "Write a haiku about {t}.", "What are the pros and cons of {t}?", "Summarize what you know about {t}.",
             "Write a Python function related to {t}, with a docstring.", "Write a short email to a friend about {t}.",
             "List five questions someone might ask about {t}.", "Describe {t} in one paragraph."]


class DraftLM(nn.Module):
    """The target's first layers + its frozen embedding and head, optionally over a vocabulary subset."""

    def __init__(self, target: nn.Module, num_layers: int, vocab_subset: torch.Tensor | None = None):
        super().__init__()
        total = target.config.num_hidden_layers
        if not 1 <= num_layers < total:
            raise ValueError(f"num_layers must be in 1..{total - 1}, got {num_layers}")
        config = copy.deepcopy(target.config)
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
        self.config = config
        device, dtype = target.device, target.dtype
        self.model = type(target.model)(config).to(device=device, dtype=dtype)
        self.model.embed_tokens = target.model.embed_tokens
        for mine, theirs in zip(self.model.layers, target.model.layers):
            mine.load_state_dict(theirs.state_dict())
        self.model.norm.load_state_dict(target.model.norm.state_dict())
        self._target_head = [target.lm_head]              # a list: not registered as a submodule
        subset = vocab_subset if vocab_subset is not None else torch.arange(config.vocab_size)
        self.register_buffer("vocab_subset", subset.to(device=device, dtype=torch.long), persistent=False)
        self.model.embed_tokens.requires_grad_(False)
        self._cache_kw = "cache" if "cache" in _params(self.model.forward) else "past_key_values"

    @property
    def head_weight(self) -> torch.Tensor:
        """[subset, hidden] rows of the target's (frozen) output head."""
        return self._target_head[0].weight.detach()[self.vocab_subset]

    def hidden(self, input_ids, position_ids=None, attention_mask=None, cache=None, use_cache=False):
        out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                         use_cache=use_cache, **({self._cache_kw: cache} if cache is not None else {}))
        return out.last_hidden_state                                      # [b, q, hidden]

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.head_weight.T                                # [b, q, subset]

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, cache=None, past_key_values=None,
                use_cache=True, logits_to_keep: int = 0, **_: Any):
        h = self.hidden(input_ids, position_ids, attention_mask, cache if cache is not None else past_key_values, use_cache)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        small = self.subset_logits(h)
        if len(self.vocab_subset) == self.config.vocab_size:
            return SimpleNamespace(logits=small)
        full = small.new_full((*small.shape[:-1], self.config.vocab_size), float("-inf"))
        full[..., self.vocab_subset] = small
        return SimpleNamespace(logits=full)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("embed_tokens")}


def _params(fn) -> set[str]:
    import inspect
    return set(inspect.signature(fn).parameters)


# --- data -------------------------------------------------------------------------------------
@dataclass
class DistillData:
    tokens: torch.Tensor            # [n, L] long, left-padded
    attention_mask: torch.Tensor    # [n, L] long: 1 on real tokens, 0 on left padding
    loss_mask: torch.Tensor         # [n, L] bool: position predicts a continuation token
    teacher_ids: torch.Tensor       # [n, L, K] long: the target's top-K next tokens
    teacher_logp: torch.Tensor      # [n, L, K] float16: their log-probabilities
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())


def training_prompts(seed: int = 0) -> list[str]:
    from autospec.prompts import load_prompts
    rng = random.Random(seed)
    made = [template.format(t=topic) for template in TEMPLATES for topic in TOPICS]
    rng.shuffle(made)
    return [p["prompt"] for p in load_prompts("train")] + made


def generate_data(target, tokenizer, prompts: list[str], new_tokens: int, samples: int, batch_size: int,
                  top_k: int, token_budget: int, seed: int) -> DistillData:
    """Target continuations (one greedy and `samples` sampled per prompt, until `token_budget`
    tokens), generated by continuous batching with plain decoding, plus the teacher's top-k."""
    from autospec.engine import AutoSpec
    from autospec.prompts import chat_token_ids

    prompt_ids = chat_token_ids(tokenizer, prompts)
    per_prompt = 1 + samples
    wanted = min(len(prompts), -(-token_budget // (new_tokens * per_prompt // 2 + 1)))
    engine = AutoSpec(target, None, controller="fixed:0", max_batch_size=48, seed=seed)
    rows, masks = [], []
    for do_sample, copies in ((False, 1), (True, samples)):
        requests = [ids for ids in prompt_ids[:wanted] for _ in range(copies)]
        if not requests:
            continue
        served = engine.serve(requests, max_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id,
                              do_sample=do_sample, top_p=0.95 if do_sample else None, progress=True)
        for result in served.results:
            full = result.prompt_ids + result.output_ids
            m = torch.zeros(len(full), dtype=torch.bool)
            m[len(result.prompt_ids) - 1: len(full) - 1] = True          # positions that predict a continuation
            rows.append(full)
            masks.append(m)
    tokens, attention, loss_mask = _pad(rows, masks, tokenizer.pad_token_id)
    teacher_ids, teacher_logp = teacher_targets(target, tokens, attention, top_k, batch_size)
    return DistillData(tokens, attention, loss_mask, teacher_ids, teacher_logp,
                       {"prompts": wanted, "seed": seed, "sampled_per_prompt": samples})


def _pad(rows: list[list[int]], masks: list[torch.Tensor], pad_id: int):
    """Left-pad: (tokens [n, L], attention mask [n, L], loss mask [n, L])."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    loss_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks)):
        tokens[i, width - len(r):] = torch.tensor(r)
        attention[i, width - len(r):] = 1
        loss_mask[i, width - len(r):] = m
    return tokens, attention, loss_mask


def positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: counting real tokens only (as generate does)."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def teacher_targets(target, tokens: torch.Tensor, attention: torch.Tensor, top_k: int, batch_size: int):
    """[n, L, K] top-k ids and log-probs of the target's next-token distribution."""
    ids = torch.zeros(*tokens.shape, top_k, dtype=torch.long)
    logp = torch.full((*tokens.shape, top_k), -30.0, dtype=torch.float16)
    for i in range(0, len(tokens), batch_size):
        x, attn = tokens[i:i + batch_size].to(target.device), attention[i:i + batch_size].to(target.device)
        out = target(input_ids=x, attention_mask=attn, position_ids=positions(attn)).logits.float().log_softmax(-1)
        top = out.topk(top_k, dim=-1)
        ids[i:i + batch_size], logp[i:i + batch_size] = top.indices.cpu(), top.values.half().cpu()
    return ids, logp


def frequent_tokens(data: DistillData, size: int, always: Sequence[int]) -> torch.Tensor:
    """The `size` tokens with the most teacher probability mass in the data (plus `always`)."""
    mass = torch.zeros(int(data.teacher_ids.max()) + 1)
    sel = data.loss_mask
    mass.index_add_(0, data.teacher_ids[sel].flatten(), data.teacher_logp[sel].float().exp().flatten())
    keep = set(mass.topk(min(size, len(mass))).indices.tolist()) | set(always)
    return torch.tensor(sorted(keep))


# --- training ---------------------------------------------------------------------------------
def soft_cross_entropy(draft: DraftLM, data: DistillData, rows: torch.Tensor, index_of: torch.Tensor):
    """Soft CE of the draft against the teacher's top-k, renormalised on the draft's vocabulary."""
    device = draft.model.norm.weight.device
    attn = data.attention_mask[rows].to(device)
    batch_mask = data.loss_mask[rows]
    teacher_ids, teacher_logp = data.teacher_ids[rows], data.teacher_logp[rows]
    h = draft.hidden(data.tokens[rows].to(device), positions(attn), attn)[batch_mask.to(device)]   # [n, hidden]
    logq = draft.subset_logits(h).float().log_softmax(-1)                     # [n, subset]
    ids, logp = teacher_ids[batch_mask], teacher_logp[batch_mask].float()     # [n, K]
    local = index_of[ids]                                                     # [n, K], -1 outside the subset
    p = torch.where(local >= 0, logp.exp(), torch.zeros_like(logp))
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-8)
    return -(p * logq.gather(1, local.clamp(min=0))).sum(-1).mean()


def train(draft: DraftLM, data: DistillData, args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from tqdm.auto import tqdm

    params = [p for n, p in draft.model.named_parameters() if not n.startswith("embed_tokens")]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    if state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    index_of = torch.full((draft.config.vocab_size,), -1, dtype=torch.long)
    index_of[draft.vocab_subset.cpu()] = torch.arange(len(draft.vocab_subset))
    order = torch.randperm(len(data.tokens), generator=torch.Generator().manual_seed(args.seed))
    step, losses, started = state.get("step", 0), state.get("losses", []), time.time() - state.get("elapsed_s", 0.0)
    total = args.epochs * (len(order) // args.batch_size)
    with tqdm(total=total, initial=step, desc="distilling", unit="step") as bar:
        while step < total and time.time() - started < args.time_budget:
            lr = args.lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + torch.cos(torch.tensor(step / total * 3.14159)).item())
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = order[(step * args.batch_size) % len(order):][: args.batch_size]
            loss = soft_cross_entropy(draft, data, rows, index_of)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            losses.append(round(float(loss.detach()), 4))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if step % args.checkpoint_every == 0:
                save_checkpoint(args.out, draft, optimizer, data, step, losses, time.time() - started)
    save_checkpoint(args.out, draft, optimizer, data, step, losses, time.time() - started)
    return {"steps": step, "train_loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "train_seconds": round(time.time() - started, 1)}


def save_checkpoint(out: Path, draft, optimizer, data, step, losses, elapsed_s) -> None:
    tmp = out / (CHECKPOINT_FILE + ".tmp")
    torch.save({"draft": draft.trainable_state(), "vocab_subset": draft.vocab_subset.cpu(), "optimizer": optimizer.state_dict(),
                "data": data.__dict__, "step": step, "losses": losses, "elapsed_s": elapsed_s}, tmp)
    tmp.replace(out / CHECKPOINT_FILE)


# --- saving and loading -------------------------------------------------------------------------
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
    from safetensors.torch import load_file

    folder = Path(folder)
    config = _read_config(folder)
    shape = {k: getattr(target.config, k, None) for k in config["target_shape"]}
    if shape != config["target_shape"]:
        raise DraftCheckpointError(f"draft in {folder} was made for a target with {config['target_shape']}, "
                                   f"but this target has {shape}")
    path = folder / WEIGHTS_FILE
    if not path.exists() or _sha256(path) != config["sha256"]:
        raise DraftCheckpointError(f"{path} is missing or corrupted (its sha256 does not match {CONFIG_FILE})")
    try:
        weights = load_file(str(path))
    except Exception as exc:                      # safetensors raises several types on damaged files
        raise DraftCheckpointError(f"{path} cannot be read: {exc}") from exc
    subset = weights.pop("vocab_subset").long()
    draft = DraftLM(target, config["num_layers"], subset)
    missing, unexpected = draft.model.load_state_dict({k: v.to(target.dtype) for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.startswith("embed_tokens")]
    if missing or unexpected:
        raise DraftCheckpointError(f"{path} does not fit a {config['num_layers']}-layer draft: "
                                   f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return draft.eval()


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


# --- evaluation -------------------------------------------------------------------------------
@torch.inference_mode()
def teacher_forced_acceptance(target, draft, tokenizer, prompts: list[dict], new_tokens: int) -> dict[str, Any]:
    """P(draft argmax == target argmax | the target's own greedy prefix), overall and per category."""
    from autospec.prompts import chat_token_ids

    by_cat: dict[str, list[int]] = {}
    for p in prompts:
        ids = torch.tensor([chat_token_ids(tokenizer, [p["prompt"]])[0]], device=target.device)
        out = target.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        t = target(input_ids=out).logits[0, ids.shape[1] - 1: -1].argmax(-1)
        d = draft(input_ids=out, use_cache=False).logits[0, ids.shape[1] - 1: -1].argmax(-1)
        hits = by_cat.setdefault(p["category"], [0, 0])
        hits[0] += int((t == d).sum())
        hits[1] += len(t)
    overall = sum(h for h, _ in by_cat.values()) / sum(n for _, n in by_cat.values())
    return {"overall": overall, "per_category": {c: h / n for c, (h, n) in sorted(by_cat.items())}}


def decoding_acceptance(target, draft, tokenizer, prompts: list[dict], new_tokens: int, spec_len: int = 4) -> dict[str, Any]:
    """Acceptance in real greedy speculative decoding (per-position conditional rates and overall)."""
    from autospec.engine import AutoSpec
    from autospec.profiler import acceptance_from_records
    from autospec.prompts import chat_token_ids

    out = {}
    for cat in sorted({p["category"] for p in prompts}):
        engine = AutoSpec(target, draft, controller=f"fixed:{spec_len}", max_batch_size=4)
        ids = chat_token_ids(tokenizer, [p["prompt"] for p in prompts if p["category"] == cat])
        engine.serve(ids, max_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id, progress=False)
        rates = acceptance_from_records(engine.records, spec_len)
        out[cat] = {"per_pos": rates["per_pos"], "first_pos": rates["per_pos"][0]}
    first = [v["first_pos"] for v in out.values()]
    return {"overall_first_pos": sum(first) / len(first), "per_category": out}


# --- CLI ----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="smollm2", help="'smollm2' (embedded) or a local HF checkpoint folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=8192, help="draft head vocabulary (0 = the full vocabulary)")
    p.add_argument("--tokens", type=int, default=100_000, help="target tokens to generate for training")
    p.add_argument("--new-tokens", type=int, default=96, help="continuation length per prompt")
    p.add_argument("--samples", type=int, default=3, help="sampled continuations per prompt (plus one greedy)")
    p.add_argument("--teacher-top-k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--time-budget", type=float, default=3600.0, help="seconds of training at most")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-tokens", type=int, default=48, help="new tokens per held-out prompt in evaluation")


def run_distill(args: argparse.Namespace) -> int:
    import sys
    import platform

    from autospec.profiler import load_target
    from autospec.prompts import load_prompts

    if args.tokens < 100 or args.layers < 1 or args.epochs < 1 or args.batch_size < 1:
        raise ValueError("need --tokens >= 100, --layers >= 1, --epochs >= 1, --batch-size >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    target, tokenizer, target_name = load_target(args.target, args.dtype, args.device)
    state: dict[str, Any] = {}
    t0 = time.time()
    if args.resume and (args.out / CHECKPOINT_FILE).exists():
        state = torch.load(args.out / CHECKPOINT_FILE, weights_only=False)
        data, subset = DistillData(**state["data"]), state["vocab_subset"]
    else:
        data = generate_data(target, tokenizer, training_prompts(args.seed), args.new_tokens, args.samples,
                             args.batch_size, args.teacher_top_k, args.tokens, args.seed)
        subset = frequent_tokens(data, args.vocab_size, [tokenizer.eos_token_id]) if args.vocab_size else None
    data_s = time.time() - t0
    teacher32, _, _ = load_target(args.target, "float32", args.device)      # train in float32 on a copy
    draft = DraftLM(teacher32, args.layers, subset)
    if state:
        draft.model.load_state_dict(state["draft"], strict=False)
    draft.train()
    record = train(draft, data, args, state)
    save_draft(draft, args.out, {})
    draft = load_draft(target, args.out)                                    # the deployment form: the target's dtype
    heldout = load_prompts("heldout")
    record.update({"command": "autospec " + " ".join(sys.argv[1:]), "target": target_name,
                   "machine": f"{platform.machine()} {args.device}", "dtype": args.dtype, "data_tokens": data.num_tokens,
                   "data_sequences": len(data.tokens), "data_seconds": round(data_s, 1),
                   "heldout_teacher_forced": teacher_forced_acceptance(target, draft, tokenizer, heldout, args.eval_tokens),
                   "heldout_decoding": decoding_acceptance(target, draft, tokenizer, heldout, args.eval_tokens)})
    path = save_draft(draft, args.out, record)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); held-out acceptance: teacher-forced "
          f"{record['heldout_teacher_forced']['overall']:.3f}, decoding (first position) "
          f"{record['heldout_decoding']['overall_first_pos']:.3f}")
    return 0


subcommand("distill")((add_arguments, run_distill))
