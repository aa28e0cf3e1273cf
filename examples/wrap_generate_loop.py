"""Wrap an ordinary HuggingFace generate loop with AutoSpec: same outputs, faster, tuned online.

    python examples/wrap_generate_loop.py [--smoke]

The ordinary loop is: tokenizer -> a batch of chat prompts -> model.generate(greedy) -> decode.
Wrapping it is one line: `spec = AutoSpec(model, draft)`, then `spec.generate(...)` with the
same arguments; `draft` is a draft model sharing the vocabulary (here the shipped distilled
SmolLM2 draft, `--draft ngram` for prompt lookup, no second model). The example runs both twice:
1. in float32, where speculative greedy decoding is token-identical to the model's own: it prints
   both outputs and checks they match;
2. in bfloat16 (the fast path on a CPU), timing both and printing the speedup and the spec_len
   the `auto` controller chose per batch size. (In bfloat16, batched and unbatched matrix products
   round differently, so outputs of any two decoding schedules can differ slightly.)
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

import torch

from autospec import AutoSpec
from autospec.backends.draft_model import make_draft
from autospec.backends.models import load_smollm2
from autospec.prompts import load_prompts

PROMPTS = ["Repeat this sentence exactly: The quick brown fox jumps over the lazy dog.",
           "Write a Python function that checks whether a string is a palindrome.",
           "Summarize: Bees collect nectar from flowers and turn it into honey. While doing so they carry "
           "pollen from flower to flower, which helps plants reproduce.",
           "What is the capital of France?"]


def encode(tokenizer, prompts):
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    return tokenizer(chats, return_tensors="pt", padding=True)          # left-padded (see load_smollm2)


def ordinary_loop(model, tokenizer, batch, max_new_tokens):
    return model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)


def wrapped_loop(spec: AutoSpec, tokenizer, batch, max_new_tokens):
    return spec.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)


def texts(tokenizer, out, batch):
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def exactness(prompts: list[str], max_new_tokens: int, draft_kind: str) -> bool:
    model, tokenizer = load_smollm2(dtype=torch.float32)
    batch = encode(tokenizer, prompts)
    plain = ordinary_loop(model, tokenizer, batch, max_new_tokens)
    spec = AutoSpec(model, make_draft(draft_kind, model))
    fast = wrapped_loop(spec, tokenizer, batch, max_new_tokens)
    same = torch.equal(plain, fast)
    for prompt, a, b in zip(prompts, texts(tokenizer, plain, batch), texts(tokenizer, fast, batch)):
        print(f"\n> {prompt[:70]}\n  model.generate: {a!r}\n  AutoSpec:       {b!r}")
    print(f"\nfloat32 greedy outputs identical: {same}")
    return same


def speed(prompts: list[str], max_new_tokens: int, rounds: int, draft_kind: str) -> None:
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    batch = encode(tokenizer, prompts)
    spec = AutoSpec(model, make_draft(draft_kind, model), controller="auto")
    wrapped_loop(spec, tokenizer, batch, max_new_tokens)                 # auto's first tuning round
    plain_s, fast_s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ordinary_loop(model, tokenizer, batch, max_new_tokens)
        plain_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        wrapped_loop(spec, tokenizer, batch, max_new_tokens)
        fast_s.append(time.perf_counter() - t0)
    print(f"\nbfloat16, drafter: {draft_kind}, {len(prompts)} prompts x up to {max_new_tokens} new tokens, best of {rounds}: "
          f"model.generate {min(plain_s):.2f} s, AutoSpec {min(fast_s):.2f} s -> speedup {min(plain_s) / min(fast_s):.2f}x")
    by_batch = defaultdict(Counter)
    for r in spec.records:
        by_batch[r.batch_size][r.spec_len] += 1
    print("spec_len auto chose per batch size (steps):")
    for b in sorted(by_batch):
        print(f"  batch {b:>2}: " + ", ".join(f"spec_len {s} x{n}" for s, n in sorted(by_batch[b].items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 prompts, few tokens (CI)")
    parser.add_argument("--draft", default="distilled", help="distilled (the shipped draft) or ngram")
    args = parser.parse_args()
    print(f"drafter: {args.draft}")
    prompts = PROMPTS[:2] if args.smoke else PROMPTS + [p["prompt"] for p in load_prompts("heldout")][:4]
    identical = exactness(prompts[:2] if args.smoke else prompts[:4], 8 if args.smoke else 32, args.draft)
    speed(prompts, 12 if args.smoke else 64, 1 if args.smoke else 3, args.draft)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
