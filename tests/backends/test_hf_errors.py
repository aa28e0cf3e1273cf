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
    with pytest.raises(ValueError, match="max_new_tokens"):                # HF's own message, or autospec's
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
    (dict(num_beams=4), "num_beams=4 is not honoured"),
    (dict(output_attentions=True, return_dict_in_generate=True), "output_attentions=True is not honoured"),
    (dict(penalty_alpha=0.6, top_k=4), "penalty_alpha=0.6 is not honoured"),
    (dict(use_cache=False), "use_cache=False is not honoured"),
    (dict(assistant_model=object()), "assistant_model.*AutoSpec\\(target, draft\\)"),
    (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens.*ngram"),
    (dict(prefix_allowed_tokens_fn=lambda b, ids: [3]), "prefix_allowed_tokens_fn"),
    (dict(token_type_ids=torch.zeros(1, 3, dtype=torch.long)), "token_type_ids.*not generation arguments"),
    (dict(tempreature=0.5), "tempreature"),
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


@pytest.mark.parametrize("field, value", [("num_beams", 2), ("penalty_alpha", 0.5), ("dola_layers", "low")])
def test_a_generation_config_field_it_does_not_honour_is_refused_by_name(field, value):
    from transformers import GenerationConfig
    target = tiny_llama(layers=1, seed=0)
    with pytest.raises(ValueError, match=f"{field}={value!r} is not honoured"):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=4,
                                           generation_config=GenerationConfig(**{field: value}))
    target.generation_config = GenerationConfig(**{field: value}, eos_token_id=2)
    with pytest.raises(ValueError, match=f"{field}={value!r} is not honoured"):
        AutoSpec(target, "ngram").generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=4)


@pytest.mark.parametrize("field, value", [("repetition_penalty", 1.6), ("no_repeat_ngram_size", 2),
                                          ("suppress_tokens", [33, 86])])
def test_serve_honours_a_model_generation_config_with_processors(field, value):
    from transformers import GenerationConfig
    target = tiny_llama(layers=2, seed=0)
    prompts = [[5, 9, 12, 5, 9, 12, 7], [41, 16, 41, 16]]
    plain = [target.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=-1,
                             pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    target.generation_config = GenerationConfig(**{field: value}, eos_token_id=2)
    refs = [target.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=-1,
                            pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    assert refs != plain
    result = AutoSpec(target, "ngram", controller="fixed:3").serve(prompts, max_new_tokens=12, eos_token_id=-1,
                                                                    progress=False)
    assert [r.output_ids for r in result.results] == refs


def test_serve_refuses_a_model_generation_config_it_cannot_honour_for_the_whole_call():
    from transformers import GenerationConfig
    target = tiny_llama(layers=1, seed=0)
    target.generation_config = GenerationConfig(num_beams=3, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="num_beams=3 is not honoured"):
        AutoSpec(target, "ngram").serve([[3, 4, 5]], max_new_tokens=4, progress=False)


def test_sampling_with_nothing_set_uses_hfs_default_top_k():
    from autospec.backends.generation import resolve_generation_args
    target = tiny_llama(layers=1, seed=0)
    args = resolve_generation_args(target, None, max_new_tokens=4, do_sample=True)
    assert args["top_k"] == 50 and args["temperature"] == 1.0
