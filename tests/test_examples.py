"""Every example runs end to end in its --smoke mode (what CI can afford)."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_paper_figures_reproduce_the_finding(tmp_path):
    out = run("paper_figures.py", "--smoke", "--docs", str(tmp_path))
    assert out.count("falls as the batch grows") == 5
    assert (tmp_path / "paper_goodput_vs_spec_len.png").stat().st_size > 10_000
    assert (tmp_path / "paper_best_spec_len.png").stat().st_size > 10_000


def test_serving_trace_smoke():
    out = run("serving_trace.py", "--smoke")
    assert "best fixed" in out and "auto" in out and "real SmolLM2" in out


@pytest.mark.slow
def test_wrap_generate_loop_smoke():
    out = run("wrap_generate_loop.py", "--smoke")
    assert "float32 greedy outputs identical: True" in out and "speedup" in out and "spec_len auto chose" in out


@pytest.mark.slow
def test_compare_controllers_smoke():
    out = run("compare_controllers.py", "--smoke")
    assert "(a) SmolLM2" in out and "(b) simulated H200 profiles" in out and out.count("auto") >= 4
