"""Speed of the HF backend on the embedded model vs HF's own generate (issue 3, claim 3).

    python benchmarks/hf_speed.py [--batch-sizes 1 2 4 8 16] [--new-tokens 64] [--reps 3]

SmolLM2-135M-Instruct in bfloat16 on this CPU. Every batch size runs the first --num-prompts
shipped prompts (one per category first; rounded up to full batches of that size), EOS suppressed
so every row generates exactly --new-tokens tokens. In each round every batch of prompts is run by
every method back to back, in a fresh random order per batch, and a method's round time is the sum
over batches; each method is compared with HF plain of the same round (paired ratios, median over
rounds), so the host's drifts in speed (seconds to minutes) fall on all methods alike. One warm-up
call of `auto` first (its online tuning). Methods:
HF plain `generate`; HF plain over the same prepacked CPU weights autospec runs with
(`hf_plain_prepacked`: the engine's share of the speedup, so speculation's own share is autospec
over it); HF assisted generation with prompt lookup (batch 1 only: HF refuses more; with
--draft ngram); autospec with the chosen drafter (--draft ngram | distilled | first:N) at every
fixed spec_len 0..8, `auto`, and `sweep` (controller `sweep:--sweep-spec-lens`: those spec_lens
in turn, step by step, so each fixed spec_len's goodput is measured within a fraction of a second
of the others, `per_spec_len`; a run-level comparison cannot separate spec_lens whose goodputs
differ by less than its round-to-round spread; its step log goes to <out>_steps/sweep_b<size>.jsonl
for `autospec plan --from-run` (not committed: .gitignore). Reported: median wall time, tokens/s, ratios to both HF
baselines, tokens per target pass, mean verified width; and, from the engine's step
records, goodput at the batch size itself (`full_batch`: steps with every row still running, so
neither prefill nor a static batch's tail of finished rows), per round and paired with fixed:0's
(`goodput_vs_spec_len_0`), which is what a plan per batch size predicts. Writes JSON, prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from autospec.backends.prepack import maybe_packed
from autospec.entrypoints.engine import AutoSpec
from autospec.backends.models import load_smollm2
from autospec.prompts import chat_token_ids, load_prompts
from autospec.runs import JsonlSink

NO_EOS = -1
NAN = float("nan")


def batches(tokenizer, size: int, num_prompts: int):
    """The first prompts, one category at a time, as left-padded batches of `size`: as many full
    batches as it takes to cover num_prompts."""
    count = size * -(-num_prompts // size)
    prompts = sorted(load_prompts(), key=lambda p: (int(p["id"].rsplit("-", 1)[1]), p["category"]))[:count]
    # one prompt per category first: chat, code, math, qa, rewrite, summarize, then the next of each
    rows = chat_token_ids(tokenizer, [p["prompt"] for p in prompts])
    out = []
    for i in range(0, len(rows), size):
        enc = tokenizer.pad({"input_ids": rows[i:i + size]}, return_tensors="pt", padding=True)
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out


def methods(model, tokenizer, size: int, args) -> dict:
    """{name: (run(input_ids, attention_mask) -> [rows, prompt + new tokens], engine or None)}."""
    common = dict(max_new_tokens=args.new_tokens, eos_token_id=NO_EOS, pad_token_id=tokenizer.pad_token_id)

    def hf(**extra):
        return lambda i, m: model.generate(input_ids=i, attention_mask=m, do_sample=False, **common, **extra)

    packed = maybe_packed(model, None)

    def hf_packed(i, m):                  # HF's own loop over the same prepacked weights autospec uses
        with packed.active():
            return hf()(i, m)

    out = {"hf_plain": (hf(), None)}
    if packed is not None:
        out["hf_plain_prepacked"] = (hf_packed, None)
    if size == 1 and args.draft == "ngram":
        for k in (3, 10):
            out[f"hf_prompt_lookup_{k}"] = (hf(prompt_lookup_num_tokens=k), None)
    specs = {f"fixed:{k}": f"fixed:{k}" for k in range(9)} | {"auto": "auto", "sweep": f"sweep:{args.sweep_spec_lens}"}
    for name, spec in specs.items():
        engine = AutoSpec(model, args.draft_model, controller=spec, cost_model=args.profile, max_batch_size=max(16, size),
                          records_window=None)
        out[name] = ((lambda i, m, e=engine: e.generate(i, attention_mask=m, **common)), engine)
    return out


def measure(model, tokenizer, size: int, args) -> dict:
    """Rounds over the batches, every method back to back on each batch in random order; ratios to
    HF plain are paired within a round."""
    groups = batches(tokenizer, size, args.num_prompts)
    runs = methods(model, tokenizer, size, args)
    if args.methods:
        keep = set(args.methods.split(",")) | {"hf_plain", "hf_plain_prepacked"}
        runs = {k: v for k, v in runs.items() if k in keep}
    runs["hf_plain"][0](*groups[0])                             # warm up torch
    if "auto" in runs:
        for group in groups:
            runs["auto"][0](*group)                             # auto's online tuning starts here
    times, outputs, rounds = run_rounds(runs, groups, args.reps, random.Random(size))
    tokens = len(groups) * size * args.new_tokens
    result = {}
    for name, (_, engine) in runs.items():
        ratios = [base / t for base, t in zip(times["hf_plain"], times[name])]
        row = {"wall_s": statistics.median(times[name]), "tokens_per_s": tokens / statistics.median(times[name]),
               "speedup_vs_hf_plain": statistics.median(ratios), "speedup_per_round": ratios,
               **paired("speedup_vs_hf_plain_prepacked", times.get("hf_plain_prepacked"), times[name]),
               "identical_to_hf_plain": all(torch.equal(a, b) for a, b in zip(outputs[name], outputs["hf_plain"]))}
        if engine is not None:
            row.update(engine_stats([r for recs in rounds[name] for r in recs]))
            row["full_batch"] = full_batch_stats(rounds[name], size)
        if name == "sweep":
            row["per_spec_len"] = sweep_stats(rounds[name], size)
            row["steps_file"] = write_steps(engine.records, args.out.with_name(f"{args.out.stem}_steps") / f"sweep_b{size}.jsonl")
        result[name] = row
    if "fixed:0" in result:
        base = result["fixed:0"]["full_batch"]["goodput_per_round"]
        for row in result.values():
            if "full_batch" in row:
                row["full_batch"].update(paired("goodput_vs_spec_len_0", row["full_batch"]["goodput_per_round"], base))
    return result


def run_rounds(runs: dict, groups: list, reps: int, rng: random.Random) -> tuple[dict, dict, dict]:
    """({name: [seconds per round]}, {name: [last round's output per batch]}, {name: [each round's step records]})."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    rounds: dict[str, list[list]] = {name: [] for name, (_, engine) in runs.items() if engine is not None}
    for _ in range(reps):
        marks = {name: len(runs[name][1].records) for name in rounds}
        for name in runs:
            times[name].append(0.0)
            outputs[name] = []
        for input_ids, attention_mask in groups:
            for name in rng.sample(list(runs), len(runs)):
                t0 = time.perf_counter()
                outputs[name].append(runs[name][0](input_ids, attention_mask))
                times[name][-1] += time.perf_counter() - t0
        for name, mark in marks.items():
            rounds[name].append(runs[name][1].records[mark:])
    return times, outputs, rounds


def engine_stats(records: list) -> dict[str, float]:
    """Tokens per target pass, mean spec_len (autospec.summary), mean verified width and median step ms
    of the measured steps."""
    from autospec import summarize

    totals = summarize(records)
    return {"tokens_per_target_pass": totals["tokens_per_target_pass"], "mean_spec_len": totals["mean_spec_len"],
            "mean_verified_width": sum(r.verified_width for r in records) / len(records),
            "median_step_ms": 1e3 * statistics.median(r.step_time_s for r in records)}


def full_batch_stats(rounds: list[list], size: int) -> dict:
    """Goodput at batch size `size`: the steps with every row of the batch still running (a static
    batch ends with a tail of fewer rows, waiting for its slowest row; prefill is not a step), per
    round and as a whole, with those steps' tokens per pass and verified width."""
    full = [[r for r in recs if r.batch_size == size] for recs in rounds]
    seconds = [sum(r.step_time_s for r in recs) for recs in full]
    per_round = [sum(r.num_emitted_tokens for r in recs) / t if recs else NAN
                 for recs, t in zip(full, seconds)]          # NaN: a round without such steps
    step_ms = [1e3 * t / len(recs) if recs else NAN for recs, t in zip(full, seconds)]
    steps = [r for recs in full for r in recs]
    return {"goodput_tps": statistics.median(v for v in per_round if v == v), "goodput_per_round": per_round,
            "mean_step_ms_per_round": step_ms, "steps": len(steps), **engine_stats(steps)}


def sweep_stats(rounds: list[list], size: int) -> dict[int, dict]:
    """{spec_len: full_batch_stats of the sweep run's full-batch steps with that spec_len}, each paired
    per round with spec_len 0's steps of the same round (`goodput_vs_spec_len_0`): every spec_len
    measured within a fraction of a second of the others, so the host's drift cancels step by step."""
    spec_lens = sorted({r.spec_len for recs in rounds for r in recs if r.batch_size == size})
    out = {s: full_batch_stats([[r for r in recs if r.spec_len == s] for recs in rounds], size) for s in spec_lens}
    if 0 in out:
        for stats in out.values():
            stats.update(paired("goodput_vs_spec_len_0", stats["goodput_per_round"], out[0]["goodput_per_round"]))
    return out


def write_steps(records: list, path: Path) -> str:
    """The run's step log as `autospec plan --from-run` reads it."""
    path.unlink(missing_ok=True)
    sink = JsonlSink(path)
    for record in records:
        sink.write(record)
    sink.close()
    return str(path)


def paired(key: str, numerators: list[float] | None, denominators: list[float]) -> dict[str, float]:
    """{key: median over rounds of numerator / denominator}, or {} without the numerators (a baseline not run);
    rounds where either is NaN (no such steps) are left out, NaN when none is left."""
    if not numerators:
        return {}
    ratios = [n / d for n, d in zip(numerators, denominators) if n == n and d == d]
    return {key: statistics.median(ratios) if ratios else NAN}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--methods", default=None, help="comma-separated subset of methods to run")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--num-prompts", type=int, default=6, help="prompts per batch size (at least the batch size)")
    parser.add_argument("--sweep-spec-lens", default="0,1,2,3,4",
                        help="spec_lens the `sweep` method interleaves step by step (with 0, to pair the others with)")
    parser.add_argument("--draft", default="ngram", help="ngram | distilled | first:N")
    parser.add_argument("--profile", default=None, help="auto's cost-model prior (default: the shipped one for the drafter)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/hf_speed_cpu_<draft>.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    from autospec.backends.draft_model import make_draft
    from autospec.entrypoints.demo import default_profile
    args.draft_model = make_draft(args.draft, model)
    args.profile = args.profile or default_profile(args.draft)
    args.out = args.out or Path(f"benchmarks/results/hf_speed_cpu_{args.draft.replace(':', '')}.json")
    t0 = time.time()
    results = {}
    for size in args.batch_sizes:
        results[size] = measure(model, tokenizer, size, args)
        print_table(size, results[size])
    payload = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
               "command": " ".join(sys.argv), "model": "SmolLM2-135M-Instruct bfloat16", "drafter": args.draft, "prior_profile": args.profile,
               "new_tokens": args.new_tokens, "reps": args.reps, "wall_s": time.time() - t0, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out}")
    return 0


def print_table(size: int, result: dict) -> None:
    print(f"\nbatch {size}: {'method':<20}{'wall s':>8}{'tok/s':>8}{'vs HF':>7}{'vs HF pk':>9}{'tok/pass':>9}"
          f"{'spec_len':>9}{'full-batch vs 0':>16}")
    for name, row in result.items():
        extra = f"{row.get('speedup_vs_hf_plain_prepacked', float('nan')):>9.2f}"
        extra += f"{row.get('tokens_per_target_pass', float('nan')):>9.2f}{row.get('mean_spec_len', float('nan')):>9.2f}"
        extra += f"{row.get('full_batch', {}).get('goodput_vs_spec_len_0', float('nan')):>16.2f}"
        flag = "" if row["identical_to_hf_plain"] else "  (bf16 output differs from HF's)"
        print(f"{'':>9}{name:<20}{row['wall_s']:>8.2f}{row['tokens_per_s']:>8.1f}{row['speedup_vs_hf_plain']:>7.2f}{extra}{flag}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
