"""`autospec profile`: timing cells, the budget, and the round trip profile -> plan -> engine file."""
import json

import pytest
import torch

from autospec import CostModel, load_profile
from autospec.entrypoints.cli import main
from autospec.export import validate_vllm
from autospec.backends.drafters import forward_kwargs, model_forward
from autospec.backends.timing import CellTimer, cell_order, measure_cells, summarize_cells
from tests.backends.tiny_models import tiny_llama


def test_essential_cells_come_first_and_survive_an_exhausted_budget():
    model = tiny_llama(layers=1)
    timers = {"target": CellTimer(model, [1, 2], 4, context_len=8), "draft": CellTimer(model, [1, 2], 2, context_len=8)}
    cells = cell_order([1, 2], 4, has_draft=True)
    assert cells[:6] == [("target", 1, 1), ("target", 1, 2), ("target", 2, 1), ("target", 2, 2),
                         ("draft", 1, 1), ("draft", 2, 1)]
    samples = measure_cells(timers, cells, warmup=0, reps=2, budget_s=0.0)    # no time for optional cells
    assert set(samples) == set(cells[:6]) and all(len(v) == 2 for v in samples.values())
    median, spread, raw = summarize_cells(samples, "target")
    assert set(median) == {(1, 1), (1, 2), (2, 1), (2, 2)} and all(v > 0 for v in median.values())


def test_timing_leaves_the_cache_untouched():
    model = tiny_llama(layers=1)
    timer = CellTimer(model, [3], 4, context_len=10)
    cache = timer.caches[3]
    before = (cache.cursor, cache.valid.clone(), cache.pos.clone())
    for q in (1, 4, 2):
        timer.time_ms(3, q)
    assert cache.cursor == before[0] and bool((cache.valid == before[1]).all()) and bool((cache.pos == before[2]).all())


@pytest.mark.slow
def test_profile_to_plan_to_engine_file_round_trip(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Repeat: one two three one two three"}\n{"prompt": "What is 2 + 2?"}\n')
    out = tmp_path / "profile.yaml"
    assert main(["profile", "--draft", "first:2", "--batch-sizes", "1", "2", "--max-spec-len", "3", "--reps", "2",
                 "--warmup", "1", "--context-len", "32", "--acceptance-tokens", "8", "--prompts", str(prompts),
                 "--step-spec-lens", "0", "2", "--step-tokens", "16", "--step-rounds", "2", "--out", str(out)]) == 0
    profile = load_profile(out)
    assert set(profile.step_overhead_ms) == {1, 2}                     # whole steps measured at every batch size
    assert set(profile.step_overhead_ms[2]) == {0, 2} and profile.extra["step_overhead_sweeps"][2][2] >= 2
    residual = profile.step_overhead_ms[2]
    assert residual[0] == 0.0                                          # each sweep is scaled to its plain step
    assert CostModel(profile).overhead_time_s(2, 2) == pytest.approx(residual[2] / 1e3)
    assert CostModel(profile).overhead_time_s(2, 1) == pytest.approx((residual[0] + residual[2]) / 2 / 1e3)
    assert profile.provenance["dtype"] == "bfloat16" and "torch" in profile.provenance
    assert profile.extra["target_shape"] == {"hidden_size": 576, "num_hidden_layers": 30, "vocab_size": 49152}
    assert len(profile.acceptance_per_pos) == 3 and (1, 4) in profile.target_step_ms
    assert "fit_error" in profile.provenance and len(profile.extra["raw_ms"]["target"][1][1]) == 2
    assert CostModel(profile).step_time_s(2, 3) > 0
    engine_file = tmp_path / "vllm.json"
    assert main(["plan", "--profile", str(out), "--acceptance", "0.9", "--export", "vllm", "--out", str(engine_file)]) == 0
    validate_vllm(json.loads(engine_file.read_text()))
    assert main(["compare", "--profile", str(out), "--batch-size", "2", "--steps", "60",
                 "--controllers", "auto,fixed:1"]) == 0               # the simulator accepts it too


@pytest.mark.parametrize("argv, message", [
    (["--step-spec-lens", "1", "3"], "--step-spec-lens needs 0 and at least one more"),
    (["--step-spec-lens", "0", "9"], "--step-spec-lens needs 0 and at least one more distinct value in 0..8"),
    (["--step-rounds", "0"], "--step-rounds must be >= 1"),
])
def test_bad_whole_step_arguments_are_named_before_any_work(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", *argv, "--out", str(tmp_path / "p.yaml")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("flag, value", [("--context-len", "256"), ("--step-rounds", "3"), ("--warmup", "0")])
def test_vllm_profiling_refuses_a_flag_only_the_hf_backend_reads(tmp_path, capsys, flag, value):
    out = tmp_path / "p.yaml"
    with pytest.raises(SystemExit) as stop:                 # before anything imports vLLM or loads a model
        main(["profile", "--engine", "vllm", flag, value, "--out", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "--engine hf" in err and not out.exists()


@torch.inference_mode()
def test_every_batch_size_times_over_copies_of_one_prefilled_row():
    model = tiny_llama(layers=2)
    timer = CellTimer(model, [1, 4], 3, context_len=12)
    one, four = timer.caches[1], timer.caches[4]
    assert (four.num_rows, four.cursor) == (4, one.cursor) and four.pos[:4].tolist() == [12] * 4
    assert bool((four.valid[:4] == one.valid[:1]).all())
    ids = torch.tensor([[5, 9]])                                                     # [1, q]
    logits = []
    for cache, rows in ((one, 1), (four, 4)):            # the same next tokens over either cache: the same logits
        position_ids, mask = cache.decode_inputs(2)
        logits.append(model_forward(model, cache, ids.expand(rows, 2), position_ids, mask, forward_kwargs(model), 2))
    assert torch.allclose(logits[1], logits[0].expand(4, -1, -1), atol=1e-5)


class RecordingTimer:
    """A real CellTimer that also records which cells it timed, in order."""

    def __init__(self, timer, name, log):
        self.timer, self.name, self.log, self.caches = timer, name, log, timer.caches

    def time_ms(self, b, q):
        self.log.append((self.name, b, q))
        return self.timer.time_ms(b, q)


def test_a_calibration_times_every_needed_cell_before_any_optional_one():
    model = tiny_llama(layers=1)
    log = []
    timers = {name: RecordingTimer(CellTimer(model, [1, 2], 4, context_len=8), name, log) for name in ("target", "draft")}
    cells = cell_order([1, 2], 4, has_draft=True)
    samples = measure_cells(timers, cells, warmup=1, reps=2, budget_s=60.0, essentials_first=True)
    first_optional = next(i for i, c in enumerate(log) if c not in cells[:6])
    assert len(log[:first_optional]) == 3 * 6 and set(log[:first_optional]) == set(cells[:6])
    assert set(samples) == set(cells) and all(len(v) == 2 for v in samples.values())
