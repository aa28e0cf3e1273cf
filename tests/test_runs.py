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


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "a\\b", "/etc"])
def test_a_run_name_that_is_a_path_is_refused_by_name(tmp_path: Path, name: str):
    from autospec.runs import run_dir
    with pytest.raises(ValueError, match="run name .* is (refused|not a plain run folder name)"):
        RunWriter(name, runs_dir=tmp_path / "runs")
    with pytest.raises(ValueError, match="run name"):
        run_dir(tmp_path / "runs", name)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_run_dir_refuses_a_symlink_out_of_the_runs_folder(tmp_path: Path):
    from autospec.runs import run_dir
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="resolves outside the runs folder"):
        run_dir(tmp_path / "runs", "link")
    assert run_dir(tmp_path / "runs", "fine") == tmp_path / "runs" / "fine"


def test_a_write_interrupted_midway_leaves_only_whole_lines(tmp_path: Path, monkeypatch):
    """os.write writes part of the line, then the disk is full: the part is cut back off."""
    import os
    from autospec.runs import JsonlSink
    sink = JsonlSink(tmp_path / "steps.jsonl")
    sink.write(make_record(step=0))
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        sink.write(make_record(step=1))
    monkeypatch.setattr(os, "write", real_write)
    sink.write(make_record(step=2))
    sink.close()
    assert len(calls) == 2 and [r.step for r in read_steps(tmp_path / "steps.jsonl")] == [0, 2]


def test_memory_sink_keeps_a_bounded_window_and_counts_everything():
    from autospec import MemorySink
    sink = MemorySink(window=3)
    for i in range(10):
        sink.write(make_record(step=i))
    assert [r.step for r in sink.records] == [7, 8, 9] and sink.num_written == 10
    with pytest.raises(ValueError, match="records window must be a positive integer or None"):
        MemorySink(window=0)
