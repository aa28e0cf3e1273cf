from pathlib import Path

import pytest

from autospec import RunWriter, StepLogReader, read_steps
from autospec.runs import StepLogError, list_runs, read_meta
from tests.conftest import make_record


def test_run_writer_writes_meta_and_one_line_per_record(tmp_path: Path):
    w = RunWriter("my run!", {"controller": "auto"}, runs_dir=tmp_path)
    for i in range(3):
        w.write(make_record(step=i))
    w.write_scores(0, 4, {0: (1.0, 0.1), 1: (2.0, 0.2)})
    w.close()
    assert w.dir == tmp_path / "my-run"
    assert [r.step for r in read_steps(w.dir / "steps.jsonl")] == [0, 1, 2]
    meta = read_meta(w.dir)
    assert meta["controller"] == "auto" and meta["status"] == "finished"
    assert list_runs(tmp_path) == [w.dir]


def test_reader_returns_only_new_complete_lines(tmp_path: Path):
    path = tmp_path / "steps.jsonl"
    lines = [make_record(step=i).to_json() + "\n" for i in range(3)]
    path.write_text(lines[0] + lines[1][:20])                  # second line half-written
    reader = StepLogReader(path)
    assert [r.step for r in reader.read_new()] == [0]
    assert reader.pending_bytes == 20 and not reader.problems
    with open(path, "a") as f:
        f.write(lines[1][20:] + lines[2])
    assert [r.step for r in reader.read_new()] == [1, 2]
    assert reader.read_new() == []
    assert len(reader.records) == 3


def test_reader_reports_bad_lines_without_losing_good_ones(tmp_path: Path):
    path = tmp_path / "steps.jsonl"
    path.write_text(make_record(step=0).to_json() + "\n{not json\n" + '{"hello": 1}\n' + make_record(step=3).to_json() + "\n")
    reader = StepLogReader(path)
    assert [r.step for r in reader.read_new()] == [0, 3]
    assert "line 2: not valid JSON" in reader.problems[0]
    assert "line 3" in reader.problems[1] and "missing field" in reader.problems[1]


def test_strict_read_names_a_truncated_log_and_keeps_what_was_read(tmp_path: Path):
    path = tmp_path / "steps.jsonl"
    path.write_text(make_record(step=0).to_json() + "\n" + make_record(step=1).to_json()[:30])
    with pytest.raises(StepLogError, match="truncated") as info:
        read_steps(path)
    assert [r.step for r in info.value.partial] == [0]


def test_strict_read_of_a_missing_log_says_so(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no step log"):
        read_steps(tmp_path / "nope.jsonl")
