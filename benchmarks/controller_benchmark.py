"""Controller benchmark on the simulated backend (issue 2's claims), written to JSON + a table.

    python benchmarks/controller_benchmark.py [--quick] [--out benchmarks/results/controller_benchmark.json]

1. static grid: batch_size x acceptance, every controller vs the oracle (after a stated warm-up);
2. dynamic trace: batch size swept 1 -> 256 -> 1 (through non-power-of-two sizes), acceptance
   drifting 0.3 <-> 0.9; auto vs oracle and vs the best fixed spec_len in hindsight;
3. the prior: regret over the first 200 steps at a batch size never seen before, with the
   cost-model prior vs without it;
4. choose + observe time per step (median, microseconds);
5. claims 1-3 on every shipped H200 profile, nothing tuned per profile;
plus robustness: the controllers believe a different profile than the one that runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from autospec.backends import AcceptanceSpec, Workload
from autospec.entrypoints.compare import SimSetup, compare, cost_model_for, make_backend
from autospec.controllers import build_controller
from autospec.loop import run_step

PROFILES = ["h200-llama2-7b-llama-68m", "h200-llama2-7b-llama-160m", "h200-llama2-13b-llama-68m"]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ACCEPTANCES = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
ADAPTIVE = ["table", "heuristic", "model", "ucb", "thompson", "auto"]
FIXED = [f"fixed:{k}" for k in range(9)]
NEVER_ENDS = (10**9, 10**9)


def static_cell(task: tuple[str, int, float, int, int]) -> dict:
    profile, batch_size, acceptance, steps, warmup = task
    setup = SimSetup(profile, Workload(batch_size=batch_size, steps=steps, output_len=NEVER_ENDS),
                     AcceptanceSpec(mean=acceptance))
    result = compare(setup, FIXED + ADAPTIVE, warmup_steps=warmup)
    return {"profile": profile, "batch_size": batch_size, "acceptance": acceptance,
            "ratio": {k: v["ratio_to_oracle"] for k, v in result["controllers"].items()},
            "auto_mean_spec_len": result["controllers"]["auto"]["mean_spec_len"]}


def sweep_schedule(dwell: int) -> tuple[tuple[int, int], ...]:
    sizes = sorted({int(round(2 ** (i / 2))) for i in range(17)})  # 1, 1, 2, 3, 4, 6, 8, 11, ... 256
    sweep = sizes + sizes[::-1][1:-1]
    return tuple((dwell, b) for b in sweep)


def trace(task: tuple[str, str | None, int, int]) -> dict:
    profile, prior_profile, dwell, repeats = task
    schedule = sweep_schedule(dwell)
    steps = dwell * len(schedule) * repeats
    setup = SimSetup(profile, Workload(schedule=schedule, steps=steps, output_len=NEVER_ENDS),
                     AcceptanceSpec(mean=0.6, drift_amplitude=0.3, drift_period_steps=2500),
                     prior_profile=prior_profile)
    result = compare(setup, FIXED + ADAPTIVE)
    ctl, oracle = result["controllers"], result["oracle_goodput_tps"]
    best_fixed = max(FIXED, key=lambda k: ctl[k]["goodput_tps"])
    fixed_tps = ctl[best_fixed]["goodput_tps"]
    batch1_fixed = f"fixed:{cost_model_for(profile).best_spec_len(1, 0.6, 8)}"
    out = {"profile": profile, "prior_profile": prior_profile, "steps": steps, "oracle_goodput_tps": oracle,
           "best_fixed": best_fixed, "best_fixed_ratio": fixed_tps / oracle,
           "oracle_margin_over_best_fixed": oracle / fixed_tps - 1.0,
           "batch1_tuned_fixed": batch1_fixed, "batch1_tuned_fixed_ratio": ctl[batch1_fixed]["ratio_to_oracle"],
           "controllers": {}}
    for name in ADAPTIVE + FIXED:
        tps = ctl[name]["goodput_tps"]
        out["controllers"][name] = {"ratio_to_oracle": tps / oracle, "goodput_tps": tps,
                                    "margin_captured": (tps - fixed_tps) / (oracle - fixed_tps)}
    return out


def new_batch_regret(task: tuple[str, str, str, int, int, float]) -> dict:
    """Regret (in steps' worth of the oracle's goodput) over the first 200 steps at `new_batch`,
    after 1000 steps at batch size 8."""
    profile, spec, prior, new_batch, seed, acceptance = task
    schedule = ((1000, 8), (200, new_batch))
    setup = SimSetup(profile, Workload(schedule=schedule, steps=1200, output_len=NEVER_ENDS),
                     AcceptanceSpec(mean=acceptance), seed=seed)
    backend = make_backend(setup)
    controller = build_controller(spec, max_spec_len=8, cost_model=cost_model_for(profile), seed=seed, prior=prior)
    regret = 0.0
    for step in range(1200):
        truth = backend.true_goodput_vector(8)
        record = run_step(backend, controller, [])
        if step >= 1000:
            regret += 1.0 - truth[record.spec_len] / truth.max()
    return {"profile": profile, "controller": spec, "prior": prior, "new_batch": new_batch, "seed": seed,
            "acceptance": acceptance, "regret_steps": regret}


def overhead(profile: str, spec: str = "auto", steps: int = 5000) -> dict:
    """Median choose + observe time on a continuous-batching run (the batch size moves)."""
    setup = SimSetup(profile, Workload(arrival_rate=3000.0, num_requests=100000, steps=steps),
                     AcceptanceSpec(beta=(6.0, 3.0)))
    backend = make_backend(setup)
    controller = build_controller(spec, max_spec_len=8, cost_model=cost_model_for(profile), seed=0)
    times = []
    for _ in range(steps):
        ctx = backend.context()
        t0 = time.perf_counter()
        spec_len = controller.choose(ctx)
        t1 = time.perf_counter()
        record = backend.step(spec_len)
        t2 = time.perf_counter()
        controller.observe(record)
        times.append((t1 - t0) + (time.perf_counter() - t2))
    us = np.array(times[500:]) * 1e6
    return {"controller": spec, "median_us": float(np.median(us)), "p90_us": float(np.percentile(us, 90)),
            "steps": len(us)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and seeds (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/controller_benchmark.json"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    steps, warmup, dwell, seeds = (600, 100, 60, 2) if args.quick else (2000, 200, 200, 8)
    t0 = time.time()
    with Pool(args.workers) as pool:
        static = pool.map(static_cell, [(p, b, a, steps, warmup) for p in PROFILES for b in BATCH_SIZES
                                        for a in ACCEPTANCES], chunksize=1)
        traces = pool.map(trace, [(p, None, dwell, 2) for p in PROFILES]
                          + [("h200-llama2-7b-llama-68m", prior, dwell, 2)
                             for prior in ("h100-llama2-7b-llama-68m", "h200-llama2-7b-llama-160m")])
        regret = pool.map(new_batch_regret, [(p, spec, prior, nb, seed, a) for p in PROFILES
                                             for spec in ("thompson", "ucb") for prior in ("model", "none")
                                             for nb in (32, 128) for a in (0.5, 0.8) for seed in range(seeds)])
    timing = [overhead(PROFILES[0], spec) for spec in ("auto", "ucb", "model")]
    result = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}, python {platform.python_version()}",
              "command": " ".join(sys.argv), "steps_per_cell": steps, "warmup_steps": warmup,
              "wall_s": time.time() - t0, "static": static, "trace": traces, "regret": regret, "overhead": timing}
    result["summary"] = summarize(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print_tables(result)
    print(f"\nwrote {args.out} in {result['wall_s']:.0f} s")
    return 0


def summarize(result: dict) -> dict:
    out: dict = {"static_worst_cell": {}, "regret": {}}
    for profile in PROFILES:
        cells = [c for c in result["static"] if c["profile"] == profile]
        worst = {name: min(c["ratio"][name] for c in cells) for name in FIXED + ADAPTIVE}
        out["static_worst_cell"][profile] = worst
        for spec in ("thompson", "ucb"):
            mean = {prior: float(np.mean([r["regret_steps"] for r in result["regret"] if r["profile"] == profile
                                          and r["controller"] == spec and r["prior"] == prior]))
                    for prior in ("model", "none")}
            mean["ratio_with_to_without"] = mean["model"] / mean["none"]
            out["regret"][f"{profile} {spec}"] = mean
    return out


def print_tables(result: dict) -> None:
    s = result["summary"]
    print(f"1. static grid, worst cell's goodput / oracle (warm-up {result['warmup_steps']} of "
          f"{result['steps_per_cell']} steps left out)")
    names = FIXED + ADAPTIVE
    print(f"{'profile':<28}" + "".join(f"{n.replace('fixed:', 'f'):>7}" for n in names))
    for profile, worst in s["static_worst_cell"].items():
        print(f"{profile:<28}" + "".join(f"{worst[n]:>7.3f}" for n in names))
    print("\n2. dynamic trace (batch 1 -> 256 -> 1, acceptance 0.3 <-> 0.9): goodput / oracle")
    print(f"{'profile (prior)':<52}{'best fixed':>14}{'margin':>8}{'b1-tuned':>9}{'model':>7}{'ucb':>7}"
          f"{'thomp':>7}{'auto':>7}{'captured':>9}")
    for t in result["trace"]:
        c = t["controllers"]
        label = t["profile"] + (f" ({t['prior_profile']})" if t["prior_profile"] else "")
        print(f"{label:<52}{t['best_fixed'] + ' ' + format(t['best_fixed_ratio'], '.3f'):>14}"
              f"{t['oracle_margin_over_best_fixed']:>8.1%}{t['batch1_tuned_fixed_ratio']:>9.3f}"
              f"{c['model']['ratio_to_oracle']:>7.3f}{c['ucb']['ratio_to_oracle']:>7.3f}"
              f"{c['thompson']['ratio_to_oracle']:>7.3f}{c['auto']['ratio_to_oracle']:>7.3f}"
              f"{c['auto']['margin_captured']:>9.0%}")
    print("\n3. regret over the first 200 steps at a new batch size (steps of oracle goodput lost)")
    for key, r in s["regret"].items():
        print(f"{key:<44} with prior {r['model']:7.2f}   without {r['none']:7.2f}   ratio {r['ratio_with_to_without']:.3f}")
    print("\n4. choose + observe per step")
    for t in result["overhead"]:
        print(f"{t['controller']:<10} median {t['median_us']:.1f} us, p90 {t['p90_us']:.1f} us")


if __name__ == "__main__":
    sys.exit(main())
