"""Serving with continuous batching: the best fixed spec_len against `auto`, per request rate.

    python examples/serving_trace.py [--smoke] [--skip-real]

The paper's serving set-up: requests arrive as a Gamma process (coefficient of variation 2, so
in bursts) at several rates, each wants 32-256 tokens, and up to 256 run at once. Each request's
acceptance is drawn from Beta(6, 3) (mean 0.67), and the traffic's mix drifts (an amplitude of
0.25 over 2,000 steps: e.g. code-like and chat-like traffic taking turns), so the best spec_len
moves with both the batch size and the acceptance.

Part 1, the simulated H200 (Llama-2-7B + llama-68m, measured step costs): every fixed spec_len
0..8 and `auto`, averaged over seeds; per rate: throughput, mean latency, TTFT and TPOT (p50/p99)
of the fixed spec_len with the best mean latency, and of `auto`.
Part 2, the real embedded model on this CPU (SmolLM2-135M, bfloat16, its shipped distilled draft,
which measured faster here than n-gram lookup; `--draft ngram` for that): the same
kind of trace, small, at two rates; `auto` against fixed spec_lens 0, 1, 2, 4.

Writes docs/serving_trace.png and benchmarks/results/serving_trace.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from autospec.backends import AcceptanceSpec, Workload  # noqa: E402
from autospec.entrypoints.compare import SimSetup, run_controller  # noqa: E402


def latency_stats(requests: list[tuple[float, float, float, int]]) -> dict[str, float]:
    """Mean latency, TTFT and TPOT (p50, p99) in seconds over (arrival, first token, finish, tokens)."""
    arrival, first, finish, tokens = (np.array(v, dtype=float) for v in zip(*requests))
    latency, ttft = finish - arrival, first - arrival
    tpot = (finish - first) / np.maximum(1.0, tokens - 1.0)
    return {"mean_latency_s": float(latency.mean()), "p50_latency_s": float(np.percentile(latency, 50)),
            "p99_latency_s": float(np.percentile(latency, 99)), "p50_ttft_s": float(np.percentile(ttft, 50)),
            "p99_ttft_s": float(np.percentile(ttft, 99)), "p50_tpot_s": float(np.percentile(tpot, 50)),
            "p99_tpot_s": float(np.percentile(tpot, 99))}


def simulate(rate: float, spec: str, seed: int, num_requests: int) -> dict[str, float]:
    setup = SimSetup("h200-llama2-7b-llama-68m",
                     Workload(arrival_rate=rate, arrival="gamma", gamma_cv=2.0, num_requests=num_requests,
                              output_len=(32, 256), max_batch_size=256, steps=10**8),
                     AcceptanceSpec(beta=(6.0, 3.0), drift_amplitude=0.25, drift_period_steps=2000), seed=seed)
    records, backend = run_controller(setup, spec)
    tokens = sum(r.num_generated for r in backend.finished)
    span = max(r.finish_s for r in backend.finished) - min(r.arrival_s for r in backend.finished)
    return {"throughput_tps": tokens / span, "mean_batch_size": float(np.mean([r.batch_size for r in records])),
            "mean_spec_len": float(np.mean([r.spec_len for r in records])),
            **latency_stats([(r.arrival_s, r.first_token_s, r.finish_s, r.num_generated) for r in backend.finished])}


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def simulated_part(rates: list[float], seeds: int, num_requests: int) -> dict:
    out = {}
    for rate in rates:
        results = {spec: average([simulate(rate, spec, s, num_requests) for s in range(seeds)])
                   for spec in [f"fixed:{k}" for k in range(9)] + ["auto"]}
        best = min((k for k in results if k.startswith("fixed")), key=lambda k: results[k]["mean_latency_s"])
        out[rate] = {"best_fixed": best, "results": results,
                     "auto_latency_vs_best_fixed": results["auto"]["mean_latency_s"] / results[best]["mean_latency_s"]}
        print(f"  rate {rate:5.1f}/s: best fixed {best} mean latency {results[best]['mean_latency_s']:.3f} s, "
              f"auto {results['auto']['mean_latency_s']:.3f} s ({out[rate]['auto_latency_vs_best_fixed']:.3f}x)", flush=True)
    return out


def real_part(rates: list[float], num_requests: int, budget: tuple[int, int], specs: list[str], draft_kind: str) -> dict:
    import torch

    from autospec.backends.draft_model import make_draft

    from autospec.entrypoints.demo import build_requests
    from autospec.entrypoints.engine import AutoSpec
    from autospec.backends.models import load_smollm2

    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    draft = make_draft(draft_kind, model)
    out = {}
    for rate in rates:
        requests = build_requests(tokenizer, num_requests, rate, budget, seed=1)
        results = {}
        for spec in specs:
            engine = AutoSpec(model, draft, controller=spec, max_batch_size=8)
            served = engine.serve(requests, eos_token_id=tokenizer.eos_token_id, progress=False)
            stats = latency_stats([(r.arrival_s, r.first_token_s, r.finish_s, len(r.output_ids)) for r in served.results])
            results[spec] = {"throughput_tps": served.throughput_tps, **stats,
                             "mean_spec_len": served.summary.get("mean_spec_len", 0.0)}
        best = min((k for k in results if k != "auto"), key=lambda k: results[k]["mean_latency_s"])
        out[rate] = {"best_fixed": best, "results": results,
                     "auto_latency_vs_best_fixed": results["auto"]["mean_latency_s"] / results[best]["mean_latency_s"]}
        print(f"  rate {rate:4.1f}/s: best fixed {best} mean latency {results[best]['mean_latency_s']:.2f} s, "
              f"auto {results['auto']['mean_latency_s']:.2f} s ({out[rate]['auto_latency_vs_best_fixed']:.3f}x)", flush=True)
    return out


def figure(sim: dict, path: Path) -> None:
    rates = sorted(sim)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, key in (("best fixed spec_len", None), ("auto", "auto")):
        latency = [sim[r]["results"][key or sim[r]["best_fixed"]]["mean_latency_s"] for r in rates]
        p99 = [sim[r]["results"][key or sim[r]["best_fixed"]]["p99_latency_s"] for r in rates]
        axes[0].plot(rates, latency, marker="o", label=label)
        axes[1].plot(rates, p99, marker="o", label=label)
    for ax, title in zip(axes, ("mean latency", "p99 latency")):
        ax.set(xlabel="request rate (requests/s)", ylabel="seconds", title=f"simulated H200 7B+68M: {title}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests, to check it runs (CI)")
    parser.add_argument("--skip-real", action="store_true", help="only the simulated part")
    parser.add_argument("--draft", default="distilled", help="drafter of the real part: distilled (shipped draft) or ngram")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/serving_trace.json"))
    args = parser.parse_args()
    t0 = time.time()
    rates, seeds, num = ([10.0, 60.0], 1, 150) if args.smoke else ([5.0, 20.0, 40.0, 60.0], 2, 1000)
    print("simulated H200 (Llama-2-7B + llama-68m), Gamma arrivals (cv 2), Beta(6,3) acceptance drifting by 0.25:")
    sim = simulated_part(rates, seeds, num)
    result = {"simulated_h200": {str(k): v for k, v in sim.items()},
              "settings": {"rates": rates, "seeds": seeds, "num_requests": num, "smoke": args.smoke}}
    if not args.skip_real:
        print(f"real SmolLM2-135M (bf16, drafter: {args.draft}) on this CPU:")
        real_rates, real_num, budget = ([4.0], 4, (8, 12)) if args.smoke else ([1.0, 6.0], 16, (24, 48))
        specs = ["fixed:0", "fixed:2", "auto"] if args.smoke else ["fixed:0", "fixed:1", "fixed:2", "fixed:4", "auto"]
        real = real_part(real_rates, real_num, budget, specs, args.draft)
        result["real_cpu_smollm2"] = {"drafter": args.draft, **{str(k): v for k, v in real.items()}}
    if not args.smoke:
        args.docs.mkdir(parents=True, exist_ok=True)
        figure(sim, args.docs / "serving_trace.png")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.docs / 'serving_trace.png'} and {args.json}")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
