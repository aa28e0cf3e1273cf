"""An idle draft costs nothing: a model drafter prefills rows only when it is about to draft."""
from __future__ import annotations

import inspect
import time

import torch
from transformers import LlamaForCausalLM

from autospec import AutoSpec
from autospec.backends.hf import GenerationRequest
from tests.backends.tiny_models import ragged_batch, tiny_llama


class CountingLlama(LlamaForCausalLM):
    """A real Llama that counts its forwards and the rows of each."""

    def forward(self, input_ids=None, **kwargs):
        self.calls.append(int(input_ids.shape[0]))
        return super().forward(input_ids=input_ids, **kwargs)

    forward.__signature__ = inspect.signature(LlamaForCausalLM.forward)


def counting_draft() -> CountingLlama:
    draft = CountingLlama(tiny_llama(layers=1, seed=1).config).eval()
    draft.load_state_dict(tiny_llama(layers=1, seed=1).state_dict())
    draft.calls = []
    return draft


class Schedule:
    """spec_len 0 for the first `plain_steps` steps, then `spec_len` (the public controller protocol)."""
    name = "schedule"

    def __init__(self, plain_steps: int, spec_len: int):
        self.plain_steps, self.spec_len, self.steps = plain_steps, spec_len, 0

    def choose(self, ctx):
        self.steps += 1
        return 0 if self.steps <= self.plain_steps else self.spec_len

    def observe(self, record):
        pass


def test_a_draft_that_never_drafts_never_runs():
    target, draft = tiny_llama(layers=2), counting_draft()
    ids, mask = ragged_batch(4, 97, seed=5)
    spec = AutoSpec(target, draft, controller="fixed:0", max_batch_size=2)     # continuous batching: 2 waves
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=-1)
    assert draft.calls == []
    reference = target.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=-1,
                                pad_token_id=0)
    assert torch.equal(out, reference)


def test_rows_that_joined_while_plain_are_prefilled_together_when_drafting_starts_and_stay_exact():
    target, draft = tiny_llama(layers=2), counting_draft()
    ids, mask = ragged_batch(6, 97, seed=7, min_len=3)
    prompts = [[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())]
    reqs = [GenerationRequest(p, max_new_tokens=6 + 2 * i, request_id=i) for i, p in enumerate(prompts)]
    spec = AutoSpec(target, draft, controller=Schedule(plain_steps=4, spec_len=3), max_batch_size=4)
    result = spec.serve(reqs, eos_token_id=-1, progress=False)
    assert result.error is None and not result.unfinished
    assert draft.calls[0] == 4                      # the 4 rows admitted during plain steps: one batched prefill
    for req, res in zip(reqs, result.results):
        ref = target.generate(torch.tensor([req.prompt_ids]), max_new_tokens=req.max_new_tokens, do_sample=False,
                              eos_token_id=-1, pad_token_id=0)[0, len(req.prompt_ids):].tolist()
        assert res.output_ids == ref
    assert sum(r.spec_len > 0 for r in result.records) > 0


class SlowPrefillLlama(CountingLlama):
    """A forward over 8 or more tokens per row (a prefill here) takes 0.3 s more."""

    def forward(self, input_ids=None, **kwargs):
        if input_ids.shape[1] >= 8:
            time.sleep(0.3)
        return super().forward(input_ids=input_ids, **kwargs)

    forward.__signature__ = inspect.signature(LlamaForCausalLM.forward)


def test_the_deferred_prefill_is_charged_to_the_drafting_step_that_needs_it():
    target = tiny_llama(layers=2)
    draft = SlowPrefillLlama(tiny_llama(layers=1, seed=1).config).eval()
    draft.calls = []
    ids, mask = ragged_batch(4, 97, seed=5, min_len=10, max_len=12)
    spec = AutoSpec(target, draft, controller=Schedule(plain_steps=3, spec_len=2), max_batch_size=4)
    result = spec.serve([[t for t, m in zip(r, mm) if m] for r, mm in zip(ids.tolist(), mask.tolist())],
                        max_new_tokens=8, eos_token_id=-1, progress=False)
    assert max(draft.calls) == 4 and len(draft.calls) > 1                  # one batched prefill, then drafting
    slow = [r for r in result.records if r.draft_time_s >= 0.3]
    assert len(slow) == 1 and slow[0].spec_len == 2                       # the first drafting step pays for it
    assert all(r.step_time_s < 0.3 for r in result.records if r.spec_len == 0)
    assert result.prefill_time_s < 0.3                                      # and admission does not
