"""autospec's scheduler on vLLM's real Scheduler / AsyncScheduler classes, no model: convergence and cost.

    .venv-vllm/bin/python benchmarks/vllm_scheduler_sim.py [--steps 400] [--out benchmarks/results/vllm_scheduler_sim_cpu.json]

Replays EngineCore.step() by hand with the harness of tests/integrations/test_vllm_scheduler.py
(fabricated outputs, acceptance 0.7 per position, a simulated clock whose best K falls as the batch
grows) at batch 1, 4 and 16 under both classes, with `auto` and a flat prior. Reports the goodput of
the second half of the run against the best fixed K's expected goodput, the K values played in the
last 100 steps, rows that verified a K other than the one chosen for them, and the controller's
own cost per step (choose + observe, wall clock). Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integrations import test_vllm_scheduler as harness  # noqa: E402  (the tests' replay harness)


def measure(model_dir: str, async_: bool, batch: int, steps: int) -> dict:
    scheduler = harness.make_scheduler(model_dir, async_=async_)
    ks, goodput, mismatches = harness.run(scheduler, batch, steps, async_=async_)
    best = max(range(harness.K_MAX + 1), key=lambda k: harness.sim_goodput(batch, k))
    tail = ks[-100:]
    cost_s = scheduler.autospec.choose_time_s + scheduler.autospec.observe_time_s
    return {"class": type(scheduler).__name__, "batch_size": batch, "best_k": best,
            "best_goodput_tps": harness.sim_goodput(batch, best), "auto_goodput_tps": goodput,
            "ratio": goodput / harness.sim_goodput(batch, best), "k_last_100": {k: tail.count(k) for k in sorted(set(tail))},
            "mismatches": mismatches, "controller_us_per_step": 1e6 * cost_s / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model_dir = harness.write_model_dir(Path(tempfile.mkdtemp()))
    rows = [measure(model_dir, a, b, args.steps) for a in (False, True) for b in (1, 4, 16)]
    print(f"{'class':<24} {'batch':>5} {'best K':>6} {'ratio':>6} {'us/step':>8}  K played (last 100)  mismatches")
    for r in rows:
        print(f"{r['class']:<24} {r['batch_size']:>5} {r['best_k']:>6} {r['ratio']:>6.3f} "
              f"{r['controller_us_per_step']:>8.1f}  {r['k_last_100']}  {r['mismatches']}")
    if args.out:
        import vllm
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.platform(),
                                        "vllm": vllm.__version__, "date": time.strftime("%Y-%m-%d"),
                                        "steps": args.steps, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
