"""Continuous batching: requests join as slots free up, leave at EOS or their own budget."""
import torch

from autospec import AutoSpec
from autospec.backends.hf import GenerationRequest
from tests.backends.tiny_models import ragged_batch, tiny_llama


def requests(n, vocab=97):
    ids, mask = ragged_batch(n, vocab, seed=42)
    prompts = [[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())]
    return [GenerationRequest(p, max_new_tokens=5 + 3 * (i % 4), request_id=f"r{i}", arrival_s=0.002 * i)
            for i, p in enumerate(prompts)]


def test_serve_matches_plain_greedy_per_request_and_moves_the_batch_size():
    target, draft = tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)
    reqs = requests(12)
    spec = AutoSpec(target, draft, controller="auto", max_batch_size=4)
    result = spec.serve(reqs, eos_token_id=-1, progress=False)
    assert result.error is None and result.unfinished == []
    assert [r.request_id for r in result.results] == [q.request_id for q in reqs]
    for req, res in zip(reqs, result.results):
        ref = target.generate(torch.tensor([req.prompt_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                              eos_token_id=-1, pad_token_id=0)[0, len(req.prompt_ids):].tolist()
        assert res.output_ids == ref and res.finish_reason == "length"
        assert res.arrival_s <= res.first_token_s <= res.finish_s and res.ttft_s >= 0
    sizes = {r.batch_size for r in result.records}
    assert max(sizes) == 4 and len(sizes) >= 3                  # the controller saw the batch size change
    assert result.throughput_tps > 0 and result.summary["steps"] == len(result.records)


def test_a_failure_mid_serve_keeps_finished_outputs_and_names_the_rest():
    target = tiny_llama(layers=1, seed=0)

    class Failing:
        """Plain decoding for 12 steps, then raises (as an OOM would)."""
        name = "failing"

        def choose(self, ctx):
            if ctx.step >= 12:
                raise RuntimeError("simulated device failure")
            return 0

        def observe(self, record):
            pass

        def scores(self, ctx):
            return {}

    reqs = requests(8)
    result = AutoSpec(target, "ngram", controller=Failing(), max_batch_size=2).serve(reqs, eos_token_id=-1, progress=False)
    assert "simulated device failure" in result.error
    finished = {r.request_id for r in result.results}
    assert finished and set(result.unfinished) == {q.request_id for q in reqs} - finished
    for r in result.results:
        assert len(r.output_ids) == next(q.max_new_tokens for q in reqs if q.request_id == r.request_id)


def test_custom_generate_hook_runs_autospec_inside_target_generate():
    target, draft = tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)
    ids, mask = ragged_batch(5, 97, seed=9)
    spec = AutoSpec(target, draft, controller="fixed:3")
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                          eos_token_id=-1)
    out = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                          eos_token_id=-1, custom_generate=spec.as_custom_generate())
    assert torch.equal(out, ref)
    assert spec.records and all(r.spec_len == 3 for r in spec.records if r.spec_len)


def test_long_generations_compact_and_grow_the_cache():
    """max_new_tokens far beyond the initial slots: compaction reclaims holes, growth adds room."""
    target, draft = tiny_llama(layers=1, seed=0), tiny_llama(layers=1, seed=2)
    ids, mask = ragged_batch(3, 97, seed=1)
    ref = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=200, do_sample=False, eos_token_id=-1,
                          pad_token_id=0)
    spec = AutoSpec(target, draft, controller="fixed:8")
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=200, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(out, ref)
    assert len(spec.records) > 150     # ~9 slots per step, ~1 kept: many compactions happened


class SlowController:
    """A controller that spends 30 ms choosing (public Controller protocol)."""
    name = "slow"

    def choose(self, ctx):
        import time
        time.sleep(0.03)
        return 1

    def observe(self, record):
        pass

    def scores(self, ctx):
        return {}


def test_host_time_between_steps_is_charged_to_the_step():
    target, draft = tiny_llama(layers=1, seed=0), tiny_llama(layers=1, seed=1)
    ids, mask = ragged_batch(2, 97, seed=1)
    fast = AutoSpec(target, draft, controller="fixed:1")
    slow = AutoSpec(target, draft, controller=SlowController())
    for spec in (fast, slow):
        spec.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=-1, pad_token_id=0)
    first, *later = slow.records
    assert first.overhead_time_s < 0.03                         # the first step has no previous step to charge
    assert all(r.overhead_time_s >= 0.03 for r in later)        # the controller's 30 ms lands in the next step
    assert all(r.step_time_s >= r.draft_time_s + r.verify_time_s + 0.03 for r in later)
    assert max(r.overhead_time_s for r in fast.records) < 0.03


def test_repeated_serve_calls_with_rows_retired_at_admission_keep_working():
    """Regression: a request that finishes at its prefill (a 1-token budget) is retired inside
    admission; that moved cache rows made under inference mode from outside it, and a later
    serve() on the same engine died with 'Inplace update to inference tensor outside InferenceMode'."""
    target, draft = tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=4)
    ids, mask = ragged_batch(10, 97, seed=5)
    prompts = [[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())]
    for round_ in range(4):
        reqs = [GenerationRequest(p, max_new_tokens=1 if i % 3 == 0 else 4 + i % 5, request_id=i)
                for i, p in enumerate(prompts)]
        result = spec.serve(reqs, eos_token_id=-1, progress=False)
        assert result.error is None and result.unfinished == [], f"round {round_ + 1}: {result.error}"
        for req, res in zip(reqs, result.results):
            ref = target.generate(torch.tensor([req.prompt_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                                  eos_token_id=-1, pad_token_id=0)[0, len(req.prompt_ids):].tolist()
            assert res.output_ids == ref


def test_custom_generate_applies_the_processors_hf_prepared():
    target = tiny_llama(layers=1, seed=0)
    spec = AutoSpec(target, "ngram", controller="fixed:2")
    ids = torch.tensor([[3, 4, 5, 3, 4, 5]])
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=-1, repetition_penalty=1.5)
    ref = target.generate(ids, **kwargs)
    assert torch.equal(target.generate(ids, custom_generate=spec.as_custom_generate(), **kwargs), ref)
    assert not torch.equal(ref, target.generate(ids, **{**kwargs, "repetition_penalty": 1.0}))


def test_custom_generate_refuses_model_inputs_it_does_not_feed():
    import pytest
    target = tiny_llama(layers=1, seed=0)
    custom = AutoSpec(target, "ngram").as_custom_generate()
    with pytest.raises(ValueError, match=r"\['token_type_ids'\] reached custom_generate"):
        custom(target, torch.tensor([[3, 4, 5]]), token_type_ids=torch.zeros(1, 3, dtype=torch.long))


def test_a_dict_request_with_keys_it_does_not_honour_is_refused_by_name_and_the_others_served():
    target = tiny_llama(layers=1, seed=0)
    spec = AutoSpec(target, "ngram")
    result = spec.serve([{"prompt_ids": [3, 4]}, {"prompt_ids": [5, 6], "num_beams": 3}], max_new_tokens=4,
                        eos_token_id=-1, progress=False)
    assert list(result.rejected) == [1]
    assert "has keys autospec does not honour: ['num_beams']" in result.rejected[1]
    ref = target.generate(torch.tensor([[3, 4]]), max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=0)
    assert [r.output_ids for r in result.results] == [ref[0, 2:].tolist()] and result.unfinished == []


def test_rows_that_all_finish_at_admission_while_others_are_still_to_arrive():
    """Regression (found by benchmarks/soak.py): the first arrivals finish at their prefill, the
    batch is empty, the next arrival also finishes at once; serve() stopped with 'step() called with
    no running rows'. Now it waits for the next arrival and serves everything."""
    target = tiny_llama(layers=1, seed=0)
    spec = AutoSpec(target, "ngram", controller="fixed:2", max_batch_size=2)
    reqs = [GenerationRequest([3, 4], 1, "a", 0.0), GenerationRequest([5, 6, 7], 1, "b", 0.03),
            GenerationRequest([8, 9], 1, "c", 0.06), GenerationRequest([3, 9, 4], 6, "d", 0.09)]
    result = spec.serve(reqs, eos_token_id=-1, progress=False)
    assert result.error is None and result.unfinished == []
    for req, res in zip(reqs, result.results):
        ref = target.generate(torch.tensor([req.prompt_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                              eos_token_id=-1, pad_token_id=0)[0, len(req.prompt_ids):].tolist()
        assert res.output_ids == ref
    assert result.results[-1].arrival_s == 0.09 and result.results[-1].first_token_s >= 0.09


SETTINGS = [lambda g: {"repetition_penalty": 1.6}, lambda g: {"no_repeat_ngram_size": 2},
            lambda g: {"suppress_tokens": [g[0], g[1]]}, lambda g: {"min_new_tokens": 6, "eos_token_id": g[2]},
            lambda g: {"eos_token_id": [g[3], g[5]]}, lambda g: {"sequence_bias": {(g[1],): -9.0}}, lambda g: {},
            lambda g: {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "exponential_decay_length_penalty": (2, 1.5),
                       "eos_token_id": g[6]}]   # each a function of the row's plain greedy continuation g


def test_each_request_is_processed_with_its_own_settings_as_target_generate_on_it_alone():
    target, draft = tiny_llama(layers=2, seed=0), tiny_llama(layers=1, seed=1)
    ids, mask = ragged_batch(8, 97, seed=4)
    prompts = [[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())]
    plain = [target.generate(torch.tensor([p]), max_new_tokens=14, do_sample=False, pad_token_id=0,
                             eos_token_id=-1)[0, len(p):].tolist() for p in prompts]
    items = [{"prompt_ids": p, "request_id": i, "max_new_tokens": 14, **SETTINGS[i](plain[i])}
             for i, p in enumerate(prompts)]
    refs = []
    for item in items:
        settings = {k: v for k, v in item.items() if k not in ("prompt_ids", "request_id", "max_new_tokens")}
        settings.setdefault("eos_token_id", -1)
        out = target.generate(torch.tensor([item["prompt_ids"]]), max_new_tokens=14, do_sample=False, pad_token_id=0,
                              **settings)[0, len(item["prompt_ids"]):].tolist()
        eos = settings["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        ends = [k for k, t in enumerate(out) if t in eos]
        refs.append(out[: ends[0] + 1] if ends else out)
    assert sum(r != q for r, q in zip(refs, plain)) >= 6                 # the settings really change the rows
    for drafter in (draft, "ngram"):
        for controller in ("fixed:3", "auto"):
            spec = AutoSpec(target, drafter, controller=controller, max_batch_size=3)
            result = spec.serve(items, eos_token_id=-1, progress=False)
            assert result.error is None and not result.rejected and result.unfinished == []
            assert [r.output_ids for r in result.results] == refs, (controller, drafter)


def test_a_request_with_stop_strings_ends_where_hf_ends_it():
    from transformers import AutoTokenizer

    from autospec.backends.models import converted_smollm2
    words = AutoTokenizer.from_pretrained(converted_smollm2(), local_files_only=True)
    target = tiny_llama(layers=2, seed=0, vocab=len(words))
    prompts = [words("the cat sat on the mat")["input_ids"], words("one two three four")["input_ids"]]
    plain = target.generate(torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                            eos_token_id=-1)[0, len(prompts[0]):]
    stop = words.decode(plain[4:6])
    ref = target.generate(torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                          eos_token_id=-1, stop_strings=[stop], tokenizer=words)[0, len(prompts[0]):].tolist()
    spec = AutoSpec(target, "ngram", controller="fixed:3", tokenizer=words)
    result = spec.serve([{"prompt_ids": prompts[0], "stop_strings": [stop]}, {"prompt_ids": prompts[1]}],
                        max_new_tokens=12, eos_token_id=-1, progress=False)
    first = result.results[0]
    assert first.output_ids == ref[: len(first.output_ids)] and len(first.output_ids) < 12
    assert first.finish_reason == "stop" and words.decode(first.output_ids).endswith(stop)
    assert len(result.results[1].output_ids) == 12


def test_records_carry_the_verified_width_and_the_rows_that_drafted():
    """n-gram lookup proposes only where the context repeats: the verify block is as wide as the longest
    draft of the step, and rows_drafted_per_pos counts the rows that reached each position."""
    target = tiny_llama(layers=2, seed=0)
    prompts = [[5, 6, 7, 5, 6, 7, 5, 6], [11, 12, 13, 14, 15, 16, 17, 18]]       # one repeats, one never does
    spec = AutoSpec(target, "ngram", controller="fixed:3", max_batch_size=2)
    spec.serve(prompts, max_new_tokens=6, eos_token_id=-1, progress=False)
    for r in spec.records:
        drafted = r.rows_drafted_per_pos
        assert len(drafted) == r.spec_len and list(drafted) == sorted(drafted, reverse=True)
        assert r.verified_width == 1 + sum(1 for n in drafted if n > 0)
        assert r.num_draft_tokens == sum(drafted) and all(a <= n for a, n in zip(r.accepted_per_pos, drafted))
    assert any(r.verified_width < r.spec_len + 1 for r in spec.records)         # some step drafted less than 3


class ContextRecorder:
    """Plays spec_len 2 and keeps every StepContext it was shown (public Controller protocol)."""
    name = "context-recorder"

    def __init__(self):
        self.contexts = []

    def choose(self, ctx):
        self.contexts.append(ctx)
        return 2

    def observe(self, record):
        pass


def test_the_step_context_says_how_many_tokens_the_running_rows_may_still_emit():
    target = tiny_llama(layers=2, seed=0)
    prompts = [[5, 6, 7], [8, 9]]
    recorder = ContextRecorder()
    reqs = [GenerationRequest(p, max_new_tokens=n, request_id=i) for i, (p, n) in enumerate(zip(prompts, [4, 12]))]
    AutoSpec(target, "ngram", controller=recorder, max_batch_size=2).serve(reqs, eos_token_id=-1, progress=False)
    remaining = [ctx.remaining_tokens for ctx in recorder.contexts]
    assert remaining[0] == 11                         # the 12-token request emitted its first token at prefill
    assert all(a >= b for a, b in zip(remaining, remaining[1:])) and remaining[-1] >= 1
    assert len(set(remaining)) == len(remaining)      # every step emits at least one token per row
