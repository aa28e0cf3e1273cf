"""Fixed spec_lens against the adaptive controllers, on a real model and on simulated GPUs.

    python examples/compare_controllers.py [--smoke] [--skip-real]

(a) The embedded SmolLM2-135M (bfloat16, this CPU) with its shipped distilled draft (`--draft
    ngram` for prompt lookup; the distilled draft measured faster here): the same continuous-
    batching workload (shipped prompts, Poisson arrivals, up to 8 rows) under fixed spec_len 0..8,
    the paper's table, `model`, `ucb`, `thompson` and `auto`; goodput per batch size from the
    step records.
(b) The simulated H200 profiles (7B+68M, 7B+160M, 13B+68M), static batches of 1..256 rows at
    acceptance 0.7: every controller's goodput as a fraction of the oracle's.

Prints both tables and writes docs/compare_controllers_cpu.png and docs/compare_controllers_sim.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from autospec.backends import AcceptanceSpec, Workload  # noqa: E402
from autospec.entrypoints.compare import SimSetup, compare  # noqa: E402

ADAPTIVE = ["table", "model", "ucb", "thompson", "auto"]
PROFILES = ["h200-llama2-7b-llama-68m", "h200-llama2-7b-llama-160m", "h200-llama2-13b-llama-68m"]


def goodput_by_batch(records) -> dict[int, float]:
    tokens, time_s = defaultdict(float), defaultdict(float)
    for r in records:
        tokens[r.batch_size] += r.num_emitted_tokens
        time_s[r.batch_size] += r.step_time_s
    return {b: tokens[b] / time_s[b] for b in sorted(tokens)}


def real_part(specs: list[str], num_requests: int, budget: tuple[int, int], draft_kind: str) -> dict[str, dict]:
    import torch

    from autospec.backends.draft_model import make_draft

    from autospec.entrypoints.demo import build_requests
    from autospec.entrypoints.engine import AutoSpec
    from autospec.backends.models import load_smollm2

    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    draft = make_draft(draft_kind, model)
    requests = build_requests(tokenizer, num_requests, 8.0, budget, seed=2)
    out = {}
    for spec in specs:
        engine = AutoSpec(model, draft, controller=spec, max_batch_size=8)
        served = engine.serve(requests, eos_token_id=tokenizer.eos_token_id, progress=False)
        out[spec] = {"throughput_tps": served.throughput_tps, "goodput_tps": served.summary["goodput_tps"],
                     "mean_spec_len": served.summary["mean_spec_len"], "by_batch": goodput_by_batch(served.records)}
        print(f"  {spec:<10} throughput {served.throughput_tps:7.1f} tok/s, step goodput "
              f"{served.summary['goodput_tps']:7.1f} tok/s, mean spec_len {served.summary['mean_spec_len']:.2f}", flush=True)
    return out


def sim_part(specs: list[str], batch_sizes: list[int], steps: int) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    for profile in PROFILES:
        out[profile] = {}
        for b in batch_sizes:
            setup = SimSetup(profile, Workload(batch_size=b, steps=steps, output_len=(10**9, 10**9)), AcceptanceSpec(mean=0.7))
            result = compare(setup, specs, warmup_steps=steps // 10)
            out[profile][b] = {k: v["ratio_to_oracle"] for k, v in result["controllers"].items()}
    return out


def print_sim(sim: dict, specs: list[str]) -> None:
    for profile, by_batch in sim.items():
        print(f"  {profile}: goodput / oracle, acceptance 0.7")
        print("    " + f"{'batch':>6}" + "".join(f"{s.replace('fixed:', 'f'):>8}" for s in specs))
        for b, ratios in by_batch.items():
            print("    " + f"{b:>6}" + "".join(f"{ratios[s]:>8.3f}" for s in specs))


def sim_figure(sim: dict, specs: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(sim), figsize=(5 * len(sim), 4), sharey=True)
    for ax, (profile, by_batch) in zip(np.atleast_1d(axes), sim.items()):
        sizes = list(by_batch)
        for s in specs:
            style = {"lw": 2.5, "color": "black"} if s == "auto" else {"lw": 1, "alpha": 0.7}
            ax.plot(sizes, [by_batch[b][s] for b in sizes], marker="o", label=s, **style)
        ax.set_xscale("log", base=2)
        ax.set(title=profile, xlabel="batch size", ylabel="goodput / oracle")
    np.atleast_1d(axes)[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_figure(real: dict, path: Path, draft_kind: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    sizes = sorted({b for v in real.values() for b in v["by_batch"]})
    for spec, v in real.items():
        style = {"lw": 2.5, "color": "black"} if spec == "auto" else {"lw": 1, "alpha": 0.7}
        ax.plot(sizes, [v["by_batch"].get(b, np.nan) for b in sizes], marker="o", label=spec, **style)
    ax.set(title=f"SmolLM2-135M bf16 + {draft_kind} draft, this CPU: goodput per batch size", xlabel="batch size",
           ylabel="goodput (tokens/s)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small version, to check it runs (CI)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--draft", default="distilled", help="drafter of the real part: distilled (shipped draft) or ngram")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args()
    t0 = time.time()
    fixed = [f"fixed:{k}" for k in range(9)]
    specs = ["fixed:0", "fixed:3", "auto"] if args.smoke else fixed + ADAPTIVE
    if not args.skip_real:
        print(f"(a) SmolLM2-135M, bf16, drafter: {args.draft}, this CPU:")
        real = real_part(specs, 3 if args.smoke else 12, (6, 10) if args.smoke else (24, 40), args.draft)
        if not args.smoke:
            real_figure(real, args.docs / "compare_controllers_cpu.png", args.draft)
    print("(b) simulated H200 profiles:")
    sim = sim_part(specs, [1, 16, 256] if args.smoke else [1, 4, 16, 64, 256], 200 if args.smoke else 1500)
    print_sim(sim, specs)
    if not args.smoke:
        args.docs.mkdir(parents=True, exist_ok=True)
        sim_figure(sim, specs, args.docs / "compare_controllers_sim.png")
        print(f"figures in {args.docs}/")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
