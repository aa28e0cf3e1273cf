"""generate() as a drop-in for target.generate: every honoured generation argument gives HF's own
greedy output (float32, batch 1 and 3 ragged, spec_len 0 / 3 / auto, draft model and n-gram),
alone and combined, directly and through `target.generate(custom_generate=...)`; stopping,
streaming and the dict outputs match HF's; everything else is refused by name before compute."""
import pytest
import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList, TextIteratorStreamer)

from autospec import AutoSpec
from autospec.backends.generation import HONOURED_ARGUMENTS, REFUSED_ARGUMENTS
from tests.backends.tiny_models import ragged_batch, tiny_llama

EOS = 2

# Each honoured processor argument, as a function of the plain greedy continuation `g` (the
# tokens of every row, in order), so that each value changes tiny Llama's greedy output.
PROCESSOR_ARGS = {
    "repetition_penalty": lambda g: {"repetition_penalty": 1.7},
    "no_repeat_ngram_size": lambda g: {"no_repeat_ngram_size": 2},
    "min_new_tokens": lambda g: {"min_new_tokens": 9, "eos_token_id": g[3]},
    "min_length": lambda g: {"min_length": 18, "eos_token_id": g[3]},
    "suppress_tokens": lambda g: {"suppress_tokens": [g[0], g[2]]},
    "begin_suppress_tokens": lambda g: {"begin_suppress_tokens": [g[0]]},
    "bad_words_ids": lambda g: {"bad_words_ids": [[g[1]], [g[2], g[3]]]},
    "sequence_bias": lambda g: {"sequence_bias": {(g[1],): -6.0, (g[2], g[3]): -3.0}},
    "forced_bos_token_id": lambda g: {"forced_bos_token_id": 33},
    "forced_eos_token_id": lambda g: {"forced_eos_token_id": 44},
    "exponential_decay_length_penalty": lambda g: {"exponential_decay_length_penalty": (2, 2.5),
                                                   "eos_token_id": sorted(set(g), key=g.count)[0]},
    "remove_invalid_values": lambda g: {"remove_invalid_values": True},
    "encoder_repetition_penalty": lambda g: {"encoder_repetition_penalty": 1.8},
    "renormalize_logits": lambda g: {"renormalize_logits": True},
    "combined": lambda g: {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "min_new_tokens": 4,
                           "suppress_tokens": [g[0]], "sequence_bias": {(g[4],): 2.0},
                           "exponential_decay_length_penalty": (5, 1.3)},
}
UNCHANGED = {"remove_invalid_values", "renormalize_logits", "forced_bos_token_id"}   # argmax-neutral here
UNCHANGED_AT_1 = {"encoder_repetition_penalty"}          # the batch-1 prompt's tokens never win there


def continuation(target, ids, mask):
    out = hf(target, ids, mask, eos_token_id=-1)[:, ids.shape[1]:]
    return [t for row in out.tolist() for t in row]


@pytest.fixture(scope="module")
def models():
    return tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)


def batch(size):
    if size == 1:
        ids = torch.tensor([[5, 9, 12, 5, 9, 12, 7]])
        return ids, torch.ones_like(ids)
    return ragged_batch(size, 97, seed=4)


def hf(target, ids, mask, **kwargs):
    kwargs = {"eos_token_id": EOS, "max_new_tokens": 16, **kwargs}
    return target.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=0, **kwargs)


@pytest.mark.parametrize("name", sorted(PROCESSOR_ARGS))
@pytest.mark.parametrize("size", [1, 3])
def test_each_processor_argument_gives_hf_greedy_output(models, name, size):
    target, draft = models
    ids, mask = batch(size)
    args = {"eos_token_id": EOS, **PROCESSOR_ARGS[name](continuation(target, ids, mask))}
    ref = hf(target, ids, mask, **args)
    changed = not torch.equal(ref, hf(target, ids, mask, eos_token_id=args["eos_token_id"]))
    assert changed or name in UNCHANGED or (size == 1 and name in UNCHANGED_AT_1)
    for drafter in (draft, "ngram"):
        for controller in ("fixed:0", "fixed:3", "auto"):
            spec = AutoSpec(target, drafter, controller=controller)
            out = spec.generate(ids, attention_mask=mask, max_new_tokens=16, pad_token_id=0, **args)
            assert torch.equal(out, ref), (name, size, controller, drafter if isinstance(drafter, str) else "draft")


def test_a_generation_config_with_processors_is_honoured_and_custom_generate_passes_them(models):
    target, draft = models
    ids, mask = batch(3)
    config = GenerationConfig(max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=EOS,
                              **PROCESSOR_ARGS["combined"](continuation(target, ids, mask)))
    ref = target.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    spec = AutoSpec(target, draft, controller="fixed:3")
    assert torch.equal(spec.generate(ids, attention_mask=mask, generation_config=config), ref)
    out = target.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                          custom_generate=spec.as_custom_generate())
    assert torch.equal(out, ref)


class BanAfterThree(LogitsProcessor):
    """A user processor (pure in input_ids and scores): bans token 3 + (length mod 7)."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[torch.arange(len(scores)), 3 + input_ids.shape[1] % 7] = -float("inf")
        return scores


class StopOnToken(StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


def test_user_processors_and_criteria_are_applied_as_hf_does(models):
    target, draft = models
    ids, mask = batch(3)
    plain = hf(target, ids, mask)
    stop_token = int(plain[0, ids.shape[1] + 5])
    extra = dict(logits_processor=LogitsProcessorList([BanAfterThree()]),
                 stopping_criteria=StoppingCriteriaList([StopOnToken(stop_token)]))
    ref = hf(target, ids, mask, **extra)
    spec = AutoSpec(target, draft, controller="fixed:4")
    assert torch.equal(spec.generate(ids, attention_mask=mask, max_new_tokens=16, pad_token_id=0, eos_token_id=EOS,
                                     **extra), ref)
    out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0,
                          eos_token_id=EOS, custom_generate=spec.as_custom_generate(), **extra)
    assert torch.equal(out, ref)


@pytest.fixture(scope="module")
def worded():
    """Tiny random Llamas over the embedded SmolLM2 tokenizer's vocabulary, and that tokenizer (what
    StopStringCriteria and the streamers need)."""
    from transformers import AutoTokenizer

    from autospec.backends.models import converted_smollm2
    tokenizer = AutoTokenizer.from_pretrained(converted_smollm2(), local_files_only=True)
    vocab = len(tokenizer)
    return tiny_llama(layers=2, seed=0, vocab=vocab), tiny_llama(layers=1, seed=1, vocab=vocab), tokenizer


def worded_batch(tokenizer):
    texts = ["the cat sat on the mat and the cat", "one two three", "a b a b a b a b a b"]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("size", [1, 3])
def test_stop_strings_end_rows_where_hf_ends_them(worded, size):
    target, draft, words = worded
    ids, mask = worded_batch(words)
    ids, mask = ids[-size:], mask[-size:]
    plain = hf(target, ids, mask)
    stop = words.decode(plain[0, ids.shape[1] + 3: ids.shape[1] + 5])          # two tokens midway through row 0
    ref = hf(target, ids, mask, stop_strings=[stop], tokenizer=words)
    assert not torch.equal(ref, plain)
    for drafter in (draft, "ngram"):
        for controller in ("fixed:0", "fixed:3", "auto"):
            spec = AutoSpec(target, drafter, controller=controller)
            out = spec.generate(ids, attention_mask=mask, max_new_tokens=16, pad_token_id=0, eos_token_id=EOS,
                                stop_strings=[stop], tokenizer=words)
            assert torch.equal(out, ref), (size, controller)


def test_stop_strings_without_a_tokenizer_raise_hfs_error(models):
    spec = AutoSpec(models[0], "ngram")
    with pytest.raises(ValueError, match="stop strings"):
        spec.generate(torch.tensor([[3, 4]]), max_new_tokens=4, stop_strings=["x"])


def test_text_iterator_streamer_yields_exactly_the_decoded_output(worded):
    target, draft, words = worded
    ids = words(["the cat sat on the mat and the cat"], return_tensors="pt")["input_ids"]
    ref = hf(target, ids, torch.ones_like(ids), eos_token_id=-1, max_new_tokens=20)
    for drafter in (draft, "ngram"):
        for controller in ("fixed:0", "fixed:3", "auto"):
            streamer = TextIteratorStreamer(words, skip_prompt=True)
            spec = AutoSpec(target, drafter, controller=controller)
            out = spec.generate(ids, max_new_tokens=20, pad_token_id=0, eos_token_id=-1, streamer=streamer)
            assert torch.equal(out, ref)
            assert "".join(streamer) == words.decode(out[0, ids.shape[1]:])


def test_a_streamer_with_a_batch_raises_as_hf_does_before_compute(worded):
    target, _, words = worded
    spec = AutoSpec(target, "ngram")
    ids, mask = worded_batch(words)
    with pytest.raises(ValueError, match="only supports batch size 1"):
        spec.generate(ids, attention_mask=mask, max_new_tokens=4, streamer=TextIteratorStreamer(words))
    assert spec.memory.num_written == 0


def stopping_args(target, ids, mask, name):
    """The stopping arguments `name` stands for, with values the plain greedy output reaches midway."""
    plain = hf(target, ids, mask, eos_token_id=-1)
    width = ids.shape[1]
    if name == "max_length":
        return {"max_length": width + 7, "eos_token_id": -1}
    if name == "several_eos":
        return {"max_new_tokens": 16, "eos_token_id": [int(plain[0, width + 4]), int(plain[-1, width + 6])]}
    return {"max_new_tokens": 16, "max_time": 1e-9, "eos_token_id": -1}     # over after the first token, in HF and here


@pytest.mark.parametrize("name", ["max_length", "several_eos", "max_time"])
@pytest.mark.parametrize("size", [1, 3])
def test_stopping_arguments_end_rows_where_hf_ends_them(models, name, size):
    target, draft = models
    ids, mask = batch(size)
    args = stopping_args(target, ids, mask, name)
    ref = target.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=0, **args)
    assert not torch.equal(ref, hf(target, ids, mask, eos_token_id=-1))      # the argument really stopped rows
    for drafter in (draft, "ngram"):
        for controller in ("fixed:0", "fixed:3", "auto"):
            out = AutoSpec(target, drafter, controller=controller).generate(ids, attention_mask=mask, pad_token_id=0,
                                                                            **args)
            assert torch.equal(out, ref), (name, size, controller)


@pytest.mark.parametrize("size", [1, 3])
def test_return_dict_with_scores_and_logits_equals_hf(models, size):
    target, draft = models
    ids, mask = batch(size)
    kwargs = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, repetition_penalty=1.4,
                  eos_token_id=-1, max_new_tokens=12)
    ref = hf(target, ids, mask, **kwargs)
    for drafter in (draft, "ngram"):
        for controller in ("fixed:0", "fixed:3", "auto"):
            out = AutoSpec(target, drafter, controller=controller).generate(ids, attention_mask=mask, pad_token_id=0,
                                                                            **kwargs)
            assert type(out).__name__ == "GenerateDecoderOnlyOutput"
            assert torch.equal(out.sequences, ref.sequences)
            assert len(out.scores) == len(ref.scores) == len(out.logits) == 12
            for mine, theirs in zip(out.scores + out.logits, ref.scores + ref.logits):
                torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_num_return_sequences_with_sampling_expands_rows_and_greedy_refuses(models):
    target, draft = models
    ids = torch.tensor([[5, 9, 12, 5]])
    spec = AutoSpec(target, draft, controller="fixed:2", seed=3)
    out = spec.generate(ids, max_new_tokens=8, do_sample=True, num_return_sequences=4, pad_token_id=0, eos_token_id=-1)
    assert out.shape == (4, 12) and torch.equal(out[:, :4], ids.expand(4, 4))
    assert len({tuple(r) for r in out[:, 4:].tolist()}) > 1
    with pytest.raises(ValueError, match="num_return_sequences"):
        target.generate(ids, max_new_tokens=4, num_return_sequences=2, do_sample=False, pad_token_id=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        spec.generate(ids, max_new_tokens=4, num_return_sequences=2, pad_token_id=0)


def test_every_generation_config_field_is_honoured_or_refused():
    """A new transformers field fails here until it is tested as honoured or listed as refused."""
    fields = {k for k in vars(GenerationConfig()) if not k.startswith("_")}
    unclassified = fields - set(HONOURED_ARGUMENTS) - set(REFUSED_ARGUMENTS)
    assert not unclassified, f"GenerationConfig fields neither honoured nor refused: {sorted(unclassified)}"
    assert not set(HONOURED_ARGUMENTS) & set(REFUSED_ARGUMENTS)


@pytest.mark.parametrize("name", sorted(REFUSED_ARGUMENTS))
def test_each_refused_argument_is_refused_by_name_before_compute(models, name):
    value = REFUSED_ARGUMENTS[name]
    if value is None:
        pytest.skip(f"{name} has no value that changes the output of a decoder-only causal LM")
    spec = AutoSpec(models[0], "ngram")
    with pytest.raises(ValueError, match=name):
        spec.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=4, **{name: value})
    assert spec.memory.num_written == 0


# A non-default value for each inert field (None: no value that HF itself accepts here changes anything).
INERT_VALUES = {
    "assistant_confidence_threshold": 0.9, "assistant_lookbehind": 3, "bos_token_id": 1, "cache_config": None,
    "cache_implementation": "static", "compile_config": None, "continuous_batching_config": None,
    "decoder_start_token_id": 3, "disable_compile": True, "diversity_penalty": None, "early_stopping": True,
    "is_assistant": None, "encoder_no_repeat_ngram_size": 2,
    "length_penalty": 2.0, "low_memory": True, "max_cache_len": None, "max_matching_ngram_size": 2,
    "num_assistant_tokens": 5, "num_assistant_tokens_schedule": "heuristic", "num_beam_groups": None,
    "prefill_chunk_size": 4, "target_lookbehind": 3, "transformers_version": "0.0.1",
}


@pytest.mark.parametrize("name", sorted(n for n, kind in HONOURED_ARGUMENTS.items() if kind == "inert"))
def test_each_inert_field_changes_nothing_as_in_hf(models, name):
    value = INERT_VALUES[name]
    if value is None:
        pytest.skip(f"{name}: HF accepts no value here that could change a decoder-only greedy output")
    target, draft = models
    ids, mask = batch(3)
    ref = hf(target, ids, mask, **{name: value})
    assert torch.equal(ref, hf(target, ids, mask))
    out = AutoSpec(target, draft, controller="fixed:3").generate(ids, attention_mask=mask, max_new_tokens=16,
                                                                  pad_token_id=0, eos_token_id=EOS, **{name: value})
    assert torch.equal(out, ref)


def test_without_a_mask_pad_tokens_in_the_input_are_masked_as_hf_masks_them(models):
    target, draft = models
    ids = torch.tensor([[0, 0, 5, 9, 12, 5], [7, 8, 9, 10, 11, 12]])          # row 0 left-padded with pad id 0
    ref = target.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=-1)
    out = AutoSpec(target, draft, controller="fixed:3").generate(ids, max_new_tokens=10, pad_token_id=0,
                                                                  eos_token_id=-1)
    assert torch.equal(out, ref)


def test_the_draft_proposes_from_processed_scores_so_a_perfect_draft_is_always_accepted(models):
    """The draft is the target itself: drawing its drafts from the same processed scores as the
    target verifies against, every draft is accepted (unprocessed, the repeats it proposes would not be)."""
    target, _ = models
    ids, mask = batch(3)
    args = dict(repetition_penalty=2.0, no_repeat_ngram_size=2, eos_token_id=-1)
    ref = hf(target, ids, mask, **args)
    spec = AutoSpec(target, target, controller="fixed:4")
    assert torch.equal(spec.generate(ids, attention_mask=mask, max_new_tokens=16, pad_token_id=0, **args), ref)
    assert sum(r.num_accepted_tokens for r in spec.records) == sum(r.num_draft_tokens for r in spec.records) > 0
