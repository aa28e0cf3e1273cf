"""The prior without asking: AutoSpec(target, draft) finds, or calibrates and caches, a cost profile."""
from __future__ import annotations

import contextlib
import inspect

import pytest
import torch
import yaml
from loguru import logger
from transformers import LlamaForCausalLM

from autospec import AutoSpec
from autospec.backends.calibration import (cache_key, cache_root, descriptor, find_prior, match_fields,
                                           shipped_match)
from tests.backends.tiny_models import ragged_batch, tiny_llama


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSPEC_PROFILE_CACHE", str(tmp_path / "profiles"))
    return tmp_path / "profiles"


@contextlib.contextmanager
def log_lines():
    """Messages autospec logs (the library keeps its logging disabled unless a caller enables it)."""
    lines: list[str] = []
    logger.enable("autospec")
    handler = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        yield lines
    finally:
        logger.remove(handler)
        logger.disable("autospec")


def test_first_use_calibrates_then_later_engines_load_the_cache(cache):
    target, draft = tiny_llama(layers=2), tiny_llama(layers=1, seed=1)
    with log_lines() as lines:
        first = AutoSpec(target, draft, max_batch_size=4, max_spec_len=3)
    prior = first.summary()["prior"]
    assert prior["kind"] == "calibrated" and first.cost_model is not None
    assert any("calibrating the cost model" in line for line in lines)
    assert sorted(p.name for p in cache.iterdir()) == [f"{prior['key']}.yaml"]
    second = AutoSpec(target, draft, max_batch_size=4, max_spec_len=3)
    assert second.summary()["prior"]["kind"] == "cache" and second.summary()["prior"]["key"] == prior["key"]
    for b in (1, 3, 4):
        assert list(second.cost_model.step_times_s(b, 3)) == pytest.approx(list(first.cost_model.step_times_s(b, 3)))
    assert first.controller.prior == "model"             # the bandit starts from the cost model


def test_the_calibrated_prior_covers_every_batch_size_and_verify_width_asked_for(cache):
    spec = AutoSpec(tiny_llama(), tiny_llama(layers=1, seed=1), max_batch_size=6, max_spec_len=2)
    profile = spec.cost_model.profile
    assert profile.batch_sizes == [1, 2, 4, 6]
    assert {q for _, q in profile.target_step_ms} == {1, 2, 3}
    assert {b for b, _ in profile.draft_step_ms} == {1, 2, 4, 6}
    assert profile.acceptance_per_pos is None            # acceptance is learned from the first steps


def test_cache_key_follows_shape_dtype_and_drafter_not_the_weights():
    target = tiny_llama(layers=2)
    same_shape_other_weights = tiny_llama(layers=2, seed=5)
    key = cache_key(descriptor(target, "ngram"))
    assert cache_key(descriptor(same_shape_other_weights, "ngram")) == key
    assert cache_key(descriptor(tiny_llama(layers=3), "ngram")) != key
    assert cache_key(descriptor(tiny_llama(layers=2).to(torch.bfloat16), "ngram")) != key
    assert cache_key(descriptor(target, tiny_llama(layers=1))) != key
    assert cache_key(descriptor(target, tiny_llama(layers=1))) != cache_key(descriptor(target, tiny_llama(layers=2)))


def test_a_model_of_another_shape_calibrates_its_own_profile(cache):
    a = AutoSpec(tiny_llama(layers=2), "ngram", max_batch_size=2, max_spec_len=2)
    b = AutoSpec(tiny_llama(layers=3), "ngram", max_batch_size=2, max_spec_len=2)
    assert b.summary()["prior"]["kind"] == "calibrated" and b.summary()["prior"]["key"] != a.summary()["prior"]["key"]
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_descriptor", "too_small"])
def test_a_corrupt_or_stale_cache_entry_is_ignored_with_a_warning_and_replaced(cache, damage):
    target = tiny_llama(layers=2)
    first = AutoSpec(target, "ngram", max_batch_size=4, max_spec_len=2)
    path = cache / f"{first.summary()['prior']['key']}.yaml"
    text = path.read_text()
    if damage == "garbage":
        path.write_text("{{{ not yaml")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 3])
    elif damage == "other_descriptor":
        raw = yaml.safe_load(text)
        raw["calibration"]["descriptor"]["torch"] = "0.0.1"
        path.write_text(yaml.safe_dump(raw))
    with log_lines() as lines:
        again = AutoSpec(target, "ngram", max_batch_size=8 if damage == "too_small" else 4, max_spec_len=2)
    assert again.summary()["prior"]["kind"] == "calibrated"
    assert any("ignoring the cached cost profile" in line and str(path) in line for line in lines)
    assert AutoSpec(target, "ngram", max_batch_size=4, max_spec_len=2).summary()["prior"]["kind"] == "cache"


def test_explicit_choices_skip_the_search(cache):
    target = tiny_llama()
    flat = AutoSpec(target, "ngram", cost_model=None)
    assert flat.cost_model is None and flat.summary()["prior"]["kind"] == "none" and flat.controller.prior == "none"
    fixed = AutoSpec(target, "ngram", controller="fixed:2")
    assert fixed.cost_model is None and fixed.summary()["prior"]["kind"] == "none"
    given = AutoSpec(target, "ngram", cost_model="h200-llama2-7b-llama-68m")
    assert given.summary()["prior"] == {"kind": "given", "path": "h200-llama2-7b-llama-68m"}
    assert not cache.exists() or not list(cache.iterdir())          # nothing calibrated for any of them
    with pytest.raises(ValueError, match="cost_model"):
        AutoSpec(target, "ngram", cost_model=3)


def test_the_prior_and_its_source_are_in_the_run_metadata(cache, tmp_path):
    import json
    with AutoSpec(tiny_llama(), "ngram", max_batch_size=2, max_spec_len=2, run_name="calibrated",
                  runs_dir=tmp_path / "runs") as spec:
        ids, mask = ragged_batch(2, 97, seed=3)
        spec.generate(ids, attention_mask=mask, max_new_tokens=4)
    meta = json.loads((tmp_path / "runs" / "calibrated" / "run.json").read_text())
    assert meta["prior"]["kind"] == "calibrated" and meta["prior"]["key"] == spec.summary()["prior"]["key"]


class SmallMemoryLlama(LlamaForCausalLM):
    """A real Llama whose device holds at most 2 rows per forward (a stand-in for a full GPU)."""

    def forward(self, input_ids=None, **kwargs):
        if input_ids is not None and input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().forward(input_ids=input_ids, **kwargs)

    forward.__signature__ = inspect.signature(LlamaForCausalLM.forward)       # the same arguments as Llama's


def test_a_calibration_that_runs_out_of_memory_measures_what_fits_and_names_the_rest(cache):
    big = SmallMemoryLlama(tiny_llama().config).eval()
    with log_lines() as lines:
        prior = find_prior(big, "ngram", max_batch_size=8, max_spec_len=2)
    assert prior.source["extrapolated_batch_sizes"] == [4, 8]
    assert prior.cost_model.profile.batch_sizes == [1, 2]
    assert any("[4, 8] did not fit in memory" in line for line in lines)
    assert prior.cost_model.step_time_s(8, 2) > 0                   # extrapolated, not missing


def test_the_cache_lives_where_the_environment_says(cache):
    assert cache_root() == cache


def test_a_shipped_profile_is_used_only_for_the_device_and_pair_it_names():
    wanted = {"device": "NVIDIA H200", "dtype": "bfloat16",
              "target_shape": {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000},
              "draft": {"hidden_size": 768, "num_hidden_layers": 2, "vocab_size": 32000}}
    found = shipped_match(wanted)
    assert found is not None and found.source["kind"] == "shipped" and found.cost_model.name == "h200-llama2-7b-llama-68m"
    assert shipped_match({**wanted, "device": "NVIDIA H100 80GB HBM3"}).cost_model.name == "h100-llama2-7b-llama-68m"
    assert shipped_match({**wanted, "device": "NVIDIA A100-SXM4-80GB"}) is None
    assert shipped_match({**wanted, "dtype": "float16"}) is None
    assert shipped_match({**wanted, "draft": "ngram"}) is None
    cpu = match_fields(tiny_llama(), "ngram", descriptor(tiny_llama(), "ngram"))
    assert shipped_match(cpu) is None                   # no CPU profile names a device: a CPU calibrates
