import numpy as np
import pytest

from autospec.backends import AcceptanceSpec, SimulatedBackend, Workload
from autospec.controllers import OracleController


def test_plays_the_best_expected_arm_every_step(h200):
    backend = SimulatedBackend(h200, Workload(batch_size=128, steps=10), AcceptanceSpec(mean=0.6))
    oracle = OracleController(truth=backend, max_spec_len=8)
    ctx = backend.context()
    assert oracle.choose(ctx) == int(np.argmax(h200.goodput_vector(128, 8, 0.6)))
    assert oracle.scores(ctx)[oracle.choose(ctx)][0] == pytest.approx(h200.goodput_vector(128, 8, 0.6).max())


def test_needs_the_truth():
    with pytest.raises(ValueError, match="needs truth"):
        OracleController(truth=object())
