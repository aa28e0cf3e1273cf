"""Tuned spec_len policies in the formats serving engines read, and validators for them.

A policy is a list of contiguous inclusive batch-size ranges `(lo, hi, spec_len)` starting at 1.
Formats, with the engine source each was checked against (read 2026-11):

- vLLM: `speculative_config.num_speculative_tokens_per_batch_size`, a list of inclusive
  `[range_start, range_end, K]` (vllm/config/speculative.py; rules in
  vllm/v1/spec_decode/dynamic/utils.py `validate_and_normalize_dynamic_sd_schedule`: a non-empty
  list of 3-item entries, positive bounds, start <= end, K >= 0, sorted and non-overlapping, first
  range starting at 1; the runtime clamps K to `num_speculative_tokens`, which must be > 0).
  autospec also refuses gaps and K above `num_speculative_tokens` rather than relying on the clamp.
- SGLang: the JSON file named by `--speculative-adaptive-config` (python/sglang/srt/speculative/
  adaptive_spec_params.py `_load_adaptive_config`): integer-string batch-size keys (the lower bound
  of a bucket, as in its default {"1", "8", "32", "64"}), each with a non-empty `candidate_steps`
  list of non-negative ints, at least one such key; `--speculative-num-steps` must be one of the
  candidates. autospec also requires the key "1".
- TensorRT-LLM: `draft_len_schedule` `{batch_size_threshold: draft_len}` (tensorrt_llm/llmapi/
  llm_args.py `validate_draft_len_schedule_and_sort`): thresholds >= 1, lengths >= 0, key 1 present,
  `schedule[1] == max_draft_len`, every length <= max_draft_len.

Every validator raises `ExportError` naming the first problem it finds.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from loguru import logger

Ranges = list[tuple[int, int, int]]
ENGINES = ("vllm", "sglang", "trtllm")


class ExportError(ValueError):
    """A policy file an engine would refuse or misread."""


def check_ranges(ranges: Sequence[Sequence[int]], what: str = "ranges") -> Ranges:
    """Contiguous inclusive (lo, hi, K) ranges from batch size 1, K >= 0."""
    if not isinstance(ranges, (list, tuple)) or not ranges:
        raise ExportError(f"{what} must be a non-empty list of [range_start, range_end, K] entries")
    out: Ranges = []
    for i, entry in enumerate(ranges):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(_is_int(v) for v in entry):
            raise ExportError(f"{what}[{i}] must be three integers [range_start, range_end, K], got {entry!r}")
        lo, hi, k = (int(v) for v in entry)
        if lo < 1 or hi < 1:
            raise ExportError(f"{what}[{i}] = {list(entry)}: batch-size bounds must be positive")
        if lo > hi:
            raise ExportError(f"{what}[{i}] = {list(entry)}: range start is after its end")
        if k < 0:
            raise ExportError(f"{what}[{i}] = {list(entry)}: K must be >= 0")
        out.append((lo, hi, k))
    if out[0][0] != 1:
        raise ExportError(f"{what}: the first range must start at batch size 1, got {out[0][0]}")
    for (lo0, hi0, _), (lo1, hi1, _) in zip(out, out[1:]):
        if lo1 <= hi0:
            raise ExportError(f"{what}: ranges [{lo0}, {hi0}] and [{lo1}, {hi1}] overlap (or are not sorted)")
        if lo1 != hi0 + 1:
            raise ExportError(f"{what}: gap between batch sizes {hi0} and {lo1}: batch sizes {hi0 + 1}..{lo1 - 1} "
                              "have no K")
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- vLLM -----------------------------------------------------------------------------------
def to_vllm(ranges: Ranges, method: str = "draft_model", model: str | None = None) -> dict[str, Any]:
    k_max = max(k for _, _, k in ranges)
    if k_max == 0:
        raise ExportError("the plan never speculates (K = 0 at every batch size): run vLLM without speculative_config")
    config: dict[str, Any] = {"method": method, "num_speculative_tokens": k_max,
                              "num_speculative_tokens_per_batch_size": [list(r) for r in ranges]}
    if model:
        config["model"] = model
    return {"speculative_config": config}


def validate_vllm(document: Any) -> Ranges:
    config = document.get("speculative_config", document) if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ExportError("vLLM export must be a JSON object with a speculative_config object")
    k_max = config.get("num_speculative_tokens")
    if not _is_int(k_max) or k_max <= 0:
        raise ExportError(f"num_speculative_tokens must be an integer > 0, got {k_max!r}")
    ranges = check_ranges(config.get("num_speculative_tokens_per_batch_size"), "num_speculative_tokens_per_batch_size")
    for lo, hi, k in ranges:
        if k > k_max:
            raise ExportError(f"K = {k} for batch sizes {lo}..{hi} is above num_speculative_tokens = {k_max}")
    return ranges


# --- SGLang ---------------------------------------------------------------------------------
def to_sglang(ranges: Ranges, candidates: dict[int, list[int]] | None = None) -> dict[str, Any]:
    """One bucket per range start; candidate_steps = the plan's K plus near-best alternatives."""
    out: dict[str, Any] = {}
    for lo, _, k in ranges:
        steps = sorted(set((candidates or {}).get(lo, []) + [k]))
        out[str(lo)] = {"candidate_steps": steps}
    return out


def validate_sglang(document: Any) -> dict[int, list[int]]:
    if not isinstance(document, dict):
        raise ExportError("SGLang adaptive config must be a JSON object")
    buckets: dict[int, list[int]] = {}
    for key, entry in document.items():
        if not str(key).isdigit():
            continue
        steps = entry.get("candidate_steps") if isinstance(entry, dict) else None
        if not isinstance(steps, list) or not steps or not all(_is_int(s) and s >= 0 for s in steps):
            raise ExportError(f"bucket {key}: candidate_steps must be a non-empty list of non-negative ints, got {steps!r}")
        if int(key) < 1:
            raise ExportError(f"bucket {key}: batch-size keys must be >= 1")
        buckets[int(key)] = steps
    if not buckets:
        raise ExportError('SGLang adaptive config needs at least one integer-string batch-size key, e.g. {"1": ...}')
    if 1 not in buckets:
        raise ExportError(f"SGLang adaptive config has no bucket for batch size 1 (keys {sorted(buckets)})")
    return buckets


# --- TensorRT-LLM ---------------------------------------------------------------------------
def to_trtllm(ranges: Ranges) -> dict[str, Any]:
    k1 = ranges[0][2]
    schedule = {}
    for lo, hi, k in ranges:
        if k > k1:
            logger.warning(f"TensorRT-LLM needs draft_len_schedule[1] == max_draft_len: capping K={k} for batch "
                           f"sizes {lo}..{hi} to batch size 1's K={k1}")
        schedule[lo] = min(k, k1)
    return {"max_draft_len": k1, "draft_len_schedule": schedule}


def validate_trtllm(document: Any) -> dict[int, int]:
    if not isinstance(document, dict) or not isinstance(document.get("draft_len_schedule"), dict):
        raise ExportError("TensorRT-LLM export must be an object with max_draft_len and a draft_len_schedule object")
    max_len = document.get("max_draft_len")
    if not _is_int(max_len) or max_len < 0:
        raise ExportError(f"max_draft_len must be a non-negative integer, got {max_len!r}")
    schedule: dict[int, int] = {}
    for key, value in document["draft_len_schedule"].items():
        try:
            threshold = int(key)
        except (TypeError, ValueError):
            raise ExportError(f"draft_len_schedule key {key!r} is not a batch size") from None
        if threshold < 1:
            raise ExportError(f"draft_len_schedule: batch size threshold must be >= 1, got {threshold}")
        if not _is_int(value) or value < 0:
            raise ExportError(f"draft_len_schedule[{threshold}]: draft length must be an integer >= 0, got {value!r}")
        if value > max_len:
            raise ExportError(f"draft_len_schedule[{threshold}] = {value} is above max_draft_len = {max_len}")
        schedule[threshold] = value
    if 1 not in schedule:
        raise ExportError("draft_len_schedule must include batch size 1")
    if schedule[1] != max_len:
        raise ExportError(f"draft_len_schedule[1] = {schedule[1]} must equal max_draft_len = {max_len}")
    return dict(sorted(schedule.items()))


VALIDATORS = {"vllm": validate_vllm, "sglang": validate_sglang, "trtllm": validate_trtllm}


def validate_file(text: str, engine: str) -> Any:
    if engine not in VALIDATORS:
        raise ExportError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return VALIDATORS[engine](document)
