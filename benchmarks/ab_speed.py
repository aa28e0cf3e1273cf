"""This checkout against another git revision, on the embedded default, in paired rounds.

    python benchmarks/ab_speed.py --base b0b010a [--batch-sizes 1 4 16] [--rounds 4] --out results/x.json
    python benchmarks/ab_speed.py --base b0b010a --this b0b010a ...     # the null: same code on both sides

SmolLM2-135M-Instruct in bfloat16 with the shipped distilled draft and its shipped profile (what
`autospec demo` runs), controller `auto` (or --controller), greedy, EOS suppressed so every row
makes exactly --new-tokens tokens, the shipped chat prompts left-padded per batch. Each side runs
in its own process from a materialised copy of its tree (the package-dir mapping reproduced), the
two sides alternate in a fresh random order every round, and each round's ratio (this checkout's
tokens/s over the base's, per batch size) pairs two runs a few seconds apart, so the host's drift
falls on both. Reports the median ratio over rounds and every round's numbers; writes JSON and
prints a table. Also checks that both sides produced the same tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def materialise(tree: Path, into: Path) -> Path:
    """autospec/ with controllers/ and backends/ inside it, as the installed package lays them out."""
    pkg = into / "autospec"
    shutil.copytree(tree / "autospec", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for plugin in ("controllers", "backends"):
        shutil.copytree(tree / plugin, pkg / plugin, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def checkout(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), revision], check=True,
                   capture_output=True)
    return into


def run_side(pythonpath: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batch-sizes", *map(str, args.batch_sizes),
           "--new-tokens", str(args.new_tokens), "--controller", args.controller, "--draft", args.draft]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(args: argparse.Namespace) -> None:
    """One side: tokens/s per batch size (after one warm-up call per batch size), and the tokens."""
    import torch

    import autospec
    from autospec.backends.draft_model import make_draft
    from autospec.entrypoints.demo import default_profile
    from autospec.entrypoints.engine import AutoSpec
    from autospec.backends.models import load_smollm2
    from autospec.prompts import chat_token_ids, load_prompts

    torch.manual_seed(0)
    model, tokenizer = load_smollm2(dtype=torch.bfloat16, device="cpu")
    prompts = chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts()])
    spec = AutoSpec(model, make_draft(args.draft, model), controller=args.controller,
                    cost_model=default_profile(args.draft), max_batch_size=max(args.batch_sizes))
    result = {"autospec_file": autospec.__file__, "batches": {}}
    for size in args.batch_sizes:
        rows = prompts[: size * max(1, 16 // size)]
        groups = [tokenizer.pad({"input_ids": rows[i:i + size]}, return_tensors="pt", padding=True)
                  for i in range(0, len(rows), size)]
        run = lambda g: spec.generate(g["input_ids"], attention_mask=g["attention_mask"],   # noqa: E731
                                      max_new_tokens=args.new_tokens, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
        run(groups[0])                                                                    # warm-up
        t0 = time.perf_counter()
        outputs = [run(g).tolist() for g in groups]
        elapsed = time.perf_counter() - t0
        result["batches"][str(size)] = {"tokens_per_s": len(rows) * args.new_tokens / elapsed, "outputs": outputs}
    print(json.dumps(result))


def compare(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="autospec-ab-"))
    base_tree = checkout(args.base, work / "base-tree")
    this_tree = checkout(args.this, work / "this-tree") if args.this else ROOT
    sides = {"base": materialise(base_tree, work / "base"), "this": materialise(this_tree, work / "this")}
    rng = random.Random(0)
    rounds = []
    try:
        for k in range(args.rounds):
            measured = {name: run_side(sides[name], args) for name in rng.sample(list(sides), 2)}
            rounds.append(measured)
            print(f"round {k + 1}: " + ", ".join(f"b={b} {measured['this']['batches'][b]['tokens_per_s'] / measured['base']['batches'][b]['tokens_per_s']:.3f}x"
                                                 for b in measured["this"]["batches"]), flush=True)
    finally:
        for tree in {base_tree, this_tree} - {ROOT}:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return summarise(rounds, args)


def summarise(rounds: list[dict], args: argparse.Namespace) -> dict:
    table = {}
    for b in map(str, args.batch_sizes):
        this = [r["this"]["batches"][b]["tokens_per_s"] for r in rounds]
        base = [r["base"]["batches"][b]["tokens_per_s"] for r in rounds]
        same = all(r["this"]["batches"][b]["outputs"] == r["base"]["batches"][b]["outputs"] for r in rounds)
        table[b] = {"ratio_median": statistics.median(t / s for t, s in zip(this, base)),
                    "ratio_per_round": [t / s for t, s in zip(this, base)], "this_tokens_per_s": this,
                    "base_tokens_per_s": base, "identical_tokens": same}
    return {"command": " ".join(sys.argv), "base": args.base, "this": args.this or "working tree", "controller": args.controller, "draft": args.draft,
            "new_tokens": args.new_tokens, "rounds": args.rounds, "machine": machine(), "batch_sizes": table}


def machine() -> str:
    import platform
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--this", help="a revision instead of the working tree (e.g. --this REV --base REV: the null "
                                       "comparison, how far two runs of the same code differ)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--controller", default="auto")
    parser.add_argument("--draft", default="distilled")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    result = compare(args)
    print(f"{'batch':>5} {'this/base (median)':>19}  per round")
    for b, row in result["batch_sizes"].items():
        print(f"{b:>5} {row['ratio_median']:>19.3f}  {', '.join(f'{x:.3f}' for x in row['ratio_per_round'])}"
              f"  identical={row['identical_tokens']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
