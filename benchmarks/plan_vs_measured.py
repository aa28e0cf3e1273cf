"""Does the plan from a profile pick what the HF-backend benchmark measured as best? (issue 4, claim 2)

    python benchmarks/plan_vs_measured.py --profile P.yaml --measured benchmarks/results/hf_speed_cpu_ngram.json [MORE.json]

For each batch size in the measurement: the plan's spec_len, the fixed spec_len with the best
measured speedup, and the plan's measured speedup as a fraction of the best. A batch size agrees
when the plan picked the best; where it did not, the plan's measured goodput should be within 5%
of the best. Two plans are judged, both from the profile's step-time model:
- `profile`: acceptance (and, for n-gram drafting, draft coverage) as the profile measured it on
  its own prompt set, i.e. `autospec plan --profile P`;
- `workload`: acceptance of the benchmark's own workload, read from its tokens per target pass
  (E(s) for each fixed spec_len s gives P(first k drafts accepted) = E(k) - E(k - 1)), and the
  verified block width it measured, i.e. what `autospec plan --from-run` does with a run's log.
  This isolates the cost model: the workload's text statistics are given, the costs are predicted.
Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autospec import CostModel
from autospec.plan import acceptance_vector, plan_rows

AGREE_MIN, WITHIN = 0.8, 0.95


def fixed_rows(results: dict) -> dict[int, dict]:
    """{spec_len: the benchmark's row} for the fixed:s methods."""
    return {int(k.split(":")[1]): v for k, v in results.items() if k.startswith("fixed:")}


def workload_goodput(model: CostModel, batch_size: int, rows: dict[int, dict]) -> dict[int, float]:
    """Modelled tokens/s per spec_len with the workload's measured tokens per pass and verify width."""
    out = {}
    for s, row in rows.items():
        step_s = model.step_time_at_width_s(batch_size, s, row.get("mean_verify_q", s + 1))
        out[s] = batch_size * row["tokens_per_target_pass"] / step_s
    return out


def judge(planned: int, speedups: dict[int, float]) -> dict:
    best = max(speedups, key=speedups.get)
    return {"planned_spec_len": planned, "measured_best_spec_len": best,
            "planned_over_best": speedups[planned] / speedups[best], "agrees": planned == best}


def summary(rows: list[dict]) -> dict:
    agree = sum(r["agrees"] for r in rows) / len(rows)
    within = all(r["agrees"] or r["planned_over_best"] >= WITHIN for r in rows)
    return {"agreement": agree, "disagreements_within_5pct": within, "met": agree >= AGREE_MIN and within}


def compare(model: CostModel, measured: dict, max_spec_len: int) -> dict:
    profile_acceptance = acceptance_vector(model.profile.acceptance_per_pos, max_spec_len)
    out: dict = {"profile": [], "workload": []}
    for b_text, results in measured.items():
        b, rows = int(b_text), {s: r for s, r in fixed_rows(results).items() if s <= max_spec_len}
        speedups = {s: r["speedup_vs_hf_plain"] for s, r in rows.items()}
        planned = plan_rows(model, profile_acceptance, [b], max_spec_len)[0].spec_len
        out["profile"].append({"batch_size": b, **judge(planned, speedups)})
        modelled = workload_goodput(model, b, rows)
        out["workload"].append({"batch_size": b, **judge(max(modelled, key=modelled.get), speedups),
                                "tokens_per_target_pass": {s: r["tokens_per_target_pass"] for s, r in rows.items()},
                                "modelled_speedup": {s: g / modelled[0] for s, g in modelled.items()},
                                "measured_speedup": speedups})
    return {name: {"rows": rows, **summary(rows)} for name, rows in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--measured", type=Path, nargs="+", required=True,
                        help="hf_speed JSON files; a later file's batch sizes replace an earlier one's")
    parser.add_argument("--max-spec-len", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_vs_measured.json"))
    args = parser.parse_args()
    model = CostModel.from_profile(args.profile)
    measured: dict = {}
    for path in args.measured:
        measured.update(json.loads(path.read_text())["results"])
    result = {"profile": args.profile, "measured": [str(p) for p in args.measured], "command": " ".join(sys.argv),
              **compare(model, dict(sorted(measured.items(), key=lambda kv: int(kv[0]))), args.max_spec_len)}
    args.out.write_text(json.dumps(result, indent=1))
    for name in ("profile", "workload"):
        print_table(name, result[name])
    return 0


def print_table(name: str, result: dict) -> None:
    print(f"\nplan with {name} acceptance\n{'batch':>6}{'planned':>9}{'best':>6}{'planned/best':>14}")
    for r in result["rows"]:
        print(f"{r['batch_size']:>6}{r['planned_spec_len']:>9}{r['measured_best_spec_len']:>6}{r['planned_over_best']:>14.3f}")
    print(f"agreement {result['agreement']:.0%} of batch sizes; disagreements within 5% of the best: "
          f"{result['disagreements_within_5pct']}; claim met: {result['met']}")


if __name__ == "__main__":
    sys.exit(main())
