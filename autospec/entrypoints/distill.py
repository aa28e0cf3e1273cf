"""`autospec distill`: build a small draft for a target and distil it on the target's own text.

Contract:
- The draft is a `DraftLM` (backends/draft_model.py): the target's first `num_layers` layers,
  trained, over the target's frozen embedding and head, optionally restricted to the `vocab_size`
  tokens most frequent in the training text (on SmolLM2 the full 49k x 576 head is two thirds of
  a 4-layer draft's cost).
- Training text is the target's continuations (by its own `generate`) of a prompt set (one greedy
  and `samples` sampled per prompt); the teacher signal is the target's top-`teacher_top_k` distribution at every
  continuation position, from one teacher-forced forward per batch. The loss is the soft cross-
  entropy of the draft against that distribution (restricted to the draft's vocabulary).
- `--out DIR` receives `checkpoint.pt` every `checkpoint_every` optimizer steps (`--resume`
  continues from it, data included) and finally `draft.safetensors` + `draft_config.json`
  (see draft_model.py), which `load_draft(target, DIR)` rebuilds offline.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch


from autospec.backends.draft_model import DraftLM, load_draft, save_draft

CHECKPOINT_FILE = "checkpoint.pt"
TOPICS = ["the ocean", "a small bakery", "machine learning", "the history of Rome", "healthy breakfasts",
          "climate change", "learning to play guitar", "a trip to Japan", "saving money", "black holes",
          "a robot who learns to paint", "the water cycle", "job interviews", "electric cars", "honeybees",
          "the internet", "a rainy afternoon", "chess openings", "volcanoes", "friendship"]
TEMPLATES = ["Write a short story about {t}.", "Explain {t} to a ten-year-old.", "Give three facts about {t}.",
             "Write a haiku about {t}.", "What are the pros and cons of {t}?", "Summarize what you know about {t}.",
             "Write a Python function related to {t}, with a docstring.", "Write a short email to a friend about {t}.",
             "List five questions someone might ask about {t}.", "Describe {t} in one paragraph."]


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


MORE_TEMPLATES = ["Rewrite more formally: i think {t} is kinda cool tbh.", "Summarize in two sentences why people care about {t}.",
                  "Translate to simple English: The utilization of {t} has increased substantially.",
                  "Write a bash command related to {t}.", "Tell me a joke about {t}."]
MATH_TEMPLATES = ["What is {a} plus {b}?", "What is {a} minus {b}?", "What is {a} times {c}?", "Is {a} a prime number? Explain briefly.",
                  "If a book costs {c} dollars, how much do {b} books cost?"]
# Slots for stories to summarize, questions to answer, code to write and requests to chat about.
WHO = ["A young girl", "An old fisherman", "Two friends", "A tired teacher", "A lost tourist", "A new nurse", "A shy student",
       "A farmer", "A retired pilot", "A street musician"]
DID = ["finds a wallet on the bus", "misses the last train home", "plants a garden on a rooftop", "enters a baking contest",
       "gets stuck in an elevator", "adopts a three-legged cat", "learns to swim at sixty", "fixes an old radio",
       "organizes a neighbourhood cleanup", "writes a letter to a stranger"]
THEN = ["and makes an unexpected friend", "but a storm changes everything", "and wins a small prize", "and learns to ask for help",
        "and the whole town comes to watch", "but loses it all the next day"]
CONCEPTS = ["photosynthesis", "inflation", "a leap year", "the speed of light", "DNA", "a vaccine", "gravity", "an earthquake",
            "a compiler", "the stock market", "a rainbow", "the immune system", "democracy", "a black hole", "compound interest",
            "the moon's phases", "recycling", "an allergy", "a password manager", "the Roman Empire"]
QA_TEMPLATES = ["What is {c}?", "How does {c} work?", "Why is {c} important?", "Give a one-sentence definition of {c}.",
                "What is a common misconception about {c}?"]
CODE_TASKS = ["reverses a list", "counts the vowels in a string", "returns the largest of three numbers", "merges two sorted lists",
              "checks whether a year is a leap year", "converts Celsius to Fahrenheit", "removes duplicates from a list",
              "computes the n-th Fibonacci number", "finds the most common word in a text", "flattens a nested list",
              "validates an email address", "sorts a list of dictionaries by a key"]
CODE_TEMPLATES = ["Write a Python function that {k}.", "Write a JavaScript function that {k}.",
                  "Explain how to write a function that {k}.", "Write a Python function that {k}, with a test."]
CHAT_TEMPLATES = ["Can you give me advice about {t}?", "I'm nervous about {t}. Any tips?", "What is something surprising about {t}?",
                  "Recommend a book or activity related to {t}.", "Hi! Tell me something fun about {t}."]


def training_prompts(seed: int = 0) -> list[str]:
    """The shipped training prompts, then generated ones (topic x template, stories to summarize,
    concept questions, coding tasks, arithmetic), shuffled. Never the held-out prompts."""
    from autospec.prompts import load_prompts
    rng = random.Random(seed)
    made = [template.format(t=topic) for template in TEMPLATES + MORE_TEMPLATES + CHAT_TEMPLATES for topic in TOPICS]
    made += [f"Summarize the story: {w} {d}, {t}." for w in WHO for d in DID for t in rng.sample(THEN, 2)]
    made += [template.format(c=c) for template in QA_TEMPLATES for c in CONCEPTS]
    made += [template.format(k=k) for template in CODE_TEMPLATES for k in CODE_TASKS]
    made += [rng.choice(MATH_TEMPLATES).format(a=rng.randint(11, 999), b=rng.randint(2, 99), c=rng.randint(2, 19))
             for _ in range(150)]
    rng.shuffle(made)
    heldout = {p["prompt"] for p in load_prompts("heldout")}
    return [p["prompt"] for p in load_prompts("train")] + [p for p in made if p not in heldout]


@torch.inference_mode()
def generate_data(target, tokenizer, prompts: list[str], new_tokens: int, samples: int, batch_size: int,
                  top_k: int, token_budget: int, seed: int, serve_batch_size: int = 48) -> DistillData:
    """Target continuations (one greedy and `samples` sampled per prompt, until `token_budget`
    tokens) from the target's own `generate` on left-padded batches of `serve_batch_size` rows of
    similar length, plus the teacher's top-k."""
    from tqdm.auto import tqdm

    from autospec.prompts import chat_token_ids

    prompt_ids = chat_token_ids(tokenizer, prompts)
    wanted = min(len(prompts), -(-token_budget // (new_tokens * (1 + samples) // 2 + 1)))
    torch.manual_seed(seed)
    rows, masks = [], []
    batches = [(chunk, do_sample) for do_sample, copies in ((False, 1), (True, samples))
               for chunk in _length_batches([ids for ids in prompt_ids[:wanted] for _ in range(copies)], serve_batch_size)]
    for chunk, do_sample in tqdm(batches, desc="generating data", unit="batch"):
        for prompt, output in zip(chunk, _continue(target, tokenizer, chunk, new_tokens, do_sample)):
            m = torch.zeros(len(prompt) + len(output), dtype=torch.bool)
            m[len(prompt) - 1: len(prompt) + len(output) - 1] = True          # positions that predict a continuation
            rows.append(prompt + output)
            masks.append(m)
    tokens, attention, loss_mask = _pad(rows, masks, tokenizer.pad_token_id)
    teacher_ids, teacher_logp = teacher_targets(target, tokens, attention, top_k, batch_size)
    return DistillData(tokens, attention, loss_mask, teacher_ids, teacher_logp,
                       {"prompts": wanted, "seed": seed, "sampled_per_prompt": samples})


def _length_batches(requests: list[list[int]], size: int) -> list[list[list[int]]]:
    """Requests sorted by length and cut into batches of at most `size` (less padding per batch)."""
    ordered = sorted(requests, key=len)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _continue(target, tokenizer, prompts: list[list[int]], new_tokens: int, do_sample: bool) -> list[list[int]]:
    """Each prompt's continuation by `target.generate`, up to and including its first EOS."""
    eos = tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts], device=target.device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=target.device)
    sampling = {"do_sample": True, "top_p": 0.95, "top_k": 0, "temperature": 1.0} if do_sample else {"do_sample": False}
    out = target.generate(input_ids=ids, attention_mask=attention, max_new_tokens=new_tokens, eos_token_id=eos,
                          pad_token_id=tokenizer.pad_token_id, **sampling)[:, width:].tolist()   # [n, <= new_tokens]
    return [row[: row.index(eos) + 1] if eos in row else row for row in out]


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
    ids, logp = teacher_ids[batch_mask].to(device), teacher_logp[batch_mask].to(device).float()   # [n, K]
    local = index_of.to(device)[ids]                                          # [n, K], -1 outside the subset
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
    """Acceptance in real greedy speculative decoding at `spec_len`: per category the per-position
    conditional rates, the first position's, and all positions pooled; overall the mean first-position
    rate over categories and the pooled rate over every drafted token reached."""
    from autospec.entrypoints.engine import AutoSpec
    from autospec.acceptance import acceptance_from_records
    from autospec.prompts import chat_token_ids

    out, accepted, trials = {}, 0, 0
    for cat in sorted({p["category"] for p in prompts}):
        engine = AutoSpec(target, draft, controller=f"fixed:{spec_len}", max_batch_size=4, records_window=None)
        ids = chat_token_ids(tokenizer, [p["prompt"] for p in prompts if p["category"] == cat])
        engine.serve(ids, max_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id, progress=False)
        rates = acceptance_from_records(engine.records, spec_len)
        out[cat] = {"per_pos": rates["per_pos"], "first_pos": rates["per_pos"][0], "per_token": rates["per_token"]}
        accepted, trials = accepted + sum(rates["accepted_per_pos"]), trials + sum(rates["trials_per_pos"])
    first = [v["first_pos"] for v in out.values()]
    return {"overall_first_pos": sum(first) / len(first), "overall_per_token": accepted / max(1, trials),
            "per_category": out}


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
    p.add_argument("--serve-batch-size", type=int, default=48, help="rows decoded at once while generating the data")
    p.add_argument("--eval-only", action="store_true", help="evaluate the draft saved in --out on the held-out prompts")
    p.add_argument("--eval-json", type=Path, default=None, help="with --eval-only: write the evaluation here")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--time-budget", type=float, default=3600.0, help="seconds of training at most")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-tokens", type=int, default=48, help="new tokens per held-out prompt in evaluation")


def run_distill(args: argparse.Namespace) -> int:
    from autospec.backends.models import load_target

    if args.tokens < 100 or args.layers < 1 or args.epochs < 1 or args.batch_size < 1:
        raise ValueError("need --tokens >= 100, --layers >= 1, --epochs >= 1, --batch-size >= 1")
    target, tokenizer, target_name = load_target(args.target, args.dtype, args.device)
    if args.eval_only:
        record = evaluate(target, tokenizer, load_draft(target, args.out), args)
        if args.eval_json:
            args.eval_json.write_text(json.dumps(record, indent=1))
        return report(record, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    t0 = time.time()
    if args.resume and (args.out / CHECKPOINT_FILE).exists():
        state = torch.load(args.out / CHECKPOINT_FILE, weights_only=False)
        data, subset = DistillData(**state["data"]), state["vocab_subset"]
    else:
        data = generate_data(target, tokenizer, training_prompts(args.seed), args.new_tokens, args.samples,
                             args.batch_size, args.teacher_top_k, args.tokens, args.seed, args.serve_batch_size)
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
    record.update({"target": target_name, "data_tokens": data.num_tokens, "data_sequences": len(data.tokens),
                   "data_seconds": round(data_s, 1)})
    record.update(evaluate(target, tokenizer, draft, args))
    save_draft(draft, args.out, record)
    return report(record, args.out)


def evaluate(target, tokenizer, draft, args: argparse.Namespace) -> dict[str, Any]:
    """Held-out acceptance (teacher-forced and in real decoding), with the machine and command."""
    import platform
    import sys

    from autospec.prompts import load_prompts

    heldout = load_prompts("heldout")
    return {"command": "autospec " + " ".join(sys.argv[1:]), "machine": f"{platform.machine()} {args.device}",
            "dtype": args.dtype,
            "heldout_teacher_forced": teacher_forced_acceptance(target, draft, tokenizer, heldout, args.eval_tokens),
            "heldout_decoding": decoding_acceptance(target, draft, tokenizer, heldout, args.eval_tokens)}


def report(record: dict[str, Any], out: Path) -> int:
    print(f"{out}: held-out acceptance: teacher-forced {record['heldout_teacher_forced']['overall']:.3f}, "
          f"decoding (first position) {record['heldout_decoding']['overall_first_pos']:.3f}, "
          f"decoding (per drafted token reached) {record['heldout_decoding'].get('overall_per_token', float('nan')):.3f}")
    return 0


COMMANDS = {"distill": (add_arguments, run_distill)}
