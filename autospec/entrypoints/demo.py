"""`autospec demo`: the main job on the embedded default model, in a few minutes on a CPU.

A continuous-batching workload on SmolLM2-135M-Instruct (bfloat16, CPU by default): the shipped
48 chat prompts with mixed output budgets, arriving as a Poisson process so the batch size rises
and falls. The same workload runs under `auto` and under fixed spec_lens (0 = plain decoding);
each run is written to runs/<name>-<controller>/ for the dashboard, and a table compares
throughput, latency, mean spec_len and tokens per target pass. Greedy decoding: every run emits
the same tokens, so only time differs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


DEFAULT_CONTROLLERS = "fixed:0,fixed:2,fixed:4,auto"
PROFILES_BY_DRAFT = {"ngram": "cpu-smollm2-135m-ngram-bf16", "distilled": "cpu-smollm2-135m-distilled-bf16"}


def default_profile(draft: str) -> str | None:
    """The shipped cost profile measured for this drafter with the embedded model on this project's
    VM (None: none shipped). Benchmarks that compare with earlier measurements pass it; the demo and
    the examples let AutoSpec find or calibrate its own prior."""
    from autospec.profiles import shipped_profiles
    name = PROFILES_BY_DRAFT.get(draft)
    return name if name in shipped_profiles() else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controllers", default=DEFAULT_CONTROLLERS, help="comma-separated controller specs")
    p.add_argument("--draft", default="distilled",
                   help="'distilled' (the shipped draft; measured faster than n-gram lookup on a CPU), 'ngram' or 'first:N' layers")
    p.add_argument("--profile", default="auto",
                   help="cost profile for the prior: a shipped name or a YAML path; default 'auto', what AutoSpec does "
                        "when given none (a cached or matching profile, else a calibration of a few seconds on first use)")
    p.add_argument("--num-requests", type=int, default=48)
    p.add_argument("--arrival-rate", type=float, default=6.0, help="requests per second (Poisson)")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, nargs=2, default=(24, 96), metavar=("MIN", "MAX"))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="demo", help="runs are written to runs/<name>-<controller>/")
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")


def build_requests(tokenizer: Any, num_requests: int, arrival_rate: float, budget: tuple[int, int], seed: int):
    """Shipped prompts (cycled), Poisson arrivals, per-request budgets drawn in [MIN, MAX]."""
    from autospec.backends.hf import GenerationRequest
    from autospec.prompts import chat_token_ids, load_prompts

    if num_requests < 1 or arrival_rate <= 0 or not 1 <= budget[0] <= budget[1]:
        raise ValueError("need --num-requests >= 1, --arrival-rate > 0 and 1 <= MIN <= MAX for --max-new-tokens")
    prompts = load_prompts()
    rng = np.random.default_rng(seed)
    ids = chat_token_ids(tokenizer, [prompts[i % len(prompts)]["prompt"] for i in range(num_requests)])
    arrivals = np.cumsum(rng.exponential(1.0 / arrival_rate, num_requests)) - 0.0
    budgets = rng.integers(budget[0], budget[1] + 1, num_requests)
    return [GenerationRequest(p, int(n), f"req{i}", float(a)) for i, (p, n, a) in enumerate(zip(ids, budgets, arrivals))]


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from autospec.entrypoints.compare import check_specs
    from autospec.controllers import split_specs
    from autospec.entrypoints.engine import AutoSpec
    from autospec.backends.draft_model import make_draft
    from autospec.backends.models import load_smollm2
    from autospec.runs import RunWriter

    specs = check_specs(split_specs(args.controllers))
    profile = args.profile
    model, tokenizer = load_smollm2(dtype=getattr(torch, args.dtype), device=args.device)
    draft = make_draft(args.draft, model)
    requests = build_requests(tokenizer, args.num_requests, args.arrival_rate, tuple(args.max_new_tokens), args.seed)
    print(f"SmolLM2-135M-Instruct ({args.dtype}, {args.device}), drafter: {args.draft}, {len(requests)} requests "
          f"at {args.arrival_rate}/s, max batch {args.max_batch_size}, prior profile: {profile}")
    rows = []
    for spec in specs:
        name = f"{args.name}-{spec.replace(':', '')}"
        writer = RunWriter(name, {"kind": "hf", "model": "SmolLM2-135M-Instruct", "drafter": args.draft,
                                  "controller": spec, "dtype": args.dtype, "device": args.device,
                                  "profile": profile}, args.runs_dir)
        engine = AutoSpec(model, draft, controller=spec, cost_model=profile, max_batch_size=args.max_batch_size,
                          seed=args.seed, sinks=[writer])
        result = engine.serve(requests, eos_token_id=tokenizer.eos_token_id, progress=True)
        writer.update_meta(prior=engine.summary()["prior"])
        writer.close("finished" if result.error is None else "failed")
        rows.append(demo_row(spec, result))
        writer.update_meta(summary=rows[-1])
    print(format_demo_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


def demo_row(spec: str, result: Any) -> dict[str, Any]:
    s = result.summary
    latency = [r.finish_s - r.arrival_s for r in result.results]
    return {"controller": spec, "requests": len(result.results), "output_tokens": result.num_output_tokens,
            "wall_s": result.wall_time_s, "throughput_tps": result.throughput_tps,
            "mean_latency_s": float(np.mean(latency)) if latency else float("nan"),
            "p50_ttft_s": float(np.median([r.ttft_s for r in result.results])) if result.results else float("nan"),
            "mean_spec_len": s.get("mean_spec_len", float("nan")),
            "tokens_per_target_pass": s.get("tokens_per_target_pass", float("nan")),
            "mean_batch_size": float(np.mean([r.batch_size for r in result.records])) if result.records else 0.0,
            "error": result.error}


def format_demo_table(rows: list[dict[str, Any]]) -> str:
    base = next((r["throughput_tps"] for r in rows if r["controller"] == "fixed:0"), None)
    lines = [f"{'controller':<12}{'tokens/s':>10}{'vs plain':>10}{'latency s':>11}{'p50 TTFT s':>12}"
             f"{'spec_len':>10}{'tok/pass':>10}{'batch':>7}"]
    for r in rows:
        ratio = f"{r['throughput_tps'] / base:.2f}x" if base else "-"
        lines.append(f"{r['controller']:<12}{r['throughput_tps']:>10.1f}{ratio:>10}{r['mean_latency_s']:>11.2f}"
                     f"{r['p50_ttft_s']:>12.2f}{r['mean_spec_len']:>10.2f}{r['tokens_per_target_pass']:>10.2f}"
                     f"{r['mean_batch_size']:>7.1f}")
    return "\n".join(lines)


COMMANDS = {"demo": (add_arguments, run_demo)}
