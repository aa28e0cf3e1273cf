"""The dashboard page, driven by streamlit.testing.v1.AppTest on fixture runs."""
import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from autospec import RunWriter
from tests.conftest import make_record

from dashboard.browser import APP


def write_run(root: Path, name: str, verify_time_s: float, spec_len: int, mtime: float, oracle: float | None = None):
    w = RunWriter(name, {"controller": f"fixed:{spec_len}"}, runs_dir=root)
    for i in range(20):
        w.write(make_record(step=i, batch_size=4, spec_len=spec_len, accepted_per_pos=(3, 2, 1)[:spec_len],
                            draft_time_s=0.0, verify_time_s=verify_time_s, oracle_goodput_tps=oracle))
    w.write_scores(0, 4, {0: (100.0, 5.0), 1: (150.0, 10.0)})
    w.close()
    for f in w.dir.iterdir():
        os.utime(f, (mtime, mtime))
    return w.dir


def expected_goodput(verify_time_s: float, spec_len: int) -> float:
    tokens = sum((3, 2, 1)[:spec_len]) + 4
    return tokens / verify_time_s


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSPEC_RUNS_DIR", str(tmp_path))
    write_run(tmp_path, "alpha", 0.010, 1, mtime=1_000_000, oracle=1000.0)
    write_run(tmp_path, "beta", 0.020, 3, mtime=2_000_000)
    return tmp_path


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_metrics_show_the_values_of_the_newest_run(runs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert metric(at, "goodput (tokens/s)") == f"{expected_goodput(0.020, 3):,.1f}"
    assert metric(at, "mean spec_len") == "3.00"
    assert metric(at, "tokens per target pass") == f"{(6 + 4) / 4:.2f}"
    assert metric(at, "regret vs oracle") == "n/a"


def test_choosing_another_run_changes_the_metrics(runs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.multiselect(key="runs_chosen").set_value(["alpha"]).run()
    assert not at.exception
    assert metric(at, "goodput (tokens/s)") == f"{expected_goodput(0.010, 1):,.1f}"
    assert metric(at, "regret vs oracle") == f"{100 * (1 - expected_goodput(0.010, 1) / 1000.0):.1f}%"


def test_two_runs_are_compared(runs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.multiselect(key="runs_chosen").set_value(["beta", "alpha"]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["alpha", "beta"]


def broken_run(root: Path, name: str, content: str | None) -> None:
    d = root / name
    d.mkdir()
    (d / "run.json").write_text('{"name": "%s"}' % name)
    if content is not None:
        (d / "steps.jsonl").write_text(content)


@pytest.mark.parametrize("content, message", [
    (make_record(step=0).to_json() + "\n" + make_record(step=1).to_json()[:40], "last line is incomplete"),
    ("", "steps.jsonl is empty"),
    (None, "has no steps.jsonl"),
    ('{"hello": "world"}\n' + make_record(step=0).to_json() + "\n", "not an autospec step record"),
])
def test_damaged_runs_show_a_clear_message_and_no_exception(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("AUTOSPEC_RUNS_DIR", str(tmp_path))
    broken_run(tmp_path, "damaged", content)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    shown = [e.value for e in (*at.info, *at.warning, *at.error)]
    assert any(message in s for s in shown), shown


def test_no_runs_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSPEC_RUNS_DIR", str(tmp_path / "nothing"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and "No runs" in at.info[0].value


def test_a_run_folder_that_leads_outside_the_runs_folder_is_never_listed(runs, tmp_path_factory):
    outside = write_run(tmp_path_factory.mktemp("elsewhere"), "secret", 0.005, 2, mtime=3_000_000)
    (runs / "escape").symlink_to(outside, target_is_directory=True)    # the newest run, were it listed
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "escape" not in at.multiselect(key="runs_chosen").options
    assert metric(at, "mean spec_len") == "3.00"                        # still beta's page, not the secret run's


def test_a_log_with_only_the_required_fields_renders_with_its_metrics(tmp_path, monkeypatch):
    """Derived values (step time, emitted tokens) are computed from the required fields, not read."""
    from autospec.types import REQUIRED_FIELDS

    monkeypatch.setenv("AUTOSPEC_RUNS_DIR", str(tmp_path))
    run = tmp_path / "minimal"
    run.mkdir()
    lines = []
    for i in range(12):
        full = make_record(step=i, batch_size=4, spec_len=2, accepted_per_pos=(3, 1), draft_time_s=0.002,
                           verify_time_s=0.008).to_dict()
        lines.append(json.dumps({k: full[k] for k in REQUIRED_FIELDS}))
    (run / "steps.jsonl").write_text("\n".join(lines) + "\n")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert metric(at, "goodput (tokens/s)") == f"{(3 + 1 + 4) / 0.010:,.1f}"
    assert metric(at, "tokens per target pass") == f"{(3 + 1 + 4) / 4:.2f}"
    assert metric(at, "mean spec_len") == "2.00"


def test_a_run_written_by_the_vllm_integration_renders(tmp_path, monkeypatch):
    """The vLLM scheduler's run log (autospec.integrations.vllm_steps, here fed vLLM-shaped outputs:
    2 decode rows, K = 2, one row accepting both drafts) is a dashboard run like any other."""
    from types import SimpleNamespace

    from autospec.integrations.vllm_steps import VllmSettings, build_decisions
    monkeypatch.setenv("AUTOSPEC_RUNS_DIR", str(tmp_path))
    clock = SimpleNamespace(now=0.0)
    decisions = build_decisions(VllmSettings(controller="fixed:2", max_spec_len=2, run_name="vllm-run",
                                             runs_dir=str(tmp_path)), clock=lambda: clock.now, meta={"vllm": "0.32.0"})
    so = SimpleNamespace(total_num_scheduled_tokens=6, num_scheduled_tokens={"a": 3, "b": 3},
                         scheduled_spec_decode_tokens={"a": [5, 5], "b": [5, 5]}, num_invalid_spec_tokens={})
    mro = SimpleNamespace(req_id_to_index={"a": 0, "b": 1}, sampled_token_ids=[[5, 5, 7], [7]])
    for _ in range(11):
        decisions.choose(2, 2)
        decisions.scheduled(6)
        clock.now += 0.02
        decisions.completed(so, mro)
    decisions.close()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert metric(at, "goodput (tokens/s)") == f"{(2 + 2) / 0.02:,.1f}"        # 2 accepted + 2 target tokens
    assert metric(at, "mean spec_len") == "2.00"
    assert metric(at, "tokens per target pass") == "2.00"
