"""`AutoSpec(...)` refuses, before any forward, what it cannot serve exactly, naming the model type and
the reason; what it can serve gets masks per layer kind in the form its attention expects."""
import re

import pytest
import torch

from autospec import AutoSpec
from autospec.backends.attention import UnsupportedModel, attention_plan
from tests.backends.families import build
from tests.backends.tiny_models import ragged_batch


def forward_calls(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda *a, **k: calls.append(1))
    return calls


@pytest.mark.parametrize("model_type, overrides, words", [
    ("mamba", {}, ["'mamba'", "stateful"]),
    ("recurrent_gemma", {}, ["'recurrent_gemma'", "stateful"]),
    ("qwen3_next", {}, ["'qwen3_next'", "stateful"]),
    ("lfm2", {"layer_types": ["conv", "full_attention", "conv", "full_attention"]}, ["'lfm2'", "['conv']", "rolled back"]),
    ("openai-gpt", {}, ["'openai-gpt'", "no KV cache"]),
    ("bart", {}, ["'bart'", "position_ids"]),
    ("moshi", {}, ["'moshi'", "sliding_window"]),
    ("xlm", {}, ["'xlm'", "bidirectional"]),
    ("xlstm", {}, ["'xlstm'", "attention_mask"]),
])
def test_models_that_cannot_be_served_exactly_are_refused_by_name(model_type, overrides, words):
    model = build(model_type, **overrides)
    calls = forward_calls(model)
    with pytest.raises(ValueError) as err:
        AutoSpec(model, "ngram")
    assert isinstance(err.value, UnsupportedModel)
    assert all(w in str(err.value) for w in words) and "Use the model's own `generate`" in str(err.value)
    assert not calls                                                       # refused before any compute


def test_a_stateful_draft_is_refused_too():
    target, draft = build("llama"), build("mamba")
    with pytest.raises(ValueError, match="'mamba'.*stateful"):
        AutoSpec(target, draft)


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention", "paged|eager"])
def test_an_attention_implementation_it_cannot_mask_is_refused_by_name(implementation):
    model = build("llama")
    model.config._attn_implementation = implementation                   # as loaded with that implementation
    with pytest.raises(ValueError, match=f'attn_implementation="{re.escape(implementation)}".*"sdpa" or "eager"'):
        AutoSpec(model, "ngram")


def test_mask_form_and_kinds_follow_the_config():
    assert attention_plan(build("llama")).mask_form == "bool"
    assert attention_plan(build("llama", "eager")).mask_form == "additive"
    gemma2 = attention_plan(build("gemma2", sliding_window=5))
    assert gemma2.keyed and set(gemma2.kinds) == {"full_attention", "sliding_attention"} and gemma2.sliding_window == 5
    assert attention_plan(build("mistral", sliding_window=5)).distinct_kinds == ("sliding_attention",)
    assert attention_plan(build("llama4_text", attention_chunk_size=5)).chunk_size == 5
    assert attention_plan(build("mpt")).positions_from_slots and attention_plan(build("bloom")).positions_from_slots
    assert not attention_plan(build("llama")).positions_from_slots


def test_a_draft_whose_layer_kinds_differ_from_the_targets_is_fine():
    target = build("gemma2", "eager", seed=0, sliding_window=4)           # eager, sliding + full layers
    draft = build("llama", seed=1)                                         # sdpa, full attention only
    ids, mask = ragged_batch(5, 100, seed=9, min_len=3, max_len=12)
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False, eos_token_id=-1,
                          pad_token_id=0)
    spec = AutoSpec(target, draft, controller="fixed:4", max_batch_size=3)
    assert spec.plans["target"].keyed and not spec.plans["draft"].keyed
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(out, ref)
