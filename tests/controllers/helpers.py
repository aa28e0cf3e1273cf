"""Running a controller on the simulated backend (public APIs only)."""
from autospec import run_loop
from autospec.backends import AcceptanceSpec, SimulatedBackend, Workload
from autospec.controllers import OracleController, build_controller
from autospec.summary import summarize

FOREVER = (10**9, 10**9)


def ratio_to_oracle(model, spec, batch_size, acceptance, steps=800, warmup=100, prior_model=None, seed=0, **options):
    """Goodput of `spec` over the oracle's on the same seeded static workload."""
    def run(controller_factory):
        backend = SimulatedBackend(model, Workload(batch_size=batch_size, steps=steps, output_len=FOREVER),
                                   AcceptanceSpec(mean=acceptance), seed=seed)
        return summarize(run_loop(backend, controller_factory(backend)), warmup)["goodput_tps"]
    oracle = run(lambda be: OracleController(truth=be))
    mine = run(lambda be: build_controller(spec, max_spec_len=8, cost_model=prior_model or model, seed=seed, **options))
    return mine / oracle
