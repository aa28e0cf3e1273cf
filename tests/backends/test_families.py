"""The family matrix: every causal-LM family of the installed transformers, built tiny in float32,
is either token-identical to `target.generate(do_sample=False)` (default attention and eager; batch
1, 3 and 8 ragged left-padded; spec_len 0 / 3 / 7 / auto; a same-architecture draft and n-gram;
windows smaller than prompt + output; EOS mid-run; continuous batching through 3 slots) or refused
by `AutoSpec(...)` with a ValueError naming its model type. Families run in one process per core.

Set AUTOSPEC_MATRIX_OUT=path.json to keep the results (`benchmarks/family_table.py` renders the
README table from them).
"""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from autospec.backends.attention import ENCODER_DECODER, NO_KV_CACHE, NOT_CAUSAL, STATEFUL
from tests.backends.families import BUILD_SKIPS, check_family, matrix_entries

ENTRIES = matrix_entries()
# Families the issue named: each must be served exactly, with its window smaller than the sequence.
MUST_SERVE = ["mistral", "mixtral+sliding", "phi3+sliding", "phimoe+sliding", "starcoder2+sliding", "qwen2+sliding",
              "qwen2_moe+sliding", "qwen3+sliding", "gemma2", "gemma3_text", "gemma3n_text", "gemma3n_text+kv_sharing",
              "gemma4_text+kv_sharing", "cohere2", "olmo3", "ministral", "exaone4", "gpt_oss", "llama4_text", "gpt_neo",
              "mpt", "bloom", "falcon+alibi", "llama", "xglm", "vaultgemma"]
OUTSIDE_KV_CACHE = {STATEFUL, NO_KV_CACHE, ENCODER_DECODER, NOT_CAUSAL}   # not causal attention over a KV cache


@pytest.fixture(scope="module")
def matrix():
    workers = max(1, min(os.cpu_count() or 1, 4))
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=16) as pool:
        pending = {entry: pool.apply_async(check_family, (entry,)) for entry in ENTRIES}
        yield pending
        if os.environ.get("AUTOSPEC_MATRIX_OUT"):
            results = {entry: r.get(timeout=900) for entry, r in pending.items()}
            with open(os.environ["AUTOSPEC_MATRIX_OUT"], "w") as fh:
                json.dump(results, fh, indent=1, sort_keys=True)


def result_of(matrix, entry: str) -> dict:
    return matrix[entry].get(timeout=900)


@pytest.mark.parametrize("entry", ENTRIES)
def test_family_is_exact_or_refused_by_name(matrix, entry):
    result = result_of(matrix, entry)
    if result["status"] == "unbuildable":
        assert entry in BUILD_SKIPS, f"{entry} cannot be built tiny and is not in BUILD_SKIPS: {result['reason']}"
        pytest.skip(f"{entry}: {BUILD_SKIPS[entry]}")
    assert entry not in BUILD_SKIPS, f"{entry} builds now: remove it from BUILD_SKIPS"
    for attention in ("default", "eager"):
        outcome = result[attention]
        if attention == "eager" and outcome["status"] == "unbuildable":
            continue                              # the family has no eager attention (or HF cannot run it)
        assert outcome["status"] in ("exact", "refused"), f"{entry} ({attention} attention): {outcome['reason']}"
        if outcome["status"] == "refused":
            assert f"(model type '{result['config_model_type']}')" in outcome["reason"], outcome["reason"]
            assert "Use the model's own `generate`" in outcome["reason"]
    if entry in MUST_SERVE:
        assert result["default"]["status"] == result["eager"]["status"] == "exact", f"{entry} must be served exactly"


def test_at_least_95_percent_of_kv_cache_decoder_families_are_exact(matrix):
    results = [result_of(matrix, entry) for entry in ENTRIES]
    served = [r for r in results if r["status"] != "unbuildable" and r["group"] == "decoder-only"
              and r["default"].get("category") not in OUTSIDE_KV_CACHE]
    exact = [r for r in served if r["default"]["status"] == "exact"]
    others = sorted(r["model_type"] for r in served if r not in exact)
    assert len(exact) / len(served) >= 0.95, f"{len(exact)}/{len(served)} exact; not: {others}"


def test_the_matrix_checks_windows_smaller_than_the_sequence(matrix):
    windowed = [e for e in MUST_SERVE if result_of(matrix, e).get("window")]
    assert len(windowed) >= 20                   # sliding, chunked and local windows all really slide
    assert all(min(result_of(matrix, e)["window"].values()) < 10 for e in windowed)
