"""The `autospec` command line.

Subcommands: `compare` (several controllers on one seeded simulated workload, with the oracle),
`simulate` (one controller, written to runs/<name>/ for the dashboard), and the tools' (`demo`,
`profile`, `plan`, `check-export`, `distill`): each tool module of `autospec.entrypoints` names its
own in a `COMMANDS` dict {name: (add_arguments, run)}, read here (`TOOL_MODULES`); no tool imports
this module, and a tool's heavy libraries load only when its command runs.

Contract: every argument is checked before any work starts; a bad one exits with status 2 and
a message naming it. The CLI is the one place that enables autospec's logging.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from loguru import logger

DEFAULT_PROFILE = "h200-llama2-7b-llama-68m"
DEFAULT_COMPARE = "fixed:0,fixed:1,fixed:3,fixed:5,fixed:7,table,heuristic,model,ucb,thompson,auto"
TOOL_MODULES = ("autospec.entrypoints.demo", "autospec.entrypoints.profiler", "autospec.entrypoints.plan",
                "autospec.entrypoints.distill")
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """'200x1,200x2,200x4' -> ((200, 1), (200, 2), (200, 4)): steps x batch_size phases."""
    try:
        phases = tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"schedule must look like 200x1,200x2 (steps x batch_size), got {text!r}")
    if not phases or any(len(p) != 2 for p in phases):
        raise argparse.ArgumentTypeError(f"schedule must look like 200x1,200x2 (steps x batch_size), got {text!r}")
    return phases  # type: ignore[return-value]


def parse_pair(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}")
    return lo, hi


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    """The simulated workload's options, shared by `compare` and `simulate`."""
    p.add_argument("--backend", default="sim", choices=["sim"], help="the simulated backend (numpy only)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="shipped profile name or path to a profile YAML")
    p.add_argument("--prior-profile", default=None, help="profile the controllers believe (default: --profile)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--batch-size", type=int, help="static batch of this many rows (default 16)")
    load.add_argument("--arrival-rate", type=float, help="continuous batching: requests per second")
    load.add_argument("--schedule", type=parse_schedule, help="batch-size trace: STEPSxBATCH,... phases")
    p.add_argument("--arrival", default="poisson", choices=["poisson", "gamma"])
    p.add_argument("--gamma-cv", type=float, default=2.0, help="coefficient of variation of Gamma arrivals")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--num-requests", type=int, default=1000)
    p.add_argument("--output-len", type=parse_pair, default=(64, 512), help="MIN,MAX tokens per request")
    acc = p.add_mutually_exclusive_group()
    acc.add_argument("--acceptance", type=float, default=None, help="i.i.d. acceptance rate in (0, 1) (default 0.7)")
    acc.add_argument("--acceptance-beta", type=float, nargs=2, metavar=("ALPHA", "BETA"),
                     help="per-request acceptance ~ Beta(ALPHA, BETA)")
    p.add_argument("--drift", type=float, default=0.0, help="amplitude of a sinusoidal acceptance drift")
    p.add_argument("--drift-period", type=int, default=2000, help="drift period in steps")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.03, help="std of the log-normal step-time noise")
    p.add_argument("--max-spec-len", type=int, default=8)


def sim_setup(args: argparse.Namespace):
    """Build and validate the SimSetup (raises ValueError naming the bad option)."""
    from autospec.backends import AcceptanceSpec, Workload
    from autospec.entrypoints.compare import SimSetup, cost_model_for

    if args.batch_size is None and args.arrival_rate is None and args.schedule is None:
        args.batch_size = 16
    workload = Workload(batch_size=args.batch_size, schedule=args.schedule, arrival_rate=args.arrival_rate,
                        arrival=args.arrival, gamma_cv=args.gamma_cv, num_requests=args.num_requests,
                        output_len=tuple(args.output_len), max_batch_size=args.max_batch_size, steps=args.steps)
    acceptance = AcceptanceSpec(mean=0.7 if args.acceptance is None else args.acceptance,
                                beta=tuple(args.acceptance_beta) if args.acceptance_beta else None,
                                drift_amplitude=args.drift, drift_period_steps=args.drift_period)
    if args.max_spec_len < 0:
        raise ValueError(f"--max-spec-len must be >= 0, got {args.max_spec_len}")
    setup = SimSetup(args.profile, workload, acceptance, max_spec_len=args.max_spec_len,
                     noise_std=args.noise, seed=args.seed, prior_profile=args.prior_profile)
    cost_model_for(setup.profile)
    if setup.prior_profile:
        cost_model_for(setup.prior_profile)
    return setup


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    add_sim_arguments(p)
    p.add_argument("--controllers", default=DEFAULT_COMPARE, help="comma-separated controller specs")
    p.add_argument("--warmup", type=int, default=0, help="leading steps left out of every summary")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")


def run_compare(args: argparse.Namespace) -> int:
    from autospec.entrypoints.compare import check_specs, compare, format_table
    from autospec.controllers import split_specs

    setup = sim_setup(args)
    specs = check_specs(split_specs(args.controllers))
    result = compare(setup, specs, warmup_steps=args.warmup, progress=False)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    add_sim_arguments(p)
    p.add_argument("--controller", default="auto", help="controller spec, e.g. auto, fixed:3, table")
    p.add_argument("--name", default=None, help="run name (default: sim-<controller>)")
    p.add_argument("--runs-dir", type=Path, default=None, help="runs folder (default: $AUTOSPEC_RUNS_DIR or runs/)")
    p.add_argument("--scores-every", type=int, default=10, help="write the controller's arm values every N steps")
    p.add_argument("--delay-ms", type=float, default=0.0, help="sleep per step, to watch a run live")


def run_simulate(args: argparse.Namespace) -> int:
    from autospec.entrypoints.compare import check_specs, run_controller
    from autospec.runs import RunWriter
    from autospec.summary import summarize

    setup = sim_setup(args)
    spec = check_specs([args.controller])[0] if args.controller != "oracle" else "oracle"
    name = args.name or f"sim-{spec.replace(':', '')}"
    writer = RunWriter(name, {"kind": "simulated", "controller": spec, "setup": setup.to_dict()}, args.runs_dir)
    sinks: list[Any] = [writer]
    if args.delay_ms > 0:
        sinks.append(_Sleeper(args.delay_ms / 1e3))
    status = "stopped"
    signal.signal(signal.SIGTERM, _stop)          # the dashboard's stop button: keep what was written
    try:
        records, _ = run_controller(setup, spec, sinks=sinks, progress=True, scores_every=args.scores_every)
        status = "finished"
    except KeyboardInterrupt:
        print(f"stopped; {writer.dir / 'steps.jsonl'} keeps the steps written so far")
        return 130
    finally:
        writer.close(status)
    summary = summarize(records)
    writer.update_meta(summary={k: v for k, v in summary.items() if k != "per_batch_size"})
    print(f"{spec}: goodput {summary['goodput_tps']:.1f} tokens/s, mean spec_len {summary['mean_spec_len']:.2f}, "
          f"{summary['steps']} steps -> {writer.dir}")
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Sleeper:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def write(self, record: Any) -> None:
        import time
        time.sleep(self.seconds)

    def close(self) -> None:
        pass


COMMANDS: dict[str, Command] = {"compare": (add_compare_arguments, run_compare),
                               "simulate": (add_simulate_arguments, run_simulate)}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    commands = all_commands()
    parser = argparse.ArgumentParser(prog="autospec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _) in commands.items():
        add_arguments(sub.add_parser(name, help=f"autospec {name}"))
    return parser, commands


def all_commands() -> dict[str, Command]:
    """This module's subcommands and each tool module's `COMMANDS`."""
    import importlib

    commands = dict(COMMANDS)
    for module in TOOL_MODULES:
        commands.update(importlib.import_module(module).COMMANDS)
    return commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "INFO")
    logger.enable("autospec")
    try:
        return commands[args.command][1](args)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"autospec {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
