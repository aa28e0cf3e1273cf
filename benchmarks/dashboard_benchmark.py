"""Dashboard speed on a long log (issue 5, claim 3), written to JSON + a table.

    python benchmarks/dashboard_benchmark.py [--steps 100000]

1. Writes a simulated run of --steps steps (continuous batching, `auto`, arm values every 100 steps).
2. First view: a fresh `AppTest` of dashboard/app.py on that run, timed end to end (median of 3),
   plus the parts: reading and parsing the log, the summary, building the charts.
3. Refresh: 1,000 more steps are appended; the same reader's refresh is timed, and the bytes it
   read are compared with the bytes appended (it must read only the new lines).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
sys.path.insert(0, str(ROOT))                  # `dashboard` (viz) is a folder of the repository, not installed


def write_log(root: Path, steps: int) -> Path:
    from autospec.backends import AcceptanceSpec, Workload
    from autospec.entrypoints.compare import SimSetup, run_controller
    from autospec.runs import RunWriter

    setup = SimSetup("h200-llama2-7b-llama-68m", Workload(arrival_rate=3000.0, num_requests=10**7, steps=steps),
                     AcceptanceSpec(beta=(6.0, 3.0), drift_amplitude=0.2, drift_period_steps=20000))
    writer = RunWriter("long-run", {"kind": "simulated", "controller": "auto", "setup": setup.to_dict()}, root)
    run_controller(setup, "auto", sinks=[writer], scores_every=100)
    writer.close()
    return writer.dir


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def first_view_s(root: Path) -> float:
    from streamlit.testing.v1 import AppTest

    os.environ["AUTOSPEC_RUNS_DIR"] = str(root)
    elapsed, at = timed(lambda: AppTest.from_file(APP, default_timeout=120).run())
    if at.exception:
        raise RuntimeError(f"the dashboard raised: {at.exception[0].value}")
    return elapsed


def parts(run_dir: Path) -> dict[str, float]:
    from dashboard import viz

    run = viz.RunData(run_dir)
    read_s, _ = timed(run.refresh)
    frame_s, df = timed(run.frame)
    summary_s, _ = timed(run.summary)
    charts_s, _ = timed(lambda: [c.to_dict() for c in (viz.goodput_chart(df), viz.spec_len_chart(df),
                                                        viz.acceptance_chart(run.acceptance_per_pos()),
                                                        viz.tokens_per_pass_chart(df))])
    return {"read_parse_s": read_s, "frame_s": frame_s, "summary_s": summary_s, "charts_s": charts_s,
            "steps": run.num_steps}


def refresh_check(run_dir: Path, extra: int = 1000) -> dict[str, float]:
    """Append `extra` steps; the reader must read exactly the appended bytes."""
    from dashboard import viz

    run = viz.RunData(run_dir)
    run.refresh()
    steps_file = run_dir / "steps.jsonl"
    size_before = steps_file.stat().st_size
    lines = steps_file.read_bytes().splitlines()[-extra:]
    with open(steps_file, "ab") as f:
        for i, line in enumerate(lines):
            record = json.loads(line)
            record["step"] = run.num_steps + i
            f.write((json.dumps(record) + "\n").encode())
    appended = steps_file.stat().st_size - size_before
    offset_before = run._steps.offset                                  # noqa: SLF001 (measuring the reader)
    elapsed, added = timed(run.refresh)
    return {"appended_steps": extra, "appended_bytes": appended, "bytes_read": run._steps.offset - offset_before,
            "records_added": added, "refresh_s": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dashboard_benchmark.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_s, run_dir = timed(lambda: write_log(root, args.steps))
        size_mb = (run_dir / "steps.jsonl").stat().st_size / 1e6
        views = [first_view_s(root) for _ in range(3)]
        result = {"machine": f"{platform.machine()} CPU, python {platform.python_version()}", "command": " ".join(sys.argv),
                  "steps": args.steps, "log_mb": size_mb, "write_log_s": write_s,
                  "first_view_s": statistics.median(views), "first_view_runs_s": views,
                  "parts": parts(run_dir), "refresh": refresh_check(run_dir)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    p, r = result["parts"], result["refresh"]
    print(f"log: {args.steps:,} steps, {size_mb:.1f} MB")
    print(f"first view (AppTest, median of 3): {result['first_view_s']:.2f} s  "
          f"[read+parse {p['read_parse_s']:.2f} s, frame {p['frame_s']:.2f} s, charts {p['charts_s']:.2f} s]")
    print(f"refresh after {r['appended_steps']} new steps: {r['refresh_s'] * 1e3:.1f} ms, read {r['bytes_read']:,} bytes "
          f"of {r['appended_bytes']:,} appended, {r['records_added']} records added")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
