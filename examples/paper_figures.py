"""The paper's characterization from a cost profile: why spec_len must fall as the batch grows.

    python examples/paper_figures.py [--profile h200-llama2-7b-llama-68m | path.yaml] [--smoke]

Figure 1: goodput (tokens/s) against spec_len, one line per batch size, at acceptance 0.7.
Figure 2: the best spec_len against batch size, one line per acceptance rate.
Both from the cost model (the paper's quantitative model on the measured step times). Writes
docs/paper_goodput_vs_spec_len.png and docs/paper_best_spec_len.png and prints the table behind
Figure 2 with a check of the paper's finding (the best spec_len falls as the batch grows).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from autospec import CostModel  # noqa: E402

BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ACCEPTANCES = [0.5, 0.6, 0.7, 0.8, 0.9]


def goodput_figure(model: CostModel, path: Path, max_spec_len: int, acceptance: float = 0.7) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for b in BATCH_SIZES:
        goodput = model.goodput_vector(b, max_spec_len, acceptance)
        ax.plot(range(max_spec_len + 1), goodput / goodput[0], marker="o", label=f"batch {b}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="spec_len", ylabel="goodput / goodput without speculation",
           title=f"{model.name}, acceptance {acceptance}")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_spec_len_table(model: CostModel, max_spec_len: int) -> dict[float, list[int]]:
    return {a: [model.best_spec_len(b, a, max_spec_len) for b in BATCH_SIZES] for a in ACCEPTANCES}


def best_figure(model: CostModel, table: dict[float, list[int]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a, best in table.items():
        ax.plot(BATCH_SIZES, best, marker="o", label=f"acceptance {a}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size", ylabel="best spec_len", title=f"{model.name}: best spec_len per batch size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def falls_with_batch(best: list[int]) -> bool:
    """The paper's finding: the best spec_len at the largest batch is below the smallest batch's, and
    it never rises by more than 2 between neighbouring batch sizes (even q is cheaper than odd q at
    some sizes, GEMM tiling, so the curve is jagged, not smooth)."""
    return best[-1] < best[0] and all(b <= a + 2 for a, b in zip(best, best[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="h200-llama2-7b-llama-68m")
    parser.add_argument("--max-spec-len", type=int, default=8)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--smoke", action="store_true", help="same figures (this example is fast anyway)")
    args = parser.parse_args()
    model = CostModel.from_profile(args.profile)
    args.docs.mkdir(parents=True, exist_ok=True)
    goodput_figure(model, args.docs / "paper_goodput_vs_spec_len.png", args.max_spec_len)
    table = best_spec_len_table(model, args.max_spec_len)
    best_figure(model, table, args.docs / "paper_best_spec_len.png")
    print(f"best spec_len per batch size ({model.name}; batch sizes {BATCH_SIZES})")
    for a, best in table.items():
        print(f"  acceptance {a}: {best}  {'falls as the batch grows' if falls_with_batch(best) else 'DOES NOT FALL'}")
    print(f"figures: {args.docs / 'paper_goodput_vs_spec_len.png'}, {args.docs / 'paper_best_spec_len.png'}")
    return 0 if all(falls_with_batch(b) for b in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
