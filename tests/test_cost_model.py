import math

import numpy as np
import pytest
import yaml

from autospec import CostModel, expected_tokens, load_profile
from autospec.cost_model import expected_tokens_vector
from autospec.profiles import profile_from_dict


def synthetic_profile(fixed=5.0, per_token=0.03, per_row=0.2, batch_sizes=(1, 2, 4, 8, 16, 32, 64), qs=range(1, 9)):
    """A profile whose step times follow a known linear law exactly."""
    target = {b: {q: fixed + per_token * b * q + per_row * b for q in qs} for b in batch_sizes}
    draft = {b: {1: 0.5 + 0.001 * b, 2: 0.5 + 0.002 * b} for b in batch_sizes}
    return {"autospec_profile": 1, "name": "synthetic", "context_len": 256, "provenance": {"made_by": "test"},
            "target": {"model": "t", "step_ms": target}, "draft": {"model": "d", "step_ms": draft}}


def test_expected_tokens_matches_the_closed_form_and_the_per_position_sum():
    assert expected_tokens(0, 0.7) == 1.0
    assert expected_tokens(3, 0.5) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert expected_tokens(4, 1.0) == 5.0
    assert expected_tokens(3, [0.9, 0.5, 0.1]) == pytest.approx(1 + 0.9 + 0.45 + 0.045)
    np.testing.assert_allclose(expected_tokens_vector(4, 0.6), [expected_tokens(s, 0.6) for s in range(5)])


def test_the_fit_recovers_known_coefficients():
    model = CostModel(profile_from_dict(synthetic_profile()))
    coef = model.target_fit.coefficients()
    assert coef["fixed_ms"] == pytest.approx(5.0, abs=1e-6)
    assert coef["per_token_ms"] == pytest.approx(0.03, abs=1e-6)
    assert coef["per_row_ms"] == pytest.approx(0.2, abs=1e-6)
    hinges = [v for k, v in coef.items() if k.startswith("per_token_above")]
    assert max(abs(h) for h in hinges) < 1e-6
    assert model.fit_error()["target"]["mape_pct"] < 1e-6


def test_the_weighted_fit_is_scikit_learns_weighted_linear_regression():
    from sklearn.linear_model import LinearRegression

    from autospec.cost_model import WeightedLeastSquares

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(40, 5)), rng.normal(size=40), rng.uniform(0.1, 3.0, size=40)
    x[:, 4] = x[:, 3] * 2.0                                        # rank-deficient, as unused hinges are
    ours, theirs = WeightedLeastSquares(x, y, w), LinearRegression().fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-7, atol=1e-9)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-9)


def test_unmeasured_cells_are_interpolated_or_predicted():
    model = CostModel(profile_from_dict(synthetic_profile()))
    truth = lambda b, q: (5.0 + 0.03 * b * q + 0.2 * b) / 1e3
    assert model.target_time_s(4, 3) == pytest.approx(truth(4, 3))        # measured
    assert model.target_time_s(12, 3) == pytest.approx(truth(12, 3))      # between 8 and 16
    assert model.target_time_s(128, 3) == pytest.approx(truth(128, 3), rel=1e-6)  # predicted by the fit
    assert model.target_time_s(4, 12) == pytest.approx(truth(4, 12), rel=1e-6)
    stds = model.log_time_stds(12, 3)
    assert stds[0] > 0.05 and model.log_time_stds(8, 3)[0] < stds[0] < model.log_time_stds(128, 3)[0]


def test_step_time_is_the_papers_formula(h200):
    for b, s in [(1, 0), (8, 3), (64, 7)]:
        assert h200.step_time_s(b, s) == pytest.approx(s * h200.draft_time_s(b) + h200.target_time_s(b, s + 1))
    assert h200.step_time_s(1, 0) == pytest.approx(6.7836e-3, rel=1e-4)  # the measured cell


def test_the_best_spec_len_falls_as_the_batch_grows(h200):
    best = [h200.best_spec_len(b, 0.8, 8) for b in (1, 16, 64, 256)]
    assert best[0] >= 7 and best[-1] <= 3
    assert all(x >= y for x, y in zip(best, best[1:]))
    assert h200.best_spec_len(256, 0.3, 8) == 0
    g = h200.goodput_vector(16, 8, 0.7)
    assert int(np.argmax(g)) == h200.best_spec_len(16, 0.7, 8)
    assert g[3] == pytest.approx(h200.goodput_tps(16, 3, 0.7))


@pytest.mark.parametrize("name", ["h200-llama2-7b-llama-68m", "h200-llama2-7b-llama-160m", "h200-llama2-13b-llama-68m",
                                  "cpu-smollm2-135m-first4-bf16"])
def test_held_out_fit_error_on_shipped_profiles_is_within_ten_percent(name):
    err = CostModel.from_profile(name).fit_error()
    assert err["target"]["mape_pct"] <= 10.0
    assert err["draft"]["mape_pct"] <= 10.0


def test_save_and_load_keep_the_table_and_provenance(tmp_path, h200):
    path = h200.save(tmp_path / "p.yaml")
    again = CostModel.load(path)
    assert again.profile.provenance["device"] == "NVIDIA H200"
    assert again.profile.target_step_ms == h200.profile.target_step_ms
    assert again.step_time_s(37, 5) == h200.step_time_s(37, 5)
    assert yaml.safe_load(path.read_text())["autospec_profile"] == 1


def test_a_drafter_without_a_model_costs_nothing():
    model = CostModel.from_profile("cpu-smollm2-135m-ngram-bf16")
    assert model.draft_time_s(8) == 0.0
    assert model.step_time_s(8, 4) == pytest.approx(model.verify_time_s(8, 4) + model.overhead_time_s(8, 4))
    assert math.isfinite(model.goodput_tps(8, 4, 0.3))


def with_coverage(coverage):
    raw = synthetic_profile()
    raw["draft"] = {"model": "ngram", "step_ms": {}}
    raw["acceptance"] = {"per_pos": [0.5], "coverage_per_pos": coverage}
    return CostModel(profile_from_dict(raw))


def test_draft_coverage_sets_the_expected_verify_width():
    full, none = with_coverage([1.0]), with_coverage([0.0])
    assert full.step_time_s(4, 3) == pytest.approx(full.target_time_s(4, 4))   # every row drafts 3
    assert none.step_time_s(4, 3) == pytest.approx(none.target_time_s(4, 1))   # nobody drafts: q = 1
    model = with_coverage([0.5, 0.1])
    t = [model.target_time_s(4, q) for q in (1, 2, 3, 4)]
    p1, p2 = 1 - 0.5**4, 1 - 0.9**4                                            # P(longest draft >= j) over 4 rows
    expected = t[0] + p1 * (t[1] - t[0]) + p2 * (t[2] - t[1]) + p2 * (t[3] - t[2])
    assert model.step_time_s(4, 3) == pytest.approx(expected)
    relative_cost = [model.step_time_s(b, 3) / model.target_time_s(b, 1) for b in (1, 16)]
    assert relative_cost[0] < relative_cost[1]                                 # more rows: a wider block more often


def test_coverage_round_trips_through_yaml_and_rejects_bad_rates(tmp_path):
    model = with_coverage([0.4, 0.1])
    loaded = load_profile(model.save(tmp_path / "p.yaml"))
    assert loaded.coverage_per_pos == (0.4, 0.1)
    raw = yaml.safe_load((tmp_path / "p.yaml").read_text())
    raw["acceptance"]["coverage_per_pos"] = [0.4, 1.5]
    with pytest.raises(ValueError, match="coverage_per_pos must lie in"):
        profile_from_dict(raw)
    raw["acceptance"]["coverage_per_pos"] = "high"
    with pytest.raises(ValueError, match="coverage_per_pos must be a non-empty list"):
        profile_from_dict(raw)


def test_shipped_h200_profiles_record_their_provenance():
    for name in ("h200-llama2-7b-llama-68m", "h200-llama2-7b-llama-160m", "h200-llama2-13b-llama-68m"):
        p = load_profile(name)
        assert p.provenance["device"] == "NVIDIA H200" and p.provenance["cost_kind"] == "graph"
        assert p.context_len == 512 and len(p.batch_sizes) == 9


def with_step_overhead(table):
    raw = synthetic_profile()
    raw["step_overhead"] = table
    return CostModel(profile_from_dict(raw))


def test_whole_step_overhead_is_the_measured_residual_per_batch_size_and_spec_len():
    plain = CostModel(profile_from_dict(synthetic_profile()))
    model = with_step_overhead({"residual_ms": {1: {0: 2.0, 1: 6.0, 2: 7.0}, 4: {0: 8.0, 1: 8.0, 2: 14.0}}})
    assert model.step_time_s(1, 1) == pytest.approx(plain.step_time_s(1, 1) + 6.0 / 1e3)   # as measured
    assert model.overhead_time_s(2, 0) == pytest.approx(4.0 / 1e3)              # linear between batch 1 and 4
    assert model.overhead_time_s(64, 1) == pytest.approx(8.0 / 1e3)             # held at the largest measured
    assert model.overhead_time_s(1, 4) == pytest.approx((7.0 + 2 * 2.5) / 1e3)  # beyond: least-squares slope 2.5
    fixed_only = with_step_overhead({"residual_ms": {1: {0: 8.0, 1: 8.0}}})
    ratio = fixed_only.goodput_vector(4, 4, 0.7) / plain.goodput_vector(4, 4, 0.7)
    assert ratio[0] < ratio[4] < 1.0                # a fixed cost per step weighs less on longer steps...
    cheaper = with_step_overhead({"residual_ms": {1: {0: -1e6, 3: -1e6}}})
    assert cheaper.step_time_s(1, 2) == pytest.approx(0.5 * plain.step_time_s(1, 2))   # ...and never below half


def test_step_overhead_round_trips_reads_the_line_form_and_names_bad_tables(tmp_path):
    table = {1: {0: 2.0, 2: 3.5}, 8: {0: 5.5, 2: -0.5}}
    model = with_step_overhead({"residual_ms": table})
    assert load_profile(model.save(tmp_path / "p.yaml")).step_overhead_ms == table
    line = with_step_overhead({"fixed_ms": {1: 2.0}, "per_draft_ms": {1: 0.5}})    # the older form: a line in spec_len
    assert line.profile.step_overhead_ms == {1: {0: 2.0, 1: 2.5}}
    assert line.overhead_time_s(1, 4) == pytest.approx((2.0 + 4 * 0.5) / 1e3)
    for table, message in [({"residual_ms": {}}, "step_overhead must map residual_ms"),
                           ({"residual_ms": {1: {0: 1.0}, 2: {1: 1.0}}}, "same spec_lens at every batch size"),
                           ({"residual_ms": {1: {-1: 1.0}}}, r"residual_ms\[1\] has a key -1 below 0"),
                           ({"residual_ms": {1: {0: "slow"}}}, r"residual_ms\[1\]\[0\] must be a finite"),
                           ({"fixed_ms": {1: 2.0}, "per_draft_ms": {2: 1.0}}, "must cover the same batch sizes"),
                           ("fast", "step_overhead must map")]:
        raw = synthetic_profile()
        raw["step_overhead"] = table
        with pytest.raises(ValueError, match=message):
            profile_from_dict(raw)
