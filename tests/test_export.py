"""Engine policy files: what autospec writes passes each engine's documented rules; broken files are
rejected with a message naming the problem."""
import json

import pytest

from autospec.export import (ExportError, check_ranges, to_sglang, to_trtllm, to_vllm, validate_file,
                             validate_sglang, validate_trtllm, validate_vllm)

RANGES = [(1, 15, 6), (16, 63, 3), (64, 256, 0)]


def test_vllm_export_is_the_documented_list_of_inclusive_ranges():
    doc = to_vllm(RANGES, method="ngram")
    cfg = doc["speculative_config"]
    assert cfg["num_speculative_tokens"] == 6 and cfg["method"] == "ngram"
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 15, 6], [16, 63, 3], [64, 256, 0]]
    assert validate_vllm(json.loads(json.dumps(doc))) == RANGES


@pytest.mark.parametrize("schedule, k_max, message", [
    ([[1, 8, 4], [8, 64, 2]], 4, "overlap"),
    ([[1, 8, 4], [10, 64, 2]], 4, "gap between batch sizes 8 and 10"),
    ([[2, 8, 4], [9, 64, 2]], 4, "first range must start at batch size 1"),
    ([[1, 8, 5], [9, 64, 2]], 4, "K = 5 for batch sizes 1..8 is above num_speculative_tokens = 4"),
    ([[1, 8, 4], [9, 4, 2]], 4, "range start is after its end"),
    ([[1, 8, -1]], 4, "K must be >= 0"),
    ([[1, 8]], 4, "three integers"),
    ([], 4, "non-empty list"),
    ([[1, 8, 4]], 0, "num_speculative_tokens must be an integer > 0"),
])
def test_vllm_broken_files_are_named(schedule, k_max, message):
    doc = {"speculative_config": {"num_speculative_tokens": k_max, "num_speculative_tokens_per_batch_size": schedule}}
    with pytest.raises(ExportError, match=message):
        validate_file(json.dumps(doc), "vllm")


def test_vllm_refuses_a_plan_that_never_speculates():
    with pytest.raises(ExportError, match="never speculates"):
        to_vllm([(1, 256, 0)])


def test_sglang_export_has_a_bucket_per_range_with_candidate_steps():
    doc = to_sglang(RANGES, {1: [5, 6, 7], 16: [3]})
    assert doc == {"1": {"candidate_steps": [5, 6, 7]}, "16": {"candidate_steps": [3]}, "64": {"candidate_steps": [0]}}
    assert validate_sglang(doc) == {1: [5, 6, 7], 16: [3], 64: [0]}


@pytest.mark.parametrize("doc, message", [
    ({"8": {"candidate_steps": [1]}}, "no bucket for batch size 1"),
    ({"1": {"candidate_steps": []}}, "non-empty list of non-negative ints"),
    ({"1": {"candidate_steps": [-1]}}, "non-negative ints"),
    ({"ema_alpha": 0.2}, "at least one integer-string batch-size key"),
])
def test_sglang_broken_files_are_named(doc, message):
    with pytest.raises(ExportError, match=message):
        validate_sglang(doc)


def trtllm_new_lookup(schedule: dict, batch_size: int) -> int:
    """Current TensorRT-LLM's get_draft_len_for_batch_size: the first key >= batch size, else 0."""
    keys = sorted(int(k) for k in schedule)
    return next((schedule[k] for k in keys if k >= batch_size), 0)


def trtllm_old_lookup(schedule: dict, batch_size: int) -> int:
    """Earlier TensorRT-LLM: the largest key <= batch size."""
    return schedule[max(k for k in schedule if k <= batch_size)]


def test_trtllm_export_keys_match_the_lookup_of_each_version():
    upper, lower = to_trtllm(RANGES), to_trtllm(RANGES, semantics="lower")
    assert upper == {"max_draft_len": 6, "draft_len_schedule": {15: 6, 63: 3, 256: 0}}
    assert lower == {"max_draft_len": 6, "draft_len_schedule": {1: 6, 16: 3, 64: 0}}
    for b in range(1, 257):
        want = next(k for lo, hi, k in RANGES if lo <= b <= hi)
        assert trtllm_new_lookup(upper["draft_len_schedule"], b) == want
        assert trtllm_old_lookup(lower["draft_len_schedule"], b) == want
    assert validate_trtllm(json.loads(json.dumps(upper))) == {15: 6, 63: 3, 256: 0}
    assert validate_trtllm(json.loads(json.dumps(lower)), "lower") == {1: 6, 16: 3, 64: 0}
    capped = to_trtllm([(1, 3, 2), (4, 8, 5)], semantics="lower")     # a later K above batch 1's is capped
    assert capped["draft_len_schedule"] == {1: 2, 4: 2}
    with pytest.raises(ExportError, match="semantics"):
        to_trtllm(RANGES, semantics="middle")


@pytest.mark.parametrize("schedule, max_len, message", [
    ({}, 3, "is empty"),
    ({"1": 2, "8": 1}, 3, r"draft_len_schedule\[1\] = 2 must equal max_draft_len = 3"),
    ({"4": 2, "8": 3}, 3, r"draft_len_schedule\[4\] = 2 must equal max_draft_len = 3"),
    ({"1": 3, "8": 4}, 3, r"draft_len_schedule\[8\] = 4 is above max_draft_len = 3"),
    ({"0": 3}, 3, "threshold must be >= 1"),
])
def test_trtllm_broken_files_are_named(schedule, max_len, message):
    with pytest.raises(ExportError, match=message):
        validate_trtllm({"max_draft_len": max_len, "draft_len_schedule": schedule})


def test_trtllm_lower_bound_keys_need_batch_size_one():
    with pytest.raises(ExportError, match="must include batch size 1"):
        validate_trtllm({"max_draft_len": 3, "draft_len_schedule": {"2": 3}}, "lower")
    assert validate_trtllm({"max_draft_len": 3, "draft_len_schedule": {"2": 3}}) == {2: 3}


def test_not_json_and_unknown_engine():
    with pytest.raises(ExportError, match="not valid JSON"):
        validate_file("{oops", "vllm")
    with pytest.raises(ExportError, match="unknown engine"):
        validate_file("{}", "tgi")


def test_check_ranges_accepts_a_single_range():
    assert check_ranges([[1, 1, 0]]) == [(1, 1, 0)]
