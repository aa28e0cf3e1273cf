"""How long `import autospec` takes in a fresh process (issue 21: under 0.5 s on this CPU).

    python benchmarks/import_time.py [--runs 5] [--out benchmarks/results/import_time_cpu.json]

Each statement runs in `--runs` fresh interpreters (the wall time of the statement itself, measured
inside the process, so interpreter start-up is left out); the median and every run are reported,
with the heavy libraries each statement left loaded (a module registered for a deferred import,
`autospec.lazy`, that has not run yet does not count). The engine defers torch and transformers
to the first AutoSpec it builds, so `from autospec import AutoSpec` is also timed after they are
imported, as in a program that has loaded its model already. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "sklearn", "streamlit", "pandas")
STATEMENTS = {
    "import autospec": ("", "import autospec"),
    "from autospec import AutoSpec": ("", "from autospec import AutoSpec"),
    "import torch, transformers": ("", "import torch, transformers"),
    "from autospec import AutoSpec (torch, transformers loaded)": ("import torch, transformers",
                                                                   "from autospec import AutoSpec"),
}
PROBE = """
import importlib.util, json, sys, time
{setup}
t0 = time.perf_counter()
{statement}
took = time.perf_counter() - t0
print(json.dumps({{"s": took, "loaded": [m for m in {heavy!r}
                                         if m in sys.modules and not isinstance(sys.modules[m], importlib.util._LazyModule)]}}))
"""


def measure(setup: str, statement: str, runs: int) -> dict:
    samples, loaded = [], []
    for _ in range(runs):
        code = PROBE.format(setup=setup, statement=statement, heavy=HEAVY)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        samples.append(result["s"])
        loaded = result["loaded"]
    return {"median_s": statistics.median(samples), "runs_s": samples, "heavy_loaded": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {name: measure(setup, statement, args.runs) for name, (setup, statement) in STATEMENTS.items()}
    print(f"{'statement':<58} {'median s':>9}  runs  heavy libraries left loaded")
    for name, r in results.items():
        runs = " ".join(f"{x:.2f}" for x in r["runs_s"])
        print(f"{name:<58} {r['median_s']:>9.3f}  {runs}  {','.join(r['heavy_loaded']) or '-'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.platform(),
                                        "date": time.strftime("%Y-%m-%d"), "runs": args.runs,
                                        "results": results}, indent=1))


if __name__ == "__main__":
    main()
