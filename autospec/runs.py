"""Runs on disk: `runs/<name>/run.json` (metadata) + `runs/<name>/steps.jsonl` (one StepRecord per
line) + optionally `runs/<name>/scores.jsonl` (controller arm values, sampled).

Contract:
- Writers append whole lines and flush after each, so a reader never sees a half record except
  the last line while it is being written.
- `StepLogReader.read_new()` returns only the records completed since its last call (it keeps a
  byte offset), never raises on an incomplete last line, and reports problems (non-JSON lines,
  lines that are not step records) in `problems` instead of failing the whole read.
- `read_steps(path)` is the strict form for tools: a malformed or truncated line raises
  ValueError naming the file and line; records before it are not lost (`partial` attribute).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autospec.types import StepRecord

STEPS_FILE = "steps.jsonl"
META_FILE = "run.json"
SCORES_FILE = "scores.jsonl"
RUNS_DIR_ENV = "AUTOSPEC_RUNS_DIR"


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def safe_run_name(name: str) -> str:
    """A run name usable as a folder name: letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not cleaned:
        raise ValueError(f"run name {name!r} has no usable characters")
    return cleaned


class JsonlSink:
    """Appends each record as one JSON line and flushes, so live readers see whole lines."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: StepRecord) -> None:
        self._file.write(record.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class MemorySink:
    """Keeps records in a list (what `AutoSpec.records` and tests use)."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def write(self, record: StepRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class RunWriter:
    """Creates `runs/<name>/`, writes its metadata, and is a sink for its step records."""

    def __init__(self, name: str, meta: dict[str, Any] | None = None, runs_dir: str | Path | None = None):
        self.dir = Path(runs_dir or default_runs_dir()) / safe_run_name(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in (STEPS_FILE, SCORES_FILE):
            (self.dir / stale).unlink(missing_ok=True)
        self.meta = {"name": self.dir.name, "created_unix_s": time.time(), "status": "running", **(meta or {})}
        self._write_meta()
        self._steps = JsonlSink(self.dir / STEPS_FILE)
        self._scores = open(self.dir / SCORES_FILE, "a", encoding="utf-8")

    def _write_meta(self) -> None:
        tmp = self.dir / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=1, default=str), encoding="utf-8")
        tmp.replace(self.dir / META_FILE)

    def write(self, record: StepRecord) -> None:
        self._steps.write(record)

    def write_scores(self, step: int, batch_size: int, scores: dict[int, tuple[float, float]]) -> None:
        line = {"step": step, "batch_size": batch_size,
                "arms": {str(k): [float(m), float(s)] for k, (m, s) in scores.items()}}
        self._scores.write(json.dumps(line) + "\n")
        self._scores.flush()

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        self._write_meta()

    def close(self, status: str = "finished") -> None:
        self._steps.close()
        if not self._scores.closed:
            self._scores.close()
        self.update_meta(status=status, finished_unix_s=time.time())


@dataclass
class JsonlTail:
    """A byte offset into a growing JSONL file: yields only the lines completed since the last call."""

    path: Path
    offset: int = 0
    pending_bytes: int = 0

    def new_lines(self) -> list[bytes]:
        """Complete new lines (without their newline); a half-written last line waits."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.pending_bytes = len(chunk) - end
        self.offset += end
        return chunk[:end].split(b"\n")[:-1]


@dataclass
class StepLogReader:
    """Incremental reader of a steps.jsonl that may still be growing."""

    path: Path
    line_no: int = 0
    records: list[StepRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.tail = JsonlTail(self.path)

    @property
    def pending_bytes(self) -> int:
        return self.tail.pending_bytes

    def read_new(self) -> list[StepRecord]:
        """Parse the lines completed since the last call; return the new records."""
        new = [r for r in map(self._parse, self.tail.new_lines()) if r is not None]
        self.records.extend(new)
        return new

    def _parse(self, raw: bytes) -> StepRecord | None:
        self.line_no += 1
        if not raw.strip():
            return None
        try:
            return StepRecord.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{self.path.name} line {self.line_no}: {_describe(exc)}")
            return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg})"
    return str(exc)


class StepLogError(ValueError):
    """A malformed step log; `partial` holds the records read before the bad line."""

    def __init__(self, message: str, partial: list[StepRecord]):
        super().__init__(message)
        self.partial = partial


def read_steps(path: str | Path) -> list[StepRecord]:
    """Read a whole steps.jsonl strictly: any bad or truncated line raises StepLogError."""
    reader = StepLogReader(Path(path))
    if not reader.path.exists():
        raise FileNotFoundError(f"no step log at {reader.path}")
    reader.read_new()
    if reader.problems:
        raise StepLogError(reader.problems[0], reader.records)
    if reader.pending_bytes:
        raise StepLogError(f"{reader.path}: last line is truncated ({reader.pending_bytes} bytes without a "
                           f"newline) after {len(reader.records)} complete records", reader.records)
    return reader.records


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """The run's metadata, or {} when run.json is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def list_runs(runs_dir: str | Path | None = None) -> list[Path]:
    """Run folders (those holding a steps.jsonl or run.json), newest first."""
    root = Path(runs_dir or default_runs_dir())
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and ((p / STEPS_FILE).exists() or (p / META_FILE).exists())]
    return sorted(runs, key=_run_mtime, reverse=True)


def _run_mtime(run_dir: Path) -> float:
    times = [(run_dir / n).stat().st_mtime for n in (STEPS_FILE, META_FILE) if (run_dir / n).exists()]
    return max(times, default=0.0)
