"""What a typical processor set costs: repetition penalty + top-p sampling, against plain greedy.

    python benchmarks/processor_cost.py --batch-sizes 1 4 16 --rounds 4 --out benchmarks/results/processor_cost_cpu.json

SmolLM2-135M-Instruct in bfloat16 with the shipped distilled draft and its profile (`auto`), the
shipped chat prompts left-padded per batch, EOS suppressed so every row makes exactly
--new-tokens tokens. Four ways per batch size, in a fresh random order every round: autospec
greedy without processors, autospec with repetition_penalty=1.2 + top_p=0.9 sampling (HF's own
processors at every verified position), and HF's own `generate` both ways. Reports the median
tokens/s over rounds and the paired per-round ratios: what the processors cost autospec, what they
cost HF, and autospec against HF with them; writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

PROCESSORS = dict(do_sample=True, repetition_penalty=1.2, top_p=0.9)


def methods(model, spec, tokenizer, new_tokens: int) -> dict:
    common = dict(max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
    return {
        "autospec_greedy": lambda g: spec.generate(g["input_ids"], attention_mask=g["attention_mask"],
                                                   eos_token_id=-1, **common),
        "autospec_processors": lambda g: spec.generate(g["input_ids"], attention_mask=g["attention_mask"],
                                                       eos_token_id=-1, **PROCESSORS, **common),
        "hf_greedy": lambda g: model.generate(**g, do_sample=False, eos_token_id=None, **common),
        "hf_processors": lambda g: model.generate(**g, eos_token_id=None, **PROCESSORS, **common),
    }


def run(args: argparse.Namespace) -> dict:
    from autospec.backends.draft_model import make_draft
    from autospec.entrypoints.demo import default_profile
    from autospec.entrypoints.engine import AutoSpec
    from autospec.backends.models import load_smollm2
    from autospec.prompts import chat_token_ids, load_prompts

    torch.manual_seed(0)
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    model.generation_config.eos_token_id = None
    prompts = chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts()])
    spec = AutoSpec(model, make_draft("distilled", model), controller="auto", cost_model=default_profile("distilled"),
                    max_batch_size=max(args.batch_sizes))
    ways = methods(model, spec, tokenizer, args.new_tokens)
    rng = random.Random(0)
    times = {b: {name: [] for name in ways} for b in args.batch_sizes}
    with torch.inference_mode(), tqdm(total=args.rounds * len(args.batch_sizes) * len(ways), desc="runs") as bar:
        for b in args.batch_sizes:
            group = tokenizer.pad({"input_ids": prompts[:b]}, return_tensors="pt", padding=True)
            for fn in ways.values():
                fn(group)                                                       # warm-up
            for _ in range(args.rounds):
                for name in rng.sample(list(ways), len(ways)):
                    t0 = time.perf_counter()
                    ways[name](group)
                    times[b][name].append(b * args.new_tokens / (time.perf_counter() - t0))
                    bar.update()
    return summarise(times, args)


def paired(times: dict, a: str, b: str) -> dict:
    ratios = [x / y for x, y in zip(times[a], times[b])]
    return {"median": round(statistics.median(ratios), 3), "per_round": [round(r, 3) for r in ratios]}


def summarise(times: dict, args: argparse.Namespace) -> dict:
    table = {}
    for b, row in times.items():
        table[str(b)] = {"tokens_per_s_median": {k: round(statistics.median(v), 1) for k, v in row.items()},
                         "autospec_processors_vs_autospec_greedy": paired(row, "autospec_processors", "autospec_greedy"),
                         "hf_processors_vs_hf_greedy": paired(row, "hf_processors", "hf_greedy"),
                         "autospec_processors_vs_hf_processors": paired(row, "autospec_processors", "hf_processors"),
                         "autospec_greedy_vs_hf_greedy": paired(row, "autospec_greedy", "hf_greedy"),
                         "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in row.items()}}
    return {"command": "python benchmarks/processor_cost.py " + " ".join(sys.argv[1:]), "processors": PROCESSORS,
            "new_tokens": args.new_tokens, "rounds": args.rounds,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}", "batch_sizes": table}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = run(args)
    print(f"{'batch':>5} {'autospec greedy':>15} {'autospec +proc':>14} {'HF greedy':>10} {'HF +proc':>9} "
          f"{'proc cost (ours)':>16} {'proc cost (HF)':>14} {'ours/HF +proc':>13}")
    for b, row in out["batch_sizes"].items():
        t = row["tokens_per_s_median"]
        print(f"{b:>5} {t['autospec_greedy']:>15} {t['autospec_processors']:>14} {t['hf_greedy']:>10} "
              f"{t['hf_processors']:>9} {row['autospec_processors_vs_autospec_greedy']['median']:>16} "
              f"{row['hf_processors_vs_hf_greedy']['median']:>14} {row['autospec_processors_vs_hf_processors']['median']:>13}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
