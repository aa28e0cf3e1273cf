"""The controller on the real embedded model, through the API a user calls, with default arguments.

    python benchmarks/controller_real.py [--rounds 4] [--drafts distilled ngram] \
        [--workloads chat8 static1 static2 poisson] [--out benchmarks/results/controller_real_cpu.json]

SmolLM2-135M-Instruct in bfloat16 on this machine's CPU, greedy, EOS ignored (every engine makes
the same tokens; only time differs). Workloads:
- chat8: 16 shipped chat prompts of 37-49 tokens, 64 new tokens each, `serve()` with max_batch_size=8;
- static1 / static2: `generate()` on 6 batches of 1 / 4 batches of 2 of those prompts (left-padded),
  64 new tokens;
- poisson: the demo's workload (shipped prompts, budgets 24..96, Poisson arrivals at 6 requests/s;
  32 requests here), `serve()` with the default max_batch_size=16.
Engines: `AutoSpec(model, None)` (plain decoding on autospec's engine), and per drafter (the shipped
distilled draft, n-gram lookup) every `fixed:k` for k = 0..4 and `auto` with default arguments
(no cost model passed: the engine finds or calibrates its prior). HF's own `model.generate` runs
static1 too. The profile cache starts empty ($AUTOSPEC_PROFILE_CACHE set to a fresh folder), so
the first `AutoSpec(model, draft)` per drafter calibrates: its time is reported, and a second process
loading the cached profile is timed. Every round builds fresh engines for each workload; a workload
is a list of calls (one `serve()`, or one `generate()` per static batch) and each call is run on
every engine in a fresh random order before the next call, so the machine's drift between minutes
falls on all engines alike (each engine still sees its calls in order). `auto` is measured on its
first pass ("auto") and again on a second pass of the same engine ("auto:steady", paired with a
second pass of plain decoding and scaled by plain's speed ratio between the passes). `--variant
NAME=JSON` adds `auto` engines with controller options (`{draft}/auto@NAME`), for tuning. The ratio reported per workload and drafter is auto's
tokens/s over the baseline that is best by median over the rounds ({plain, fixed:1..4}), per round,
and its median; also the per-round ratio to that round's best baseline (stricter: a max of noisy values).
Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

NEW_TOKENS = 64
BASELINES = ["plain", "fixed:1", "fixed:2", "fixed:3", "fixed:4"]


def load(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from autospec.backends.draft_model import make_draft

    from autospec.entrypoints.demo import build_requests
    from autospec.backends.models import load_smollm2
    from autospec.prompts import chat_token_ids, load_prompts

    torch.manual_seed(0)
    model, tokenizer = load_smollm2(dtype=torch.bfloat16, device="cpu")
    ids = chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts()])
    chat = [p for p in ids if 37 <= len(p) <= 49][:16]
    drafts = {name: make_draft(name, model) for name in args.drafts}
    poisson = build_requests(tokenizer, args.poisson_requests, 6.0, (24, 96), seed=0)
    return {"model": model, "tokenizer": tokenizer, "chat": chat, "drafts": drafts, "poisson": poisson}


def calibrate_first(setup: dict[str, Any]) -> dict[str, Any]:
    """The first AutoSpec(model, draft) per drafter on an empty cache, then a second process's load."""
    from autospec.entrypoints.engine import AutoSpec

    out = {}
    for name, draft in setup["drafts"].items():
        t0 = time.perf_counter()
        spec = AutoSpec(setup["model"], draft)
        out[name] = {"construct_s": round(time.perf_counter() - t0, 2), "prior": spec.summary()["prior"],
                     "second_process": second_process_load(name)}
    return out


def second_process_load(draft: str) -> dict[str, Any]:
    code = ("import time, torch; from autospec.backends.models import load_smollm2; from autospec.backends.draft_model import make_draft; "
            "from autospec.entrypoints.engine import AutoSpec; m, _ = load_smollm2(dtype=torch.bfloat16, device='cpu'); "
            f"d = make_draft({draft!r}, m); t0 = time.perf_counter(); s = AutoSpec(m, d); "
            "import json; print(json.dumps({'construct_s': round(time.perf_counter() - t0, 3), "
            "'prior': s.summary()['prior']}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def engines(setup: dict[str, Any], max_batch_size: int, variants: dict[str, dict]) -> dict[str, Any]:
    from autospec.entrypoints.engine import AutoSpec

    model = setup["model"]
    out = {"plain": AutoSpec(model, None, max_batch_size=max_batch_size)}
    for name, draft in setup["drafts"].items():
        for k in range(5):
            out[f"{name}/fixed:{k}"] = AutoSpec(model, draft, controller=f"fixed:{k}", max_batch_size=max_batch_size)
        out[f"{name}/auto"] = AutoSpec(model, draft, max_batch_size=max_batch_size)     # defaults
        for tag, options in variants.items():
            out[f"{name}/auto@{tag}"] = AutoSpec(model, draft, max_batch_size=max_batch_size, **options)
    return out


def static_batches(setup: dict[str, Any], size: int, count: int) -> list[tuple[Any, Any]]:
    rows = setup["chat"][: count * size]
    tok = setup["tokenizer"]
    return [(enc["input_ids"], enc["attention_mask"]) for enc in
            (tok.pad({"input_ids": rows[i:i + size]}, return_tensors="pt", padding=True) for i in range(0, len(rows), size))]


Call = Callable[[Any], tuple[int, float]]
STATIC_CALLS = {"static1": (1, 6), "static2": (2, 4)}        # (batch size, number of generate calls)


def workload(name: str, setup: dict[str, Any]) -> tuple[int, list[Call]]:
    """(max_batch_size, the workload's calls: run(engine) -> (tokens, seconds))."""
    if name == "chat8":
        return 8, [lambda engine: served(engine.serve(setup["chat"], max_new_tokens=NEW_TOKENS, eos_token_id=-1,
                                                      progress=False))]
    if name in STATIC_CALLS:
        return 16, [generate_call(setup, ids, mask) for ids, mask in static_batches(setup, *STATIC_CALLS[name])]
    if name == "poisson":
        return 16, [lambda engine: served(engine.serve(setup["poisson"], eos_token_id=-1, progress=False))]
    raise ValueError(f"unknown workload {name!r}")


def served(result: Any) -> tuple[int, float]:
    return result.num_output_tokens, result.wall_time_s


def generate_call(setup: dict[str, Any], ids: Any, mask: Any) -> Call:
    pad = setup["tokenizer"].pad_token_id

    def run(engine):
        t0 = time.perf_counter()
        out = engine.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, eos_token_id=-1,
                              pad_token_id=pad, do_sample=False)
        return (out.shape[1] - ids.shape[1]) * out.shape[0], time.perf_counter() - t0
    return run


class HFGenerate:
    """HF's own generate as an engine for the static workloads."""

    def __init__(self, model: Any):
        self.model = model

    def generate(self, ids, attention_mask=None, **kw):
        return self.model.generate(input_ids=ids, attention_mask=attention_mask, **kw)


def choices(engine: Any) -> dict[str, Any]:
    """spec_len counts per batch size over the engine's recorded steps."""
    counts: dict[int, Counter] = {}
    for r in engine.records:
        counts.setdefault(r.batch_size, Counter())[r.spec_len] += 1
    return {str(b): dict(sorted(c.items())) for b, c in sorted(counts.items())}


def is_auto(key: str) -> bool:
    return "/auto" in key


def interleaved(built: dict[str, Any], keys: list[str], calls: list[Call], rng: random.Random) -> dict[str, float]:
    """tokens/s per key over all calls, each call run on every key (random order) before the next."""
    tokens = dict.fromkeys(keys, 0)
    seconds = dict.fromkeys(keys, 0.0)
    for call in calls:
        for key in rng.sample(keys, len(keys)):
            made, took = call(built[key.removesuffix(":steady")])
            tokens[key] += made
            seconds[key] += took
    return {key: tokens[key] / seconds[key] for key in keys}


def one_round(setup: dict[str, Any], name: str, rng: random.Random, variants: dict[str, dict]) -> dict[str, Any]:
    max_batch_size, calls = workload(name, setup)
    built = engines(setup, max_batch_size, variants)
    if name == "static1":
        built["hf_generate"] = HFGenerate(setup["model"])
    tps = interleaved(built, list(built), calls, rng)
    picked = {key: choices(built[key]) for key in built if is_auto(key)}
    steady = [f"{key}:steady" for key in built if is_auto(key)]             # the auto engines' second pass,
    tps.update(interleaved(built, [*steady, "plain:steady"], calls, rng))     # paired with plain's
    picked.update({key: choices(built[key.removesuffix(":steady")]) for key in steady})
    return {"tokens_per_s": tps, "auto_choices": picked}


def summarise(rounds: dict[str, list[dict]], drafts: list[str]) -> dict[str, Any]:
    out = {}
    for name, runs in rounds.items():
        for draft in drafts:
            keys = {b: (b if b == "plain" else f"{draft}/{b}") for b in BASELINES}
            medians = {b: statistics.median(r["tokens_per_s"][k] for r in runs) for b, k in keys.items()}
            best = max(medians, key=medians.get)
            row = {"best_baseline": best, "baseline_median_tps": medians}
            for auto in auto_names(runs, draft):
                values = [r["tokens_per_s"][f"{draft}/{auto}"] / pass_scale(r, auto) for r in runs]
                to_best = [v / r["tokens_per_s"][keys[best]] for v, r in zip(values, runs)]
                to_round_best = [v / max(r["tokens_per_s"][k] for k in keys.values()) for v, r in zip(values, runs)]
                row[auto] = {"median_tps": statistics.median(values), "ratio_to_best": statistics.median(to_best),
                             "ratio_to_best_per_round": to_best, "ratio_to_round_best": statistics.median(to_round_best),
                             "ratio_to_round_best_per_round": to_round_best,
                             "ratio_to_plain": statistics.median(v / r["tokens_per_s"]["plain"] for v, r in zip(values, runs))}
            if name == "static1":
                row["auto_over_hf_generate"] = statistics.median(
                    r["tokens_per_s"][f"{draft}/auto"] / r["tokens_per_s"]["hf_generate"] for r in runs)
            row["idle_draft_fixed0_over_plain"] = statistics.median(
                r["tokens_per_s"][f"{draft}/fixed:0"] / r["tokens_per_s"]["plain"] for r in runs)
            out[f"{name} {draft}"] = row
    return out


def pass_scale(run: dict, auto: str) -> float:
    """1 for the first pass; for a second (":steady") pass, plain's speed then over its first-pass
    speed, so a steady value is compared with the baselines at the machine's speed of its own pass."""
    tps = run["tokens_per_s"]
    return tps["plain:steady"] / tps["plain"] if auto.endswith(":steady") else 1.0


def auto_names(runs: list[dict], draft: str) -> list[str]:
    """'auto', 'auto:steady' and each variant's pair, as measured for `draft`."""
    prefix = f"{draft}/"
    return sorted(k.removeprefix(prefix) for k in runs[0]["tokens_per_s"] if k.startswith(prefix) and is_auto(k))


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'workload / drafter':<20} {'engine':<14} {'best':>8} {'best tok/s':>10} {'x/best':>7} {'per round':>34} "
          f"{'/round-best':>11} {'fixed0/plain':>12} {'auto/HF':>8}")
    for key, row in summary.items():
        hf = f"{row['auto_over_hf_generate']:.2f}" if "auto_over_hf_generate" in row else ""
        for auto in [k for k in row if k.startswith("auto") and k != "auto_over_hf_generate"]:
            ratios = row[auto]
            per_round = ", ".join(f"{x:.3f}" for x in ratios["ratio_to_best_per_round"])
            print(f"{key:<20} {auto:<14} {row['best_baseline']:>8} "
                  f"{row['baseline_median_tps'][row['best_baseline']]:>10.1f} {ratios['ratio_to_best']:>7.3f} "
                  f"{per_round:>34} {ratios['ratio_to_round_best']:>11.3f} "
                  f"{row['idle_draft_fixed0_over_plain']:>12.3f} {hf if auto == 'auto' else '':>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--drafts", nargs="+", default=["distilled", "ngram"])
    parser.add_argument("--workloads", nargs="+", default=["chat8", "static1", "static2", "poisson"])
    parser.add_argument("--poisson-requests", type=int, default=32)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="an extra auto engine with these controller options, e.g. low='{\"explore_fraction\": 0.01}'")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = {tag: json.loads(options) for tag, options in (v.split("=", 1) for v in args.variant)}
    os.environ["AUTOSPEC_PROFILE_CACHE"] = tempfile.mkdtemp(prefix="autospec-bench-profiles-")   # uncached
    started = time.perf_counter()
    setup = load(args)
    calibration = calibrate_first(setup)
    for name, c in calibration.items():
        print(f"calibration {name}: first AutoSpec(...) {c['construct_s']} s ({c['prior']['kind']}, "
              f"{c['prior']['seconds']} s measuring); second process {c['second_process']['construct_s']} s "
              f"({c['second_process']['prior']['kind']})", flush=True)
    workload("chat8", setup)[1][0](engines(setup, 8, {})["plain"])      # warm-up
    rng = random.Random(0)
    rounds: dict[str, list[dict]] = {name: [] for name in args.workloads}
    for k in range(args.rounds):
        for name in args.workloads:
            rounds[name].append(one_round(setup, name, rng, variants))
        print(f"round {k + 1} done at {time.perf_counter() - started:.0f} s", flush=True)
        print_table(summarise(rounds, args.drafts))
        if args.out:                                     # after every round: a cut-short run keeps its rounds
            write_result(args, variants, calibration, rounds, k + 1, started)


def write_result(args: argparse.Namespace, variants: dict, calibration: dict, rounds: dict[str, list[dict]],
                 done: int, started: float) -> None:
    result = {"command": " ".join(sys.argv), "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "rounds": done, "rounds_planned": args.rounds, "new_tokens": NEW_TOKENS, "variants": variants,
              "calibration": calibration, "summary": summarise(rounds, args.drafts), "per_round": rounds,
              "wall_s": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


def machine() -> str:
    """The platform, core count and CPU model with its widest vector extensions (bf16 speed on a CPU
    depends on them: AVX-512 BF16 / AMX run it natively, AVX2 emulates it)."""
    from autospec.backends.calibration import cpu_model_name

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    wide = sorted({f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2"))})
    return f"{platform.machine()} {os.cpu_count()} cores, {cpu_model_name()} ({' '.join(wide)}), {platform.platform()}"


if __name__ == "__main__":
    main()
