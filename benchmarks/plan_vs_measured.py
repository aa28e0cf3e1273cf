"""Does the plan from a profile pick what the HF-backend benchmark measured as best? (issue 4, claim 2)

    python benchmarks/plan_vs_measured.py --profile P.yaml --measured benchmarks/results/hf_speed_cpu_ngram.json

For each batch size in the measurement: the plan's spec_len (cost model at the profile's measured
acceptance), the fixed spec_len with the best measured speedup, and the plan's measured speedup as
a fraction of the best. A batch size counts as agreeing when the plan picked the best; where it did
not, the plan's measured goodput should be within 5% of the best. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autospec import CostModel
from autospec.plan import acceptance_vector, plan_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--measured", type=Path, required=True)
    parser.add_argument("--max-spec-len", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_vs_measured.json"))
    args = parser.parse_args()
    model = CostModel.from_profile(args.profile)
    measured = json.loads(args.measured.read_text())["results"]
    acceptance = acceptance_vector(model.profile.acceptance_per_pos, args.max_spec_len)
    rows = []
    for b_text, results in measured.items():
        b = int(b_text)
        planned = plan_rows(model, acceptance, [b], args.max_spec_len)[0].spec_len
        speedups = {int(k.split(":")[1]): v["speedup_vs_hf_plain"] for k, v in results.items() if k.startswith("fixed:")}
        best = max(speedups, key=speedups.get)
        rows.append({"batch_size": b, "planned_spec_len": planned, "measured_best_spec_len": best,
                     "planned_over_best": speedups[planned] / speedups[best], "agrees": planned == best})
    agree = sum(r["agrees"] for r in rows) / len(rows)
    within = all(r["agrees"] or r["planned_over_best"] >= 0.95 for r in rows)
    result = {"profile": args.profile, "measured": str(args.measured), "rows": rows,
              "agreement": agree, "disagreements_within_5pct": within}
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{'batch':>6}{'planned':>9}{'best':>6}{'planned/best':>14}")
    for r in rows:
        print(f"{r['batch_size']:>6}{r['planned_spec_len']:>9}{r['measured_best_spec_len']:>6}{r['planned_over_best']:>14.3f}")
    print(f"agreement {agree:.0%} of batch sizes; disagreements within 5% of the best: {within}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
