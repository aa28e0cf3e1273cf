"""Bad input fails before any compute, with a message that names the problem."""
import pytest
import torch

from autospec import AutoSpec
from tests.backends.tiny_models import ragged_batch, tiny_llama


@pytest.fixture(scope="module")
def target():
    return tiny_llama(layers=1, seed=0)


def test_vocabulary_mismatch_names_both_sizes(target):
    with pytest.raises(ValueError, match="target vocab_size=97, draft vocab_size=50"):
        AutoSpec(target, tiny_llama(layers=1, vocab=50))


def test_tokenizer_mismatch_is_refused(target):
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

        def __len__(self):
            return len(self.vocab)

    with pytest.raises(ValueError, match="tokenizers differ"):
        AutoSpec(target, tiny_llama(layers=1, seed=3), tokenizer=Tok({"a": 0, "b": 1}), draft_tokenizer=Tok({"a": 1, "b": 0}))


def test_unknown_draft_string(target):
    with pytest.raises(ValueError, match="draft must be a model, 'ngram' or None"):
        AutoSpec(target, "medusa")


@pytest.mark.parametrize("kwargs, match", [(dict(max_spec_len=-1), "max_spec_len"), (dict(max_batch_size=0), "max_batch_size"),
                                           (dict(controller="fixed:12"), "spec_len must be 0..8")])
def test_invalid_settings(target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoSpec(target, "ngram", **kwargs)


def test_empty_prompt_row(target):
    ids, mask = ragged_batch(3, 97)
    mask[1] = 0
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        AutoSpec(target, "ngram").generate(ids, attention_mask=mask, max_new_tokens=4)


def test_empty_input(target):
    with pytest.raises(ValueError, match="input_ids is empty"):
        AutoSpec(target, "ngram").generate(torch.zeros(2, 0, dtype=torch.long), max_new_tokens=4)


def test_prompt_longer_than_the_context(target):
    ids = torch.ones(1, 510, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the model's context of 512"):
        AutoSpec(target, "ngram").generate(ids, max_new_tokens=8)


@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_max_new_tokens_below_one(target, value):
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=value)


def test_a_draft_in_another_dtype_keeps_it_and_output_stays_exact(target):
    draft = tiny_llama(layers=1, seed=4).to(torch.bfloat16)
    ids, mask = ragged_batch(3, 97, seed=2)
    spec = AutoSpec(target, draft, controller="fixed:4")
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1, pad_token_id=0)
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=-1,
                          pad_token_id=0)
    assert next(spec.draft.parameters()).dtype == torch.bfloat16 and torch.equal(out, ref)


def test_a_profile_of_another_model_pair_is_refused(target):
    with pytest.raises(ValueError, match="measured for a target with .*hidden_size': 576.*this target has"):
        AutoSpec(target, "ngram", cost_model="cpu-smollm2-135m-ngram-bf16")


@pytest.mark.parametrize("kwargs, match", [
    (dict(repetition_penalty=1.7), "repetition_penalty=1.7 is not honoured"),
    (dict(no_repeat_ngram_size=2), "no_repeat_ngram_size=2 is not honoured"),
    (dict(output_scores=True, return_dict_in_generate=True), "is not honoured"),
    (dict(num_beams=4), "num_beams=4 is not honoured"),
    (dict(assistant_model=object()), "assistant_model.*AutoSpec\\(target, draft\\)"),
    (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens.*ngram"),
    (dict(token_type_ids=torch.zeros(1, 3, dtype=torch.long)), "not a generation or mask argument.*token_type_ids="),
    (dict(tempreature=0.5), "tempreature=0.5"),
    (dict(max_length=20), "max_length.*max_new_tokens"),
])
def test_generate_arguments_it_does_not_honour_are_refused_by_name(target, kwargs, match):
    calls = []
    target.register_forward_pre_hook(lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=match):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=4, **kwargs)
    assert not calls                                                       # before any compute


def test_generate_arguments_that_change_nothing_are_accepted(target):
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    ref = AutoSpec(target, "ngram").generate(ids, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    out = AutoSpec(target, "ngram").generate(ids, max_new_tokens=6, eos_token_id=-1, pad_token_id=0,
                                            repetition_penalty=1.0, num_beams=1, use_cache=True, streamer=None)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("field, value", [("repetition_penalty", 1.2), ("no_repeat_ngram_size", 3), ("min_new_tokens", 5),
                                          ("num_beams", 2), ("suppress_tokens", [5])])
def test_a_generation_config_field_it_does_not_honour_is_refused_by_name(field, value):
    from transformers import GenerationConfig
    target = tiny_llama(layers=1, seed=0)
    with pytest.raises(ValueError, match=f"the call's generation_config sets {field}="):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=4,
                                           generation_config=GenerationConfig(**{field: value}))
    target.generation_config = GenerationConfig(**{field: value}, eos_token_id=2)
    with pytest.raises(ValueError, match=f"the model's generation_config sets {field}="):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=4)


def test_sampling_with_nothing_set_uses_hfs_default_top_k():
    from autospec.engine import resolve_generation_args
    target = tiny_llama(layers=1, seed=0)
    args = resolve_generation_args(target, None, max_new_tokens=4, do_sample=True)
    assert args["top_k"] == 50 and args["temperature"] == 1.0
