"""Data and charts behind the dashboard (dashboard/app.py), testable without a browser.

Contract:
- `RunData(run_dir).refresh()` reads only the complete lines appended to steps.jsonl (and
  scores.jsonl) since the last call, each as a `StepRecord` (derived values computed, never read
  from the line) into columns and `autospec.acceptance.PositionCounts`; a half-written last line waits for
  its newline; lines that are not JSON or not step records are counted in `problems`, never
  raised. `status()` says in words what state the run's files are in.
- `summary()` gives the headline metrics (goodput, mean spec_len, tokens per target pass, and regret
  against the oracle when the log carries the oracle's goodput).
- Chart builders return Altair charts over at most a few hundred aggregated points whatever the
  log's length (time series in bins of equal step count; spec_len x batch_size as counts).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from autospec.acceptance import PositionCounts
from autospec.runs import SCORES_FILE, STEPS_FILE, JsonlTail, read_meta
from autospec.summary import RunningSummary
from autospec.types import StepRecord

COLUMNS = ("step", "batch_size", "spec_len", "num_draft_tokens", "num_accepted_tokens", "step_time_s",
           "num_emitted_tokens", "oracle_goodput_tps", "time_s")
MAX_POINTS = 300


@dataclass
class RunData:
    run_dir: Path
    columns: dict[str, list] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    positions: PositionCounts = field(default_factory=PositionCounts)
    totals: RunningSummary = field(default_factory=RunningSummary)
    scores: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines_read: int = 0

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self._steps = JsonlTail(self.run_dir / STEPS_FILE)
        self._scores = JsonlTail(self.run_dir / SCORES_FILE)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def num_steps(self) -> int:
        return len(self.columns["step"])

    def meta(self) -> dict[str, Any]:
        return read_meta(self.run_dir)

    def refresh(self) -> int:
        """Read newly completed lines; return how many step records were added."""
        added = sum(self._add_step(line) for line in self._steps.new_lines() if line.strip())
        for line in self._scores.new_lines():
            if not line.strip():
                continue
            try:
                self.scores.append(json.loads(line))
            except ValueError:
                self.problems.append(f"{SCORES_FILE}: a line is not valid JSON")
        return added

    def _add_step(self, line: bytes) -> bool:
        """One line as a `StepRecord` (its derived fields computed, not read: a line with only the
        required fields shows the same as a full one)."""
        self.lines_read += 1
        try:
            d = json.loads(line)
        except ValueError:
            self.problems.append(f"{STEPS_FILE} line {self.lines_read}: not valid JSON")
            return False
        try:
            record = StepRecord.from_dict(d) if isinstance(d, dict) else StepRecord.from_dict({})
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{STEPS_FILE} line {self.lines_read}: not an autospec step record ({exc})")
            return False
        for c in COLUMNS:
            self.columns[c].append(getattr(record, c))
        self.positions.add(record)
        self.totals.add(record)
        return True

    def status(self) -> tuple[str, str]:
        """(level, message): 'error' | 'warning' | 'info' | 'ok'."""
        if not self.run_dir.exists():
            return "error", f"run folder {self.run_dir} does not exist"
        if not self._steps.path.exists():
            return "warning", f"run {self.name} has no {STEPS_FILE} (yet)"
        if self.num_steps == 0 and not self.problems:
            level = "info" if self._steps.pending_bytes == 0 else "warning"
            return level, f"run {self.name}: {STEPS_FILE} is empty, no steps written yet"
        if self.problems:
            return "warning", f"run {self.name}: {len(self.problems)} line(s) skipped, e.g. {self.problems[0]}"
        if self._steps.pending_bytes:
            return "info", (f"run {self.name}: the last line is incomplete ({self._steps.pending_bytes} bytes, "
                            "being written or truncated); it is shown once complete")
        return "ok", f"run {self.name}: {self.num_steps} steps"

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.columns)
        df["goodput_tps"] = df["num_emitted_tokens"] / df["step_time_s"].where(df["step_time_s"] > 0)
        df["tokens_per_target_pass"] = df["num_emitted_tokens"] / df["batch_size"]
        return df

    def summary(self) -> dict[str, float]:
        """The headline metrics, from `autospec.summary` (the CLI's and `summary()`'s own numbers)."""
        if not self.num_steps:
            return {}
        s = self.totals.as_dict()
        out = {"steps": float(s["steps"]), "goodput_tps": s["goodput_tps"], "mean_spec_len": s["mean_spec_len"],
               "tokens_per_target_pass": s["tokens_per_target_pass"]}
        if "oracle_goodput_tps" in s:
            out["oracle_goodput_tps"] = s["oracle_goodput_tps"]
            out["regret_pct"] = 100.0 * (1.0 - s["goodput_tps"] / s["oracle_goodput_tps"])
        return out

    def acceptance_per_pos(self) -> pd.DataFrame:
        rates = [np.nan if r is None else r for r in self.positions.rates()]
        return pd.DataFrame({"position": np.arange(1, len(rates) + 1), "acceptance": rates,
                             "trials": self.positions.trials})


def binned(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Equal-step bins: goodput = tokens / time per bin, means of the rest."""
    if df.empty:
        return df
    bins = np.minimum(np.arange(len(df)) * max_points // len(df), max_points - 1)
    g = df.assign(bin=bins).groupby("bin")
    out = pd.DataFrame({"step": g["step"].max(), "batch_size": g["batch_size"].mean(), "spec_len": g["spec_len"].mean(),
                        "goodput_tps": g["num_emitted_tokens"].sum() / g["step_time_s"].sum(),
                        "tokens_per_target_pass": g["num_emitted_tokens"].sum() / g["batch_size"].sum()})
    if df["oracle_goodput_tps"].notna().all():
        out["oracle_goodput_tps"] = (g.apply(lambda x: np.dot(x["oracle_goodput_tps"], x["step_time_s"]),
                                             include_groups=False) / g["step_time_s"].sum())
    return out.reset_index(drop=True)


def goodput_chart(df: pd.DataFrame) -> alt.Chart:
    b = binned(df)
    series = ["goodput_tps"] + (["oracle_goodput_tps"] if "oracle_goodput_tps" in b else [])
    long = b.melt(id_vars=["step"], value_vars=series, var_name="series", value_name="tokens/s")
    return alt.Chart(long).mark_line().encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("tokens/s:Q", title="goodput (tokens/s)"),
        color=alt.Color("series:N", title=None), strokeDash="series:N").properties(height=260)


def spec_len_chart(df: pd.DataFrame, best: pd.DataFrame | None = None) -> alt.LayerChart | alt.Chart:
    counts = (df.groupby(["batch_size", "spec_len"]).agg(steps=("step", "size"), last_step=("step", "max"))
              .reset_index())
    points = alt.Chart(counts).mark_circle(opacity=0.8).encode(
        x=alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="batch size"),
        y=alt.Y("spec_len:Q", title="spec_len"), size=alt.Size("steps:Q", title="steps"),
        color=alt.Color("last_step:Q", scale=alt.Scale(scheme="viridis"), title="last step"),
        tooltip=["batch_size", "spec_len", "steps"])
    if best is None or best.empty:
        return points.properties(height=260)
    line = alt.Chart(best).mark_line(color="red", point=True, strokeDash=[4, 3]).encode(
        x="batch_size:Q", y="best_spec_len:Q", tooltip=["batch_size", "best_spec_len"])
    return (points + line).properties(height=260)


def arm_values_frame(scores: list[dict[str, Any]]) -> pd.DataFrame:
    """The latest arm values per batch-size context from scores.jsonl."""
    latest: dict[int, dict[str, Any]] = {}
    for s in scores:
        latest[int(s["batch_size"])] = s
    rows = [{"batch_size": b, "spec_len": int(k), "mean": v[0], "low": v[0] - v[1], "high": v[0] + v[1]}
            for b, s in sorted(latest.items()) for k, v in s["arms"].items()
            if v[0] == v[0] and v[1] == v[1] and abs(v[1]) != float("inf")]
    return pd.DataFrame(rows)


def arm_values_chart(frame: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(frame).encode(x=alt.X("spec_len:O", title="spec_len (arm)"))
    bars = base.mark_point(filled=True).encode(y=alt.Y("mean:Q", title="estimated goodput (tokens/s)"))
    errors = base.mark_rule().encode(y="low:Q", y2="high:Q")
    return (errors + bars).properties(width=150, height=160).facet(
        facet=alt.Facet("batch_size:O", title="batch size"), columns=4).resolve_scale(y="independent")


def acceptance_chart(frame: pd.DataFrame) -> alt.Chart:
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("position:O", title="draft position"), y=alt.Y("acceptance:Q", title="P(accepted | reached)"),
        tooltip=["position", "acceptance", "trials"]).properties(height=220)


def tokens_per_pass_chart(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(binned(df)).mark_area(opacity=0.6).encode(
        x=alt.X("step:Q"), y=alt.Y("tokens_per_target_pass:Q", title="tokens per target pass")).properties(height=220)


def comparison_frame(runs: list[RunData]) -> pd.DataFrame:
    rows = []
    for run in runs:
        s = run.summary()
        if s:
            rows.append({"run": run.name, "controller": run.meta().get("controller", ""), **s})
    return pd.DataFrame(rows)


def comparison_chart(frame: pd.DataFrame) -> alt.Chart:
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("goodput_tps:Q", title="goodput (tokens/s)"), y=alt.Y("run:N", sort="-x", title=None),
        color=alt.Color("controller:N"), tooltip=["run", "controller", "goodput_tps", "mean_spec_len"]).properties(height=40 + 28 * len(frame))


def best_spec_len_frame(meta: dict[str, Any], df: pd.DataFrame, max_spec_len: int = 8) -> pd.DataFrame | None:
    """The cost model's best spec_len per batch size at the run's measured acceptance (simulated
    runs and runs that name their profile)."""
    profile = (meta.get("setup") or {}).get("profile") or meta.get("profile")
    if not profile or df.empty:
        return None
    from autospec.cost_model import CostModel
    try:
        model = CostModel.from_profile(profile)
    except (ValueError, OSError):
        return None
    accepted = df["num_accepted_tokens"].sum()
    drafted = df["num_draft_tokens"].sum()
    rate = float(np.clip(accepted / drafted, 0.01, 0.99)) if drafted else 0.5
    sizes = sorted(df["batch_size"].unique().tolist())
    return pd.DataFrame({"batch_size": sizes, "best_spec_len": [model.best_spec_len(b, rate, max_spec_len) for b in sizes]})
