"""Run several controllers on the same seeded simulated workload, with the oracle beside them.

Contract: `compare(setup, specs)` builds one fresh `SimulatedBackend` per controller from the same
`SimSetup` (same seed: same requests and draws), runs each to the end, and returns
`{"oracle_goodput_tps": float, "setup": {...}, "controllers": {spec: {"goodput_tps",
"ratio_to_oracle", "mean_spec_len", "per_batch_size": {...}}}}`, leaving out `warmup_steps`
leading steps from every summary. Every argument is validated before any run starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from autospec.backends import AcceptanceSpec, SimulatedBackend, Workload
from autospec.controllers import CONTROLLERS, OracleController, build_controller, parse_spec
from autospec.cost_model import CostModel
from autospec.loop import run_loop
from autospec.summary import summarize
from autospec.types import StepRecord


@dataclass(frozen=True)
class SimSetup:
    profile: str
    workload: Workload
    acceptance: AcceptanceSpec = AcceptanceSpec()
    max_spec_len: int = 8
    noise_std: float = 0.03
    seed: int = 0
    prior_profile: str | None = None  # the controllers' cost model, when it differs from the truth

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_MODELS: dict[str, CostModel] = {}


def cost_model_for(profile: str) -> CostModel:
    """One CostModel per profile per process (its step-time cache is shared by all runs)."""
    if profile not in _MODELS:
        _MODELS[profile] = CostModel.from_profile(profile)
    return _MODELS[profile]


def check_specs(specs: Iterable[str]) -> list[str]:
    """Parse every controller spec up front so a typo fails before any run starts."""
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise ValueError("no controllers given")
    for spec in specs:
        name, _ = parse_spec(spec)
        CONTROLLERS.get(name)
    return specs


def make_backend(setup: SimSetup) -> SimulatedBackend:
    return SimulatedBackend(cost_model_for(setup.profile), setup.workload, setup.acceptance,
                            max_spec_len=setup.max_spec_len, noise_std=setup.noise_std, seed=setup.seed)


def run_controller(setup: SimSetup, spec: str, sinks: Sequence[Any] = (), progress: bool = False,
                   scores_every: int = 0, **options: Any) -> tuple[list[StepRecord], SimulatedBackend]:
    """Run one controller (or 'oracle') on a fresh backend; return its records and the backend."""
    backend = make_backend(setup)
    if spec == "oracle":
        controller = OracleController(truth=backend, max_spec_len=setup.max_spec_len)
        controller.name = "oracle"
    else:
        prior = cost_model_for(setup.prior_profile or setup.profile)
        controller = build_controller(spec, max_spec_len=setup.max_spec_len, cost_model=prior,
                                      seed=setup.seed, **options)
    records = run_loop(backend, controller, sinks, progress=progress, scores_every=scores_every,
                       max_steps=setup.workload.steps)
    return records, backend


def compare(setup: SimSetup, specs: Iterable[str], warmup_steps: int = 0, progress: bool = False) -> dict[str, Any]:
    specs = check_specs(specs)
    oracle = summarize(run_controller(setup, "oracle")[0], warmup_steps)
    result: dict[str, Any] = {"oracle_goodput_tps": oracle["goodput_tps"], "setup": setup.to_dict(),
                              "warmup_steps": warmup_steps, "controllers": {}}
    for spec in specs:
        summary = summarize(run_controller(setup, spec, progress=progress)[0], warmup_steps)
        summary["ratio_to_oracle"] = summary["goodput_tps"] / oracle["goodput_tps"]
        result["controllers"][spec] = summary
    return result


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table: one line per controller."""
    lines = [f"{'controller':<16} {'goodput_tps':>12} {'vs oracle':>9} {'mean_spec_len':>13} {'tokens/pass':>11}",
             f"{'oracle':<16} {result['oracle_goodput_tps']:>12.1f} {1.0:>9.3f} {'':>13} {'':>10}"]
    for name, s in result["controllers"].items():
        lines.append(f"{name:<16} {s['goodput_tps']:>12.1f} {s['ratio_to_oracle']:>9.3f} "
                     f"{s['mean_spec_len']:>13.2f} {s['tokens_per_target_pass']:>11.2f}")
    return "\n".join(lines)
