"""`auto`: the default controller, the best of the others as measured by
benchmarks/controller_benchmark.py: Thompson sampling with the cost-model prior.

Without a cost model (no profile for this machine) it falls back to Thompson sampling with no
prior, which needs no profile but explores every arm of every batch-size context.
"""
from __future__ import annotations

from autospec.cost_model import CostModel

from .base import register
from .thompson import ThompsonController


@register("auto")
def make_auto(*, max_spec_len: int = 8, cost_model: CostModel | None = None, seed: int = 0,
              **options) -> ThompsonController:
    prior = options.pop("prior", "model" if cost_model is not None else "none")
    controller = ThompsonController(max_spec_len=max_spec_len, cost_model=cost_model, prior=prior, seed=seed,
                                    **options)
    controller.name = "auto"
    return controller


make_auto.forwards_to = ThompsonController     # what its **options accept (build_controller checks them)
