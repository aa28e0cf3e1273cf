import json
import subprocess
import sys

import pytest

from autospec.entrypoints.cli import main


def test_compare_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", "--batch-size", "8", "--acceptance", "0.7", "--steps", "200",
                 "--controllers", "fixed:0,fixed:3,auto", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert isinstance(data["oracle_goodput_tps"], float)
    assert set(data["controllers"]) == {"fixed:0", "fixed:3", "auto"}
    auto = data["controllers"]["auto"]
    assert {"goodput_tps", "mean_spec_len", "per_batch_size"} <= set(auto)
    assert data["controllers"]["fixed:3"]["mean_spec_len"] == 3.0
    assert "8" in auto["per_batch_size"]
    table = capsys.readouterr().out
    assert "oracle" in table and "auto" in table


@pytest.mark.parametrize("argv, message", [
    (["--acceptance", "1.2"], "acceptance must be a number in (0, 1)"),
    (["--controllers", "fixed:3,nope"], "unknown controller 'nope'"),
    (["--profile", "mystery"], "unknown profile 'mystery'"),
    (["--arrival-rate", "-3"], "arrival_rate must be positive"),
    (["--max-spec-len", "-1"], "max-spec-len"),
])
def test_bad_arguments_fail_before_any_work_with_a_named_error(argv, message):
    proc = subprocess.run([sys.executable, "-m", "autospec.entrypoints.cli", "compare", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_simulate_writes_a_run_the_dashboard_can_read(tmp_path):
    from autospec.runs import read_meta, read_steps
    assert main(["simulate", "--arrival-rate", "1000", "--steps", "100", "--controller", "auto",
                 "--runs-dir", str(tmp_path), "--name", "demo"]) == 0
    records = read_steps(tmp_path / "demo" / "steps.jsonl")
    assert len(records) == 100 and all(r.controller == "auto" for r in records)
    assert read_meta(tmp_path / "demo")["status"] == "finished"
