"""`model`: the argmax of the cost model's goodput at the current acceptance estimate.

It has no per-arm statistics: it trusts the cost model's step times and learns only the
acceptance. When plain decoding wins it still probes spec_len 1 every `probe_every` steps,
otherwise the acceptance estimate could never recover after a drift.
"""
from __future__ import annotations

import numpy as np

from autospec.acceptance import AcceptanceEstimator
from autospec.cost_model import CostModel, expected_tokens_vector
from autospec.protocols import ArmScores
from autospec.types import StepContext, StepRecord

from .base import BaseController, check_float, check_int, register


NGRAM_PRIOR_ACCEPTANCE = 0.3     # lookup drafts only where the text repeats (see initial_acceptance)


def initial_acceptance(prior_acceptance: float | None, cost_model: CostModel | None) -> float:
    """The acceptance to start from: the one given, else the profile's measured first-position rate,
    else 0.3 for n-gram lookup (it proposes only where the context repeats: on SmolLM2's chat text
    39% of rows had a first draft and 11% of all rows were accepted there, the shipped n-gram
    profile), else 0.6 (a draft model)."""
    if prior_acceptance is not None:
        return prior_acceptance
    measured = cost_model.profile.acceptance_per_pos if isinstance(cost_model, CostModel) else None
    if measured:
        return min(0.95, max(0.02, measured[0]))
    ngram = isinstance(cost_model, CostModel) and cost_model.profile.draft_model == "ngram"
    return NGRAM_PRIOR_ACCEPTANCE if ngram else 0.6


def require_cost_model(cost_model: object, who: str) -> CostModel:
    if not isinstance(cost_model, CostModel):
        raise ValueError(f"{who} needs cost_model (a CostModel built from a profile), got {cost_model!r}")
    return cost_model


@register("model")
class ModelController(BaseController):
    def __init__(self, *, cost_model: CostModel, max_spec_len: int = 8, prior_acceptance: float | None = None,
                 discount: float = 0.99, max_trials: float = 400.0, probe_every: int = 25):
        super().__init__(max_spec_len)
        self.cost_model = require_cost_model(cost_model, "model controller")
        check_float("discount", discount, 0.0, 1.0, open_low=True)
        self.probe_every = check_int("probe_every", probe_every, 1)
        self.acceptance = AcceptanceEstimator(max(1, self.max_spec_len), initial_acceptance(prior_acceptance, cost_model),
                                              discount=discount, max_trials=max_trials)
        self._steps_at_zero = 0

    def expected_goodput(self, batch_size: int) -> np.ndarray:
        """[max_spec_len + 1] modelled goodput at the acceptance estimate."""
        tokens = expected_tokens_vector(self.max_spec_len, self.acceptance.rates()[: self.max_spec_len])
        return batch_size * tokens / self.cost_model.step_times_s(batch_size, self.max_spec_len)

    def choose(self, ctx: StepContext) -> int:
        best = int(np.argmax(self.expected_goodput(ctx.batch_size)))
        if best == 0 and self.max_spec_len and self._steps_at_zero + 1 >= self.probe_every:
            best = 1
        return self.clamp(best, ctx)

    def observe(self, record: StepRecord) -> None:
        self._steps_at_zero = self._steps_at_zero + 1 if record.spec_len == 0 else 0
        self.acceptance.observe(record)

    def scores(self, ctx: StepContext) -> ArmScores:
        values = self.expected_goodput(ctx.batch_size)
        return ArmScores({s: (float(v), 0.0) for s, v in enumerate(values)})
