"""Runs on disk: `runs/<name>/run.json` (metadata) + `runs/<name>/steps.jsonl` (one StepRecord per
line) + optionally `runs/<name>/scores.jsonl` (controller arm values, sampled).

Contract:
- Writers append whole lines, each with one unbuffered write, so a reader never sees a half record
  except the last line while it is being written; a write that fails or is interrupted midway
  (disk full, KeyboardInterrupt) is cut back to the last whole line before the error propagates.
- Run names are folder names: a name with a path separator, `..`, or nothing usable is refused
  (ValueError naming it); `run_dir(root, name)` also refuses a run folder that resolves outside
  `root` (a symlink), and `list_runs` never lists one.
- `MemorySink(window)` keeps the last `window` records (None: all) plus the running count.
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
from collections import deque
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
    """A run name usable as a folder name: letters, digits, '.', '_' and '-' (other characters, e.g.
    spaces, become '-'); path separators and '..' are refused, never cleaned into a path."""
    if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name or "\0" in name:
        raise ValueError(f"run name {name!r} is refused: a run name is one folder name, without path "
                         "separators or '..'")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not cleaned:
        raise ValueError(f"run name {name!r} has no usable characters")
    return cleaned


def run_dir(root: str | Path, name: str) -> Path:
    """`root/name` for an existing or new run, refused (ValueError) when the name is not a plain
    folder name or the folder resolves outside `root` (e.g. a symlink to elsewhere)."""
    if safe_run_name(name) != name:
        raise ValueError(f"run name {name!r} is not a plain run folder name")
    root = Path(root)
    path = root / name
    if not _inside(path, root):
        raise ValueError(f"run {name!r} resolves outside the runs folder {root}: refused")
    return path


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class LineFile:
    """An append-only file of whole lines: one unbuffered write per line; a write that fails or is
    interrupted midway is truncated back to the previous line end before the error propagates."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._end = os.fstat(self._fd).st_size

    def write_line(self, text: str) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (text + "\n").encode("utf-8")
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except BaseException:
            os.ftruncate(self._fd, self._end)            # nothing half-done stays in the log
            raise
        self._end += len(data)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JsonlSink:
    """Appends each record as one JSON line (`LineFile`), so live readers see whole lines."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = LineFile(self.path)

    def write(self, record: StepRecord) -> None:
        self._file.write_line(record.to_json())

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._file.close()


class MemorySink:
    """Keeps the last `window` records in memory (None: every record) and counts all it saw."""

    def __init__(self, window: int | None = None) -> None:
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"records window must be a positive integer or None, got {window!r}")
        self.window = window
        self._records: deque[StepRecord] = deque(maxlen=window)
        self.num_written = 0

    @property
    def records(self) -> list[StepRecord]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def write(self, record: StepRecord) -> None:
        self._records.append(record)
        self.num_written += 1

    def close(self) -> None:
        pass


class RunWriter:
    """Creates `runs/<name>/`, writes its metadata, and is a sink for its step records."""

    def __init__(self, name: str, meta: dict[str, Any] | None = None, runs_dir: str | Path | None = None):
        root = Path(runs_dir or default_runs_dir())
        self.dir = run_dir(root, safe_run_name(name))
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in (STEPS_FILE, SCORES_FILE):
            (self.dir / stale).unlink(missing_ok=True)
        self.meta = {"name": self.dir.name, "created_unix_s": time.time(), "status": "running", **(meta or {})}
        self._write_meta()
        self._steps = JsonlSink(self.dir / STEPS_FILE)
        self._scores = LineFile(self.dir / SCORES_FILE)

    def _write_meta(self) -> None:
        tmp = self.dir / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=1, default=str), encoding="utf-8")
        tmp.replace(self.dir / META_FILE)

    def write(self, record: StepRecord) -> None:
        self._steps.write(record)

    @property
    def closed(self) -> bool:
        return self._steps.closed

    def write_scores(self, step: int, batch_size: int, scores: dict[int, tuple[float, float]]) -> None:
        line = {"step": step, "batch_size": batch_size,
                "arms": {str(k): [float(m), float(s)] for k, (m, s) in scores.items()}}
        self._scores.write_line(json.dumps(line))

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        self._write_meta()

    def close(self, status: str = "finished") -> None:
        self._steps.close()
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
    runs = [p for p in root.iterdir() if p.is_dir() and _inside(p, root)
            and ((p / STEPS_FILE).exists() or (p / META_FILE).exists())]
    return sorted(runs, key=_run_mtime, reverse=True)


def _run_mtime(run_dir: Path) -> float:
    times = [(run_dir / n).stat().st_mtime for n in (STEPS_FILE, META_FILE) if (run_dir / n).exists()]
    return max(times, default=0.0)
