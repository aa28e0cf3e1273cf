"""Soak: many serve() calls on the same engines, with the memory and the outputs watched.

    python benchmarks/soak.py --model tiny --calls 32 --requests 160 --out benchmarks/results/soak_tiny.json
    python benchmarks/soak.py --model smollm2 --calls 8 --requests 24 --arrival-rate 20 --out benchmarks/results/soak_smollm2_f32.json

Two engines live side by side for the whole run, one with a draft model and one with n-gram
lookup (tiny: random 4-layer Llama targets with a 1-layer truncated draft; smollm2: the embedded
SmolLM2-135M-Instruct, float32 or --dtype bfloat16, with its shipped distilled draft). Each round calls serve() once
on each engine with a fresh workload: Poisson arrivals, prompts of 1-40 tokens (tiny; the shipped
chat prompts for smollm2), budgets of 1-60 new tokens, EOS on (tiny: three ids its greedy
output reaches midway); every third call samples
(temperature 0.8, top-p 0.95), the others are greedy. After every call it records the process's
resident memory (from /proc/self/statm), the records the engine holds and the call's outcome; for
greedy calls a sample of requests is re-run with the target's own `generate` and compared token by
token. Reports requests served, failed calls (an error, unfinished or rejected requests), RSS
growth after the warm-up rounds, records held against the window, and mismatches; writes JSON
and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from autospec import AutoSpec
from autospec.backends.hf import GenerationRequest


def rss_mb() -> float:
    """The process's resident set size now (Linux /proc; else the peak from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_models(seed: int = 0) -> tuple[Any, Any, list[list[int]], list[int]]:
    """A random 4-layer Llama, its first layer as the draft, prompt material, and three EOS ids that
    rows reach midway (picked from a probe of the target's own greedy output)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from autospec.backends.models import truncated_draft
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    target = LlamaForCausalLM(config).eval()
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 512) for _ in range(rng.randint(1, 40))] for _ in range(64)]
    return target, truncated_draft(target, 1), prompts, probe_eos(target, prompts[:16])


def probe_eos(target: Any, prompts: list[list[int]]) -> list[int]:
    """The three tokens that appear in the middle of the most probe rows' greedy continuations."""
    counts: dict[int, int] = {}
    for p in prompts:
        out = target.generate(torch.tensor([p]), max_new_tokens=40, do_sample=False, pad_token_id=0,
                              eos_token_id=None)[0, len(p):].tolist()
        for t in set(out[5:35]):
            counts[t] = counts.get(t, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:3]


def smollm2_models(dtype: torch.dtype) -> tuple[Any, Any, list[list[int]], list[int]]:
    from autospec.backends.draft_model import load_shipped_draft
    from autospec.backends.models import load_smollm2
    from autospec.prompts import chat_token_ids, load_prompts
    target, tokenizer = load_smollm2(dtype=dtype)
    prompts = chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts()])
    return target, load_shipped_draft(target), prompts, [int(tokenizer.eos_token_id)]


def workload(prompts: list[list[int]], n: int, rate_per_s: float, max_new: int, rng: np.random.Generator,
             tag: str) -> list[GenerationRequest]:
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    picks = rng.integers(0, len(prompts), n)
    budgets = rng.integers(1, max_new + 1, n)
    return [GenerationRequest(list(prompts[k]), int(b), f"{tag}-{i}", float(a))
            for i, (k, b, a) in enumerate(zip(picks, budgets, arrivals))]


def reference_tokens(target: Any, request: GenerationRequest, eos: list[int]) -> list[int]:
    """The target's own greedy continuation, cut after its first EOS (as serve() returns it)."""
    out = target.generate(torch.tensor([request.prompt_ids]), max_new_tokens=request.max_new_tokens,
                          do_sample=False, eos_token_id=eos, pad_token_id=0)[0, len(request.prompt_ids):].tolist()
    ends = [i for i, t in enumerate(out) if t in eos]
    return out[: ends[0] + 1] if ends else out


def one_call(name: str, engine: AutoSpec, target: Any, requests: list[GenerationRequest], sample: bool, eos: list[int],
             checks: int, rng: random.Random) -> dict[str, Any]:
    kwargs = dict(do_sample=True, temperature=0.8, top_p=0.95) if sample else {}
    t0 = time.perf_counter()
    result = engine.serve(requests, eos_token_id=eos, progress=False, **kwargs)
    wall_s = time.perf_counter() - t0
    mismatches = checked = 0
    if not sample and result.results:
        by_id = {r.request_id: r for r in requests}
        for res in rng.sample(result.results, min(checks, len(result.results))):
            checked += 1
            mismatches += res.output_ids != reference_tokens(target, by_id[res.request_id], eos)
    return {"engine": name, "sampling": sample, "requests": len(requests), "finished": len(result.results),
            "eos_finished": sum(r.finish_reason == "eos" for r in result.results), "unfinished": len(result.unfinished),
            "rejected": len(result.rejected), "error": result.error, "wall_s": round(wall_s, 3),
            "output_tokens": result.num_output_tokens, "steps": result.summary.get("steps", 0),
            "records_held": len(engine.memory), "records_written": engine.memory.num_written,
            "checked": checked, "mismatches": mismatches, "rss_mb": round(rss_mb(), 1)}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    target, draft, prompts, eos = tiny_models(args.seed) if args.model == "tiny" else smollm2_models(
        getattr(torch, args.dtype))
    engines = {"draft-model": AutoSpec(target, draft, controller="auto", max_batch_size=args.max_batch_size,
                                       seed=args.seed, records_window=args.window),
               "ngram": AutoSpec(target, "ngram", controller="auto", max_batch_size=args.max_batch_size,
                                 seed=args.seed, records_window=args.window)}
    rng, check_rng = np.random.default_rng(args.seed), random.Random(args.seed)
    calls: list[dict[str, Any]] = []
    start_mb = rss_mb()
    with tqdm(total=args.calls * len(engines), desc="serve calls", unit="call") as bar:
        for call in range(args.calls):
            for name, engine in engines.items():
                reqs = workload(prompts, args.requests, args.arrival_rate, args.max_new_tokens, rng, f"{call}")
                calls.append({"call": call, **one_call(name, engine, target, reqs, call % 3 == 2, eos, args.checks,
                                                       check_rng)})
                bar.update()
    return report(args, calls, start_mb, eos)


def report(args: argparse.Namespace, calls: list[dict[str, Any]], start_mb: float, eos: list[int]) -> dict[str, Any]:
    warm = [c["rss_mb"] for c in calls if c["call"] < args.warmup_calls]
    after = [c["rss_mb"] for c in calls if c["call"] >= args.warmup_calls]
    failed = [c for c in calls if c["error"] or c["unfinished"] or c["rejected"]]
    per_engine = {}
    for name in sorted({c["engine"] for c in calls}):
        mine = [c for c in calls if c["engine"] == name]
        per_engine[name] = {"calls": len(mine), "requests_served": sum(c["finished"] for c in mine),
                            "eos_finished": sum(c["eos_finished"] for c in mine),
                            "output_tokens": sum(c["output_tokens"] for c in mine),
                            "failed_calls": sum(c in failed for c in mine),
                            "greedy_checked": sum(c["checked"] for c in mine),
                            "greedy_mismatches": sum(c["mismatches"] for c in mine),
                            "records_written": mine[-1]["records_written"],
                            "max_records_held": max(c["records_held"] for c in mine)}
    return {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            "command": "python benchmarks/soak.py " + " ".join(args.argv), "model": args.model, "dtype": args.dtype if args.model == "smollm2" else "float32",
            "eos_token_ids": eos,
            "records_window": args.window, "warmup_calls": args.warmup_calls,
            "requests_served": sum(c["finished"] for c in calls), "failed_calls": len(failed),
            "greedy_mismatches": sum(c["mismatches"] for c in calls),
            "rss_start_mb": round(start_mb, 1), "rss_after_warmup_mb": max(warm, default=start_mb),
            "rss_end_mb": calls[-1]["rss_mb"], "rss_max_mb": max(c["rss_mb"] for c in calls),
            "rss_growth_after_warmup_mb": round(max(after, default=0.0) - max(warm, default=start_mb), 1),
            "wall_s": round(sum(c["wall_s"] for c in calls), 1), "per_engine": per_engine, "calls": calls}


def print_table(out: dict[str, Any]) -> None:
    print(f"{'engine':12} {'calls':>5} {'served':>7} {'eos':>6} {'failed':>6} {'checked':>7} {'mismatch':>8} "
          f"{'records written':>15} {'max held':>8}")
    for name, e in out["per_engine"].items():
        print(f"{name:12} {e['calls']:5d} {e['requests_served']:7d} {e['eos_finished']:6d} {e['failed_calls']:6d} "
              f"{e['greedy_checked']:7d} {e['greedy_mismatches']:8d} {e['records_written']:15d} "
              f"{e['max_records_held']:8d}")
    print(f"RSS: {out['rss_start_mb']} MB at start, {out['rss_after_warmup_mb']} MB after {out['warmup_calls']} warm-up "
          f"rounds, {out['rss_end_mb']} MB at the end (max {out['rss_max_mb']}): growth after warm-up "
          f"{out['rss_growth_after_warmup_mb']} MB; {out['requests_served']} requests in {out['wall_s']} s of serve()")


def main(argv: list[str] | None = None) -> int:
    import sys
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="smollm2's dtype (tiny is float32); greedy equality is checked either way")
    p.add_argument("--calls", type=int, default=32, help="serve() calls per engine")
    p.add_argument("--requests", type=int, default=160, help="requests per call")
    p.add_argument("--arrival-rate", type=float, default=400.0, help="requests per second (Poisson)")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--window", type=int, default=2000, help="records each engine keeps in memory")
    p.add_argument("--warmup-calls", type=int, default=3)
    p.add_argument("--checks", type=int, default=4, help="requests per greedy call re-run with target.generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    torch.set_grad_enabled(True)                       # as a user's process is: autospec must not rely on it off
    out = soak(args)
    print_table(out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")
    return 0 if out["failed_calls"] == 0 and out["greedy_mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
