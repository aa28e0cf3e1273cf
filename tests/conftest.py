"""Shared fixtures: the shipped H200 cost model and a record factory (public APIs only)."""
from __future__ import annotations

import os
import tempfile

import pytest

from autospec import CostModel, StepRecord

# Engines built with the default cost_model="auto" calibrate on first use and cache the profile:
# the tests keep those in a folder of their own (shared by the session's worker processes), never
# in the user's cache.
os.environ["AUTOSPEC_PROFILE_CACHE"] = tempfile.mkdtemp(prefix="autospec-test-profiles-")


@pytest.fixture(scope="session")
def h200() -> CostModel:
    return CostModel.from_profile("h200-llama2-7b-llama-68m")


def make_record(batch_size: int = 4, spec_len: int = 3, accepted_per_pos=(3, 2, 1), draft_time_s: float = 0.001,
                verify_time_s: float = 0.01, step: int = 0, **kw) -> StepRecord:
    accepted = tuple(accepted_per_pos)[:spec_len]
    return StepRecord(step=step, batch_size=batch_size, spec_len=spec_len, num_draft_tokens=batch_size * spec_len,
                      num_accepted_tokens=sum(accepted), accepted_per_pos=accepted, draft_time_s=draft_time_s,
                      verify_time_s=verify_time_s, controller="test", **kw)


def drive(controller, batch_size: int, steps: int, accepted_at_each_pos: int, max_spec_len: int = 8) -> list[int]:
    """Run a controller for `steps` steps on synthetic records; return the spec_lens it chose."""
    from autospec import StepContext
    chosen = []
    for i in range(steps):
        s = controller.choose(StepContext(step=i, batch_size=batch_size, max_spec_len=max_spec_len))
        chosen.append(s)
        controller.observe(make_record(batch_size=batch_size, spec_len=s, accepted_per_pos=(accepted_at_each_pos,) * s, step=i))
    return chosen
