"""The autospec dashboard: watch a controller tune spec_len live.

    streamlit run dashboard/app.py [-- --runs DIR]

Runs are read from --runs, else $AUTOSPEC_RUNS_DIR, else runs/. The page follows the newest run
by default (pick one or several in the sidebar) and refreshes while it is written, reading only
the lines appended since the last refresh. The "simulate" panel starts simulated runs in the
background (no GPU or model needed); stopping one keeps what it wrote.

The server listens on 127.0.0.1 (dashboard/.streamlit/config.toml) unless asked otherwise with
--server.address; only run folders inside the runs folder are listed or read (a symlink that
leads elsewhere is skipped; `autospec.runs.run_dir` refuses it).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # `streamlit run dashboard/app.py`: `dashboard` is a package
from dashboard import viz  # noqa: E402
from autospec.profiles import shipped_profiles  # noqa: E402
from autospec.runs import RUNS_DIR_ENV, list_runs, run_dir  # noqa: E402

CONTROLLER_CHOICES = ["auto", "thompson", "ucb", "model", "table", "heuristic"] + [f"fixed:{k}" for k in range(9)]
LEVELS = {"error": st.error, "warning": st.warning, "info": st.info}


def runs_root() -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.runs or os.environ.get(RUNS_DIR_ENV) or "runs")


def run_data(path: Path) -> viz.RunData:
    """One incremental reader per run folder, kept across reruns."""
    cache = st.session_state.setdefault("run_data", {})
    if str(path) not in cache:
        cache[str(path)] = viz.RunData(path)
    return cache[str(path)]


def sidebar(root: Path) -> tuple[list[Path], float]:
    st.sidebar.title("autospec")
    st.sidebar.caption(f"runs folder: `{root}`")
    runs = list_runs(root)
    names = [p.name for p in runs]
    chosen = st.sidebar.multiselect("runs", names, default=names[:1], key="runs_chosen")
    refresh_s = st.sidebar.slider("refresh every (s)", 0.5, 10.0, 2.0, 0.5)
    simulate_panel(root)
    return [run_dir(root, n) for n in chosen], refresh_s


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def simulate_panel(root: Path) -> None:
    with st.sidebar.expander("simulate", expanded=False):
        address = st.get_option("server.address")
        if address not in LOOPBACK:
            st.warning(f"this dashboard is served on {address or 'every interface'}: anyone who can reach it can "
                       "start simulations on this machine")
        with st.form("simulate"):
            profile = st.selectbox("profile", shipped_profiles(), index=shipped_profiles().index("h200-llama2-7b-llama-68m"))
            controllers = st.multiselect("controllers", CONTROLLER_CHOICES, default=["auto", "fixed:3"])
            mode = st.radio("load", ["static batch", "arrivals"], horizontal=True)
            batch_size = st.number_input("batch size", 1, 1024, 32)
            rate = st.number_input("arrival rate (requests/s)", 1.0, 100000.0, 2000.0)
            acceptance = st.slider("acceptance", 0.05, 0.95, 0.7, 0.05)
            drift = st.slider("drift amplitude", 0.0, 0.6, 0.0, 0.05)
            period = st.number_input("drift period (steps)", 10, 100000, 2000)
            steps = st.number_input("steps", 10, 1000000, 3000)
            delay_ms = st.number_input("delay per step (ms)", 0.0, 1000.0, 5.0)
            start = st.form_submit_button("start")
        if start and controllers:
            load = ["--batch-size", str(batch_size)] if mode == "static batch" else ["--arrival-rate", str(rate)]
            start_simulations(root, profile, controllers, load, acceptance, drift, period, steps, delay_ms)
        procs = st.session_state.get("simulations", [])
        alive = [p for p in procs if p.poll() is None]
        st.caption(f"{len(alive)} simulation(s) running")
        if alive and st.button("stop"):
            for p in alive:
                p.send_signal(signal.SIGTERM)


def start_simulations(root: Path, profile: str, controllers: list[str], load: list[str], acceptance: float,
                      drift: float, period: int, steps: int, delay_ms: float) -> None:
    stamp = time.strftime("%H%M%S")
    procs = st.session_state.setdefault("simulations", [])
    for spec in controllers:
        cmd = [sys.executable, "-m", "autospec.entrypoints.cli", "simulate", "--profile", profile, *load,
               "--acceptance", str(acceptance), "--drift", str(drift), "--drift-period", str(int(period)),
               "--steps", str(int(steps)), "--controller", spec, "--delay-ms", str(delay_ms),
               "--runs-dir", str(root), "--name", f"sim-{stamp}-{spec.replace(':', '')}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


def headline(run: viz.RunData) -> None:
    s = run.summary()
    cols = st.columns(5)
    cols[0].metric("goodput (tokens/s)", f"{s['goodput_tps']:,.1f}")
    cols[1].metric("mean spec_len", f"{s['mean_spec_len']:.2f}")
    cols[2].metric("tokens per target pass", f"{s['tokens_per_target_pass']:.2f}")
    cols[3].metric("steps", f"{int(s['steps']):,}")
    regret = f"{s['regret_pct']:.1f}%" if "regret_pct" in s else "n/a"
    cols[4].metric("regret vs oracle", regret)


def show_run(run: viz.RunData) -> None:
    df = run.frame()
    headline(run)
    left, right = st.columns(2)
    left.subheader("goodput over time")
    left.altair_chart(viz.goodput_chart(df), width="stretch")
    right.subheader("spec_len chosen per batch size")
    right.altair_chart(viz.spec_len_chart(df, viz.best_spec_len_frame(run.meta(), df)), width="stretch")
    right.caption("circles: steps taken (size = count, colour = recency); red: the cost model's best spec_len")
    left, right = st.columns(2)
    left.subheader("acceptance per draft position")
    left.altair_chart(viz.acceptance_chart(run.acceptance_per_pos()), width="stretch")
    right.subheader("tokens per target pass")
    right.altair_chart(viz.tokens_per_pass_chart(df), width="stretch")
    arms = viz.arm_values_frame(run.scores)
    if not arms.empty:
        st.subheader("the controller's arm values per batch-size context (mean ± std)")
        st.altair_chart(viz.arm_values_chart(arms))


def live(paths: list[Path]) -> None:
    runs = [run_data(p) for p in paths]
    for run in runs:
        run.refresh()
        level, message = run.status()
        LEVELS.get(level, lambda m: None)(message)
    shown = [r for r in runs if r.num_steps]
    if not shown:
        return
    st.header(f"run: {shown[0].name}")
    show_run(shown[0])
    if len(shown) > 1:
        st.header("comparison")
        frame = viz.comparison_frame(shown)
        st.dataframe(frame, hide_index=True)
        st.altair_chart(viz.comparison_chart(frame), width="stretch")


def main() -> None:
    st.set_page_config(page_title="autospec", layout="wide")
    root = runs_root()
    paths, refresh_s = sidebar(root)
    if not paths:
        st.info(f"No runs in `{root}` yet. Start one with the simulate panel, `autospec simulate` or `autospec demo`.")
        return
    st.fragment(run_every=refresh_s)(live)(paths)


main()
