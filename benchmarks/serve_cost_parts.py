"""Where a `serve()` call's time goes, per fixed spec_len: steps, prefill, and steps by batch size.

    python benchmarks/serve_cost_parts.py [--spec-lens 0 1 2] [--reps 2] [--out benchmarks/results/serve_cost_parts_cpu.json]

SmolLM2-135M-Instruct bf16 + the shipped distilled draft on this CPU, the chat8 workload of
benchmarks/controller_real.py (16 chat prompts, 64 new tokens each, EOS ignored, max batch 8).
Per engine `fixed:k`: wall time, the sum of its steps' times, prefill (admission) time, tokens/s
end to end and over step time alone, and steps / tokens / tokens-per-second at each batch size.
It shows what the controller's step records do not: rows that accept different numbers of drafts
finish at different steps, so admissions split into small prefills and the batch drains in a
tail of small steps. With `--auto`, default `auto` engines run the same workload too, and each
reports its spec_len choices at batch 8 and its posterior goodput per arm there after the call.
Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parts(result) -> dict:
    steps_s = sum(r.step_time_s for r in result.records)
    by_batch: dict[int, list] = {}
    for r in result.records:
        row = by_batch.setdefault(r.batch_size, [0, 0, 0.0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + r.num_emitted_tokens, row[2] + r.step_time_s
    return {"wall_s": result.wall_time_s, "steps_s": steps_s, "prefill_s": result.prefill_time_s,
            "steps": len(result.records), "tokens_per_s": result.num_output_tokens / result.wall_time_s,
            "step_goodput_tps": result.num_output_tokens / steps_s,
            "by_batch_size": {b: {"steps": n, "tokens": t, "goodput_tps": t / s} for b, (n, t, s) in sorted(by_batch.items())}}


def batch8_view(engine) -> dict:
    """`auto`'s spec_len counts at batch 8 and its posterior mean goodput per arm there (tok/s)."""
    from collections import Counter

    mean, std, _ = engine.controller.posterior(8)
    return {"choices": dict(sorted(Counter(r.spec_len for r in engine.records if r.batch_size == 8).items())),
            "posterior_mean_tps": [round(float(m)) for m in mean[:5]], "posterior_std_tps": [round(float(x)) for x in std[:5]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-lens", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--auto", action="store_true", help="also default `auto` engines, with their batch-8 posterior")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("AUTOSPEC_PROFILE_CACHE", tempfile.mkdtemp())
    import controller_real
    from autospec.entrypoints.engine import AutoSpec

    setup = controller_real.load(argparse.Namespace(drafts=["distilled"], poisson_requests=1))
    model, draft = setup["model"], setup["drafts"]["distilled"]
    runs: dict[str, list] = {f"fixed:{k}": [] for k in args.spec_lens}
    if args.auto:
        runs["auto"] = []
    print(f"{'rep':>3} {'engine':<8} {'wall s':>7} {'steps s':>8} {'prefill s':>9} {'tok/s':>7} {'step tok/s':>10} "
          f"{'b=8 tok/s':>9} {'steps b<8':>9}")
    for rep in range(args.reps):
        for name in runs:
            engine = AutoSpec(model, draft, controller=name, max_batch_size=8)
            p = parts(engine.serve(setup["chat"], max_new_tokens=64, eos_token_id=-1, progress=False))
            if name == "auto":
                p["batch8"] = batch8_view(engine)
            runs[name].append(p)
            small = sum(v["steps"] for b, v in p["by_batch_size"].items() if b < 8)
            full = p["by_batch_size"].get(8, {}).get("goodput_tps", float("nan"))
            print(f"{rep:>3} {name:<8} {p['wall_s']:>7.2f} {p['steps_s']:>8.2f} {p['prefill_s']:>9.2f} "
                  f"{p['tokens_per_s']:>7.0f} {p['step_goodput_tps']:>10.0f} {full:>9.0f} {small:>9}"
                  + (f"  b=8 choices {p['batch8']['choices']}, posterior {p['batch8']['posterior_mean_tps']}"
                     if "batch8" in p else ""), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.platform(),
                                        "date": time.strftime("%Y-%m-%d"), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
