"""`autospec profile --engine vllm`'s engine-free half (autospec.integrations.vllm_profile) and the HF
draft folders vLLM loads. The measurement itself runs on a real engine in
tests/integrations/test_vllm_scheduler.py (vLLM's venv)."""
import json

import pytest
import torch

from autospec.cost_model import CostModel
from autospec.integrations.vllm_profile import cell_step_ms, engine_args, vllm_profile
from autospec.profiles import load_profile
from autospec.types import StepRecord
from tests.backends.tiny_models import ragged_batch, tiny_llama


def record(batch_size, spec_len, step_s, accepted_rows):
    """A vLLM-style record: `accepted_rows[j]` rows accepted position j."""
    return StepRecord(step=0, batch_size=batch_size, spec_len=spec_len, num_draft_tokens=batch_size * spec_len,
                      num_accepted_tokens=sum(accepted_rows), accepted_per_pos=tuple(accepted_rows),
                      draft_time_s=0.0, verify_time_s=step_s, controller="fixed", time_s=0.0,
                      rows_drafted_per_pos=(batch_size,) * spec_len)


def test_a_cell_is_the_median_step_while_every_row_decodes():
    records = [record(4, 2, 0.050, (2, 1)), record(4, 2, 0.070, (2, 1)), record(4, 2, 0.060, (2, 1)),
               record(3, 2, 0.500, (1, 0))]                        # a drain step: not the cell's
    assert cell_step_ms(records, 4) == pytest.approx(60.0)
    assert cell_step_ms(records, 8) is None


def test_the_profile_holds_whole_steps_and_the_cost_model_predicts_them(tmp_path):
    step_ms = {(b, k): 20.0 + 5.0 * b + 9.0 * k for b in (1, 2, 4) for k in (0, 1, 2)}
    measured = {"step_ms": step_ms, "raw_ms": {c: [v] for c, v in step_ms.items()},
                "records_at_max": [record(2, 2, 0.05, (1, 1)), record(2, 2, 0.05, (2, 0))], "context_len": 57}
    config = tiny_llama().config
    profile = vllm_profile("vllm-test", "tiny", "ngram", config, measured, 2, {"vllm": "0.32.0"})
    path = profile.save(tmp_path / "p.yaml")
    loaded = load_profile(path)
    assert loaded.extra["engine"] == "vllm" and loaded.extra["drafter"] == "ngram"
    assert loaded.context_len == 57                                  # what the cells measured, not a default
    assert loaded.extra["target_shape"]["hidden_size"] == config.hidden_size
    # 3 of 4 rows at position 0, then 1 of those 3 (autospec's smoothed estimate: (3 + .5) / (4 + 1), ...)
    assert loaded.acceptance_per_pos == pytest.approx((3.5 / 5, 1.5 / 4), abs=1e-3)
    model = CostModel(loaded)
    for (b, k), ms in step_ms.items():
        assert model.step_time_s(b, k) == pytest.approx(ms / 1000.0)
    assert loaded.target_shape_mismatch(tiny_llama(hidden=32).config) is not None


def test_engine_args_plain_ngram_and_draft_folder():
    plain = engine_args("/m", None)
    assert "speculative_config" not in plain and "scheduler_cls" not in plain
    ngram = engine_args("/m", "ngram", max_spec_len=3, max_num_seqs=8)
    assert ngram["speculative_config"]["method"] == "ngram"
    assert ngram["speculative_config"]["num_speculative_tokens_per_batch_size"] == [[1, 8, 3]]
    assert ngram["scheduler_cls"] == "autospec.integrations.vllm.AutoSpecScheduler"
    draft = engine_args("/m", "/drafts/d", autospec={"controller": "auto"})
    assert draft["speculative_config"]["model"] == "/drafts/d"
    assert draft["additional_config"]["autospec"]["controller"] == "auto"


def test_an_hf_draft_folder_of_the_first_layers_is_the_truncated_target(tmp_path):
    from transformers import AutoModelForCausalLM

    from autospec.backends.draft_model import hf_draft_folder
    from autospec.backends.models import truncated_draft
    target = tiny_llama(layers=3, seed=2)
    target.save_pretrained(tmp_path / "target")
    folder = hf_draft_folder("first:2", tmp_path / "target", tmp_path / "draft")
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids, _ = ragged_batch(2, 97, seed=1)
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, truncated_draft(target, 2)(input_ids=ids).logits)
    assert hf_draft_folder("first:2", tmp_path / "target", tmp_path / "draft") == folder   # reused
    with pytest.raises(ValueError, match="first:N needs N in 1..2"):
        hf_draft_folder("first:3", tmp_path / "target", tmp_path / "other")
    with pytest.raises(ValueError, match="'first:N' or 'distilled'"):
        hf_draft_folder("ngram", tmp_path / "target", tmp_path / "other")
