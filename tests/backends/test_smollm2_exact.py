"""Exactness on the real embedded model: SmolLM2-135M-Instruct (float32) with a truncated draft."""
import pytest
import torch

from autospec import AutoSpec
from autospec.backends.models import load_smollm2, truncated_draft
from autospec.prompts import chat_token_ids, load_prompts
from tests.backends.tiny_models import CyclingController, mid_run_eos

pytestmark = pytest.mark.slow
NEW = 16


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_smollm2(dtype=torch.float32)
    return model, tokenizer, truncated_draft(model, 12)


def batch(tokenizer, n):
    prompts = [p["prompt"] for p in load_prompts()][::48 // n][:n]
    rows = chat_token_ids(tokenizer, prompts)
    width = max(len(r) for r in rows)
    ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


@pytest.mark.parametrize("draft_kind", ["truncated", "ngram", "self"])
def test_greedy_output_is_the_targets(smollm2, draft_kind):
    model, tokenizer, draft = smollm2
    draft = {"truncated": draft, "ngram": "ngram", "self": model}[draft_kind]
    ids, mask = batch(tokenizer, 6)
    plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                           eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    eos = mid_run_eos(plain, ids.shape[1])
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id)
    spec_lens = [0, 1, 3, 8] if draft_kind != "truncated" else list(range(9))
    for controller in [f"fixed:{k}" for k in spec_lens] + [CyclingController(seed=1)]:
        spec = AutoSpec(model, draft, controller=controller, max_batch_size=6)
        out = spec.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos,
                            pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(out, ref), f"{draft_kind} {controller}"
    if draft_kind == "self":
        assert all(sum(r.accepted_per_pos) == r.num_draft_tokens for r in spec.records)  # raw acceptance
