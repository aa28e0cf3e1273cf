import numpy as np
import pytest

from autospec import run_loop
from autospec.backends import AcceptanceSpec, SimulatedBackend, Workload
from autospec.controllers import FixedController

FOREVER = (10**9, 10**9)


def run_fixed(model, workload, acceptance=AcceptanceSpec(), spec_len=3, seed=0, noise_std=0.03):
    backend = SimulatedBackend(model, workload, acceptance, max_spec_len=8, noise_std=noise_std, seed=seed)
    return run_loop(backend, FixedController(spec_len=spec_len, max_spec_len=8)), backend


def test_step_times_reproduce_the_profile_within_noise(h200):
    records, _ = run_fixed(h200, Workload(batch_size=32, steps=2000, output_len=FOREVER), spec_len=4)
    verify = np.array([r.verify_time_s for r in records])
    draft = np.array([r.draft_time_s for r in records])
    assert verify.mean() == pytest.approx(h200.target_time_s(32, 5), rel=0.01)
    assert draft.mean() == pytest.approx(4 * h200.draft_time_s(32), rel=0.01)
    assert 0.02 < np.std(np.log(verify)) < 0.04        # the 3% log-normal noise is really there


def test_acceptance_matches_the_iid_rate_per_position(h200):
    records, _ = run_fixed(h200, Workload(batch_size=64, steps=500, output_len=FOREVER), AcceptanceSpec(mean=0.6), spec_len=4)
    trials = np.sum([r.trials_per_pos() for r in records], axis=0)
    accepted = np.sum([r.accepted_per_pos for r in records], axis=0)
    np.testing.assert_allclose(accepted / trials, 0.6, atol=0.01)
    assert np.mean([r.tokens_per_target_pass for r in records]) == pytest.approx((1 - 0.6**5) / 0.4, rel=0.02)


def test_same_seed_same_run_other_seed_other_run(h200):
    w = Workload(arrival_rate=500.0, num_requests=50, steps=400)
    a, _ = run_fixed(h200, w, seed=1)
    b, _ = run_fixed(h200, w, seed=1)
    c, _ = run_fixed(h200, w, seed=2)
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    assert [r.to_json() for r in a] != [r.to_json() for r in c]


def test_continuous_batching_admits_and_retires_requests(h200):
    w = Workload(arrival_rate=3000.0, num_requests=200, output_len=(20, 80), max_batch_size=32, steps=10**6)
    records, backend = run_fixed(h200, w)
    sizes = [r.batch_size for r in records]
    assert max(sizes) == 32 and min(sizes) < 8 and len(set(sizes)) > 10
    assert len(backend.finished) == 200
    for req in backend.finished:
        assert req.num_generated == req.output_len          # never more than asked for
        assert req.arrival_s <= req.admit_s <= req.first_token_s <= req.finish_s
    assert sum(r.num_emitted_tokens for r in records) == sum(q.output_len for q in backend.finished)


def test_gamma_arrivals_are_burstier_than_poisson(h200):
    def gaps(arrival):
        w = Workload(arrival_rate=100.0, arrival=arrival, gamma_cv=3.0, num_requests=2000, steps=1)
        backend = SimulatedBackend(h200, w, seed=0)
        times = np.array(sorted(r.arrival_s for r in backend._arrivals))  # noqa: SLF001 (inspecting the draw)
        return np.diff(times)
    for arrival, cv in (("poisson", 1.0), ("gamma", 3.0)):
        g = gaps(arrival)
        assert g.mean() == pytest.approx(0.01, rel=0.15)
        assert g.std() / g.mean() == pytest.approx(cv, rel=0.2)


def test_schedule_changes_the_batch_size_by_phase(h200):
    w = Workload(schedule=((5, 1), (5, 64), (5, 3)), steps=15, output_len=FOREVER)
    records, _ = run_fixed(h200, w)
    assert [r.batch_size for r in records] == [1] * 5 + [64] * 5 + [3] * 5


def test_beta_acceptance_gives_each_request_its_own_rate(h200):
    backend = SimulatedBackend(h200, Workload(batch_size=200, steps=1), AcceptanceSpec(beta=(2.0, 2.0)), seed=0)
    rates = backend.row_rates()
    assert 0.1 < rates.std() and rates.mean() == pytest.approx(0.5, abs=0.05)


def test_drift_moves_acceptance_over_time(h200):
    spec = AcceptanceSpec(mean=0.6, drift_amplitude=0.3, drift_period_steps=100)
    records, _ = run_fixed(h200, Workload(batch_size=128, steps=100, output_len=FOREVER), spec, spec_len=1)
    rate = lambda rs: sum(r.num_accepted_tokens for r in rs) / sum(r.num_draft_tokens for r in rs)
    assert rate(records[15:35]) > 0.8 and rate(records[65:85]) < 0.4


def test_oracle_vector_is_the_exact_expected_goodput(h200):
    backend = SimulatedBackend(h200, Workload(batch_size=8, steps=1, output_len=FOREVER), AcceptanceSpec(mean=0.7))
    np.testing.assert_allclose(backend.true_goodput_vector(8), h200.goodput_vector(8, 8, 0.7))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of"),
    (dict(batch_size=4, arrival_rate=1.0), "exactly one of"),
    (dict(batch_size=0), "batch_size must be positive"),
    (dict(arrival_rate=-1.0), "arrival_rate must be positive"),
    (dict(batch_size=1, arrival="uniform"), "arrival must be"),
    (dict(batch_size=1, output_len=(5, 2)), "output_len"),
    (dict(schedule=((10, 0),)), "schedule batch_size"),
])
def test_invalid_workloads_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Workload(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mean=1.2), "acceptance must be a number in \\(0, 1\\)"),
    (dict(mean=0.0), "acceptance must be"),
    (dict(beta=(0.0, 1.0)), "acceptance_beta"),
    (dict(drift_amplitude=1.5), "drift amplitude"),
])
def test_invalid_acceptance_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AcceptanceSpec(**kwargs)


def test_spec_len_outside_range_is_refused(h200):
    backend = SimulatedBackend(h200, Workload(batch_size=2, steps=5), max_spec_len=4)
    with pytest.raises(ValueError, match="spec_len must be in 0..4"):
        backend.step(5)
