"""The README's table of model families served and refused, rendered from the family matrix.

    AUTOSPEC_MATRIX_OUT=benchmarks/results/family_matrix.json python -m pytest -q tests/backends/test_families.py
    python benchmarks/family_table.py benchmarks/results/family_matrix.json [--readme README.md]

Prints the markdown; with --readme, replaces the text between the README's family-matrix markers.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

START, END = "<!-- family-matrix:start -->", "<!-- family-matrix:end -->"
GROUPS = ("decoder-only", "encoder", "encoder-decoder")
OUTSIDE_KV_CACHE = {"stateful", "no-kv-cache", "encoder-decoder", "not-causal"}   # as the matrix test counts


def served_cell(results: list[dict]) -> str:
    names = []
    for r in sorted(results, key=lambda r: r["model_type"]):
        mark = " (window)" if r.get("window") else ""
        eager = "" if r["eager"]["status"] == "exact" else " (sdpa only)"
        names.append(f"`{r['model_type']}`{mark}{eager}")
    return ", ".join(names)


def why(reason: str) -> str:
    text = re.sub(r"^autospec cannot serve .*? exactly: ", "", reason)
    return text.replace(" Use the model's own `generate` for it.", "").rstrip(".").replace("|", "/")


def render(matrix: dict) -> str:
    results = list(matrix.values())
    exact = [r for r in results if r["status"] == "exact"]
    refused = [r for r in results if r["status"] == "refused"]
    unbuildable = [r for r in results if r["status"] == "unbuildable"]
    counted = [r for r in results if r["group"] == "decoder-only" and r["status"] != "unbuildable"
               and r["default"].get("category") not in OUTSIDE_KV_CACHE]
    counted_exact = sum(r["status"] == "exact" for r in counted)
    lines = [f"**Decoder-only families that attend over a KV cache: {counted_exact} of {len(counted)} exact "
             f"({100 * counted_exact / len(counted):.1f}%)**, the others refused by name.", "",
             f"{len(results)} entries (every causal-LM model type of the installed transformers, plus configurations "
             f"its defaults do not reach, `name+variant`): {len(exact)} served exactly, {len(refused)} refused by name, "
             f"{len(unbuildable)} not buildable tiny here.", "",
             "| group | served exactly (greedy token-identical to `target.generate`, sdpa and eager) |", "| --- | --- |"]
    for group in GROUPS:
        lines.append(f"| {group} | {served_cell([r for r in exact if r['group'] == group])} |")
    lines += ["", "| refused | group | why (the ValueError `AutoSpec(...)` raises) |", "| --- | --- | --- |"]
    for r in sorted(refused, key=lambda r: (r["default"].get("category", ""), r["model_type"])):
        lines.append(f"| `{r['model_type']}` | {r['group']} | {why(r['reason'])} |")
    if unbuildable:
        lines += ["", "Not buildable tiny here (skipped, with reasons, in `tests/backends/families.py`): "
                  + ", ".join(f"`{r['model_type']}`" for r in sorted(unbuildable, key=lambda r: r["model_type"])) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix", type=Path)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    table = render(json.loads(args.matrix.read_text()))
    print(table)
    if args.readme:
        text = args.readme.read_text()
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        args.readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
