"""Greedy speculative output is token-identical to the target's own greedy generate (float32, CPU)."""
import pytest
import torch

from autospec import AutoSpec
from tests.backends.tiny_models import DEVICES, CyclingController, mid_run_eos, ragged_batch, tiny_llama

VOCAB = 97
NEW = 24


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module")
def pair(device):
    return tiny_llama(layers=2, seed=0, device=device), tiny_llama(layers=1, seed=1, device=device)


def reference(target, ids, mask, eos=None):
    return target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                           eos_token_id=eos, pad_token_id=0)


def check_all_spec_lens(target, draft, ids, mask, max_batch_size=16):
    """Every fixed spec_len 0..8 and one that changes every step give the target's greedy output."""
    plain = reference(target, ids, mask, eos=-1)
    eos = mid_run_eos(plain, ids.shape[1])
    ref = reference(target, ids, mask, eos=eos)
    assert (ref[:, ids.shape[1]:] == 0).any() or ids.shape[0] == 1     # some rows stopped at EOS
    controllers = [f"fixed:{k}" for k in range(9)] + [CyclingController(seed=ids.shape[0])]
    for controller in controllers:
        spec = AutoSpec(target, draft, controller=controller, max_spec_len=8, max_batch_size=max_batch_size)
        out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0)
        assert out.shape == ref.shape and torch.equal(out, ref), f"{controller} differs at batch {ids.shape[0]}"
    return spec


@pytest.mark.parametrize("batch_size", range(1, 17))
def test_draft_model_with_gqa(pair, batch_size):
    target, draft = pair
    ids, mask = ragged_batch(batch_size, VOCAB, seed=batch_size, device=target.device)
    check_all_spec_lens(target, draft, ids, mask)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 9, 16])
def test_ngram_drafting(pair, batch_size):
    target, _ = pair
    ids, mask = ragged_batch(batch_size, VOCAB, seed=100 + batch_size, device=target.device)
    spec = check_all_spec_lens(target, "ngram", ids, mask)
    assert sum(r.num_accepted_tokens for r in spec.records) > 0        # the drafter really proposed


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_draft_equal_to_target_accepts_everything(pair, batch_size):
    target, _ = pair
    ids, mask = ragged_batch(batch_size, VOCAB, seed=200 + batch_size, device=target.device)
    ref = reference(target, ids, mask, eos=-1)
    spec = AutoSpec(target, target, controller="fixed:5", max_batch_size=16)
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(out, ref)
    assert sum(r.num_accepted_tokens for r in spec.records) == sum(r.num_draft_tokens for r in spec.records) > 0


def test_more_rows_than_slots_run_by_continuous_batching(pair):
    target, draft = pair
    ids, mask = ragged_batch(11, VOCAB, seed=7, device=target.device)
    spec = check_all_spec_lens(target, draft, ids, mask, max_batch_size=3)
    assert max(r.batch_size for r in spec.records) == 3


def test_draft_cache_stays_consistent_after_plain_steps(pair):
    """Steps at spec_len 0 leave the draft behind; it catches up before proposing, so acceptance
    with draft = target stays perfect whatever the schedule."""
    target, _ = pair
    ids, mask = ragged_batch(6, VOCAB, seed=3, device=target.device)

    class Alternating(CyclingController):
        def choose(self, ctx):
            return [0, 0, 0, 4][ctx.step % 4]

    spec = AutoSpec(target, target, controller=Alternating(), max_batch_size=8)
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(out, reference(target, ids, mask, eos=-1))
    drafted = [r for r in spec.records if r.spec_len]
    assert drafted and all(r.num_accepted_tokens == r.num_draft_tokens for r in drafted)


def test_records_describe_every_step(pair):
    target, draft = pair
    ids, mask = ragged_batch(4, VOCAB, seed=5, device=target.device)
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=4)
    out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=-1, pad_token_id=0)
    new_tokens = out.shape[0] * NEW
    records = spec.records
    assert sum(r.num_emitted_tokens for r in records) + ids.shape[0] == new_tokens  # + first tokens from prefill
    assert all(r.verify_time_s > 0 and r.draft_time_s > 0 for r in records if r.spec_len)
    assert spec.summary()["steps"] == len(records)
