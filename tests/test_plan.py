import numpy as np
import pytest

from autospec.entrypoints.cli import main
from autospec.export import validate_vllm
from autospec.plan import acceptance_vector, converged_spec_lens, plan_rows, policy_ranges
from tests.conftest import make_record


def test_plan_rows_pick_the_cost_models_argmax(h200):
    acc = acceptance_vector(0.8, 8)
    rows = plan_rows(h200, acc, [1, 16, 256], 8)
    for row in rows:
        assert row.spec_len == h200.best_spec_len(row.batch_size, 0.8, 8)
        assert row.spec_len in row.near_best
        assert row.speedup == pytest.approx(row.goodput_tps / h200.goodput_tps(row.batch_size, 0, 0.8))


def test_policy_ranges_cover_every_batch_size_and_merge_near_ties(h200):
    acc = acceptance_vector(0.7, 8)
    exact = policy_ranges(h200, acc, 256, 8, margin=0.0)
    merged = policy_ranges(h200, acc, 256, 8, margin=0.05)
    assert exact[0][0] == 1 and exact[-1][1] == 256 and len(merged) <= len(exact)
    for lo, hi, k in merged:                                   # every merged choice is within the margin
        for b in range(lo, hi + 1):
            g = h200.goodput_vector(b, 8, acc)
            assert g[k] >= 0.95 * g.max() - 1e-9


def test_per_position_acceptance_is_extended_and_checked():
    np.testing.assert_allclose(acceptance_vector([0.9, 0.5], 4), [0.9, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="acceptance must be a number in"):
        acceptance_vector(1.3, 4)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        acceptance_vector([0.5, 1.2], 4)


def test_converged_spec_len_is_the_mode_of_the_last_half():
    records = [make_record(batch_size=4, spec_len=s, accepted_per_pos=(1,) * s, step=i)
               for i, s in enumerate([5, 5, 5, 5, 2, 2, 2, 5])]
    assert converged_spec_lens(records) == {4: 2}


def test_plan_cli_exports_a_valid_vllm_policy(tmp_path, capsys):
    out = tmp_path / "vllm.json"
    assert main(["plan", "--profile", "h200-llama2-7b-llama-68m", "--acceptance", "0.75", "--export", "vllm",
                 "--max-batch-size", "128", "--out", str(out)]) == 0
    import json
    ranges = validate_vllm(json.loads(out.read_text()))
    assert ranges[-1][1] == 128
    assert main(["check-export", str(out), "--engine", "vllm"]) == 0
    assert "spec_len" in capsys.readouterr().out


def test_plan_from_a_run_shows_what_the_controller_converged_to(tmp_path, capsys):
    assert main(["simulate", "--batch-size", "64", "--acceptance", "0.6", "--steps", "400", "--controller", "auto",
                 "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    assert main(["plan", "--profile", "h200-llama2-7b-llama-68m", "--from-run", str(tmp_path / "r")]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in table if line.split() and line.split()[0] == "64")
    assert row[1] == row[-1]                   # planned spec_len == the one the run settled on


def test_check_export_rejects_a_broken_file_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"speculative_config": {"num_speculative_tokens": 4, '
                   '"num_speculative_tokens_per_batch_size": [[1, 8, 4], [12, 64, 2]]}}')
    assert main(["check-export", str(bad), "--engine", "vllm"]) == 1
    assert "gap between batch sizes 8 and 12" in capsys.readouterr().out


def test_plan_without_acceptance_names_the_fix():
    with pytest.raises(SystemExit) as info:
        main(["plan", "--profile", "h200-llama2-7b-llama-68m"])
    assert info.value.code == 2
