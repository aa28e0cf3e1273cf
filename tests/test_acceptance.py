import numpy as np
import pytest

from autospec.acceptance import AcceptanceEstimator
from tests.conftest import make_record


def test_recovers_per_position_rates():
    est = AcceptanceEstimator(4)
    for i in range(200):   # 100 rows: 90 pass position 0, 45 pass position 1, 9 position 2
        est.observe(make_record(batch_size=100, spec_len=3, accepted_per_pos=(90, 45, 9), step=i))
    np.testing.assert_allclose(est.rates()[:3], [0.9, 0.5, 0.2], atol=0.01)
    assert est.rates()[3] == pytest.approx(est.rates()[2], abs=0.05)   # never tried: inherits the last


def test_evidence_is_capped_so_large_batches_track_drift_quickly():
    est = AcceptanceEstimator(2, max_trials=400)
    for i in range(50):
        est.observe(make_record(batch_size=256, spec_len=1, accepted_per_pos=(230,), step=i))
    for i in range(3):
        est.observe(make_record(batch_size=256, spec_len=1, accepted_per_pos=(77,), step=i))
    assert est.rates()[0] < 0.45


def test_thompson_draws_spread_around_the_mean_and_ucb_is_above_it():
    est = AcceptanceEstimator(2)
    est.observe(make_record(batch_size=10, spec_len=2, accepted_per_pos=(6, 3)))
    draws = np.array([est.sample(np.random.default_rng(k)) for k in range(400)])
    assert draws[:, 0].mean() == pytest.approx(est.rates()[0], abs=0.02) and draws[:, 0].std() > 0.05
    assert all(u > r for u, r in zip(est.upper(1.0), est.rates()))


@pytest.mark.parametrize("kwargs, match", [(dict(max_spec_len=0), "max_spec_len"),
                                           (dict(max_spec_len=2, discount=0.0), "discount"),
                                           (dict(max_spec_len=2, prior_acceptance=1.0), "prior_acceptance")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AcceptanceEstimator(**kwargs)
