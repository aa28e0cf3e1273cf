"""Speculative sampling preserves the target's (processed) distribution: chi-square tests that fail
if the residual distribution is wrong."""
import numpy as np
import pytest
import torch

from autospec import AutoSpec
from autospec.backends.sampling import SamplingConfig, verify_greedy, verify_sampling
from tests.backends.tiny_models import tiny_llama

CHI2_999 = {5: 20.52, 7: 24.32}    # chi-square 0.999 quantiles by degrees of freedom


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token with zero probability was produced"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


P = torch.tensor([0.05, 0.40, 0.05, 0.30, 0.10, 0.10])
Q = torch.tensor([0.50, 0.05, 0.30, 0.05, 0.05, 0.05])   # a draft that disagrees a lot
N = 100_000


def first_tokens(draft_probs, drafts, seed=0):
    """Token emitted at position 0 for N rows proposing one draft each."""
    g = torch.Generator().manual_seed(seed)
    target_probs = P.expand(N, 2, 6).contiguous()
    accepted, bonus = verify_sampling(target_probs, drafts[:, None], torch.ones(N, dtype=torch.long), draft_probs, g)
    return torch.where(accepted > 0, drafts, bonus)


def test_rejection_sampling_with_a_draft_model_yields_the_target_distribution():
    g = torch.Generator().manual_seed(1)
    drafts = torch.multinomial(Q, N, replacement=True, generator=g)
    tokens = first_tokens(Q.expand(N, 1, 6).contiguous(), drafts)
    stat = chi_square(np.bincount(tokens.numpy(), minlength=6), P.numpy())
    assert stat < CHI2_999[5]
    # the same test rejects the common mistake (resampling from p instead of the residual):
    accept = torch.minimum(torch.ones(6), P / Q)
    wrong = Q * accept + (1 - (Q * accept).sum()) * P
    expected_wrong_stat = N * float(((wrong - P) ** 2 / P).sum())
    assert expected_wrong_stat > 50 * CHI2_999[5]


def test_deterministic_proposals_are_one_hot_drafts():
    tokens = first_tokens(None, torch.full((N,), 3, dtype=torch.long))
    counts = np.bincount(tokens.numpy(), minlength=6)
    assert chi_square(counts, P.numpy()) < CHI2_999[5]


def test_greedy_verification_accepts_the_matching_prefix():
    logits = torch.tensor([[[0, 5, 0], [0, 0, 5], [5, 0, 0]]], dtype=torch.float)   # argmax 1, 2, 0
    accepted, bonus = verify_greedy(logits, torch.tensor([[1, 1]]), torch.tensor([2]))
    assert accepted.item() == 1 and bonus.item() == 2
    accepted, bonus = verify_greedy(logits, torch.tensor([[1, 2]]), torch.tensor([1]))     # 2nd draft not proposed
    assert accepted.item() == 1 and bonus.item() == 2


def test_top_k_top_p_temperature_follow_hf_semantics():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.10]]))
    assert torch.allclose(SamplingConfig(top_k=2).probabilities(logits), torch.tensor([[2 / 3, 1 / 3, 0, 0]]))
    assert torch.allclose(SamplingConfig(top_p=0.7).probabilities(logits), torch.tensor([[2 / 3, 1 / 3, 0, 0]]))
    hot = SamplingConfig(temperature=2.0).probabilities(logits)
    assert hot[0, 0] < 0.5 and torch.isclose(hot.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)


def exact_marginals(target, prompt, config: SamplingConfig):
    """P(t1), P(t2) of the target's own (processed) sampling, by enumerating t1."""
    vocab = target.config.vocab_size
    with torch.no_grad():
        p1 = config.probabilities(target(torch.tensor([prompt])).logits[0, -1])
        seqs = torch.tensor([prompt + [t] for t in range(vocab)])
        p2_given = config.probabilities(target(seqs).logits[:, -1])
    return p1.numpy(), (p1[:, None] * p2_given).sum(0).numpy()


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8)])
def test_generate_with_sampling_matches_the_targets_own_sampling(options):
    target, draft = tiny_llama(layers=2, seed=0, vocab=8, hidden=32), tiny_llama(layers=1, seed=5, vocab=8, hidden=32)
    prompt = [3, 1, 4, 1, 5]
    config = SamplingConfig(do_sample=True, **options)
    p1, p2 = exact_marginals(target, prompt, config)
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=256, seed=11)
    counts1, counts2 = np.zeros(8), np.zeros(8)
    for _ in range(8):
        ids = torch.tensor([prompt] * 256)
        out = spec.generate(ids, max_new_tokens=3, do_sample=True, eos_token_id=-1, pad_token_id=0, **options)
        counts1 += np.bincount(out[:, 5].numpy(), minlength=8)
        counts2 += np.bincount(out[:, 6].numpy(), minlength=8)
    accepted = sum(r.num_accepted_tokens for r in spec.records)
    assert 0 < accepted < sum(r.num_draft_tokens for r in spec.records)   # both accept and residual paths ran
    assert chi_square(counts1, p1) < CHI2_999[7]
    assert chi_square(counts2, p2) < CHI2_999[7]


FAMILY_SAMPLING = [
    ("mistral", None, {"sliding_window": 3}),              # every layer slides, window < prompt
    ("gemma2", "eager", {"sliding_window": 3}),            # eager attention, sliding and full layers mixed
    ("llama", "eager", {}),
]


@pytest.mark.parametrize("model_type, attn, window", FAMILY_SAMPLING, ids=[f[0] + "-" + str(f[1]) for f in FAMILY_SAMPLING])
def test_sampling_stays_lossless_on_windowed_and_eager_families(model_type, attn, window):
    from tests.backends.families import build
    target = build(model_type, attn, seed=0, vocab_size=8, **window)
    draft = build(model_type, attn, seed=5, vocab_size=8, num_hidden_layers=1, **window)
    prompt = [3, 1, 4, 1, 5, 7]
    config = SamplingConfig(do_sample=True, top_k=6)
    p1, p2 = exact_marginals(target, prompt, config)
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=256, seed=13)
    counts1, counts2 = np.zeros(8), np.zeros(8)
    for _ in range(8):
        out = spec.generate(torch.tensor([prompt] * 256), max_new_tokens=3, do_sample=True, top_k=6,
                            eos_token_id=-1, pad_token_id=0)
        counts1 += np.bincount(out[:, 6].numpy(), minlength=8)
        counts2 += np.bincount(out[:, 7].numpy(), minlength=8)
    accepted = sum(r.num_accepted_tokens for r in spec.records)
    assert 0 < accepted < sum(r.num_draft_tokens for r in spec.records)
    assert chi_square(counts1, p1) < CHI2_999[7]
    assert chi_square(counts2, p2) < CHI2_999[7]


def hf_warpers(**options):
    """transformers' own processor classes for the options (public API), in generate's order."""
    import transformers as t
    made = {"repetition_penalty": lambda v: t.RepetitionPenaltyLogitsProcessor(v), "top_p": t.TopPLogitsWarper,
            "min_p": lambda v: t.MinPLogitsWarper(min_p=v), "typical_p": lambda v: t.TypicalLogitsWarper(mass=v),
            "epsilon_cutoff": lambda v: t.EpsilonLogitsWarper(epsilon=v), "eta_cutoff": lambda v: t.EtaLogitsWarper(epsilon=v),
            "top_h": lambda v: t.TopHLogitsWarper(top_h=v)}
    order = ["repetition_penalty", "top_h", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"]
    return t.LogitsProcessorList([made[k](options[k]) for k in order if k in options])


def processed_marginals(target, prompt, processors):
    """P(t1), P(t2) of the target's own sampling through HF processors, by enumerating t1 (vocab 8)."""
    with torch.no_grad():
        ids1 = torch.tensor([prompt])
        p1 = torch.softmax(processors(ids1, target(ids1).logits[:, -1]), -1)[0]
        seqs = torch.tensor([prompt + [t] for t in range(8)])
        p2 = (p1[:, None] * torch.softmax(processors(seqs, target(seqs).logits[:, -1]), -1)).sum(0)
    return p1, p2


@pytest.mark.parametrize("options", [dict(repetition_penalty=1.8, top_p=0.85), dict(min_p=0.15), dict(typical_p=0.8),
                                     dict(epsilon_cutoff=0.06), dict(eta_cutoff=0.05), dict(top_h=0.4)],
                         ids=["repetition+top_p", "min_p", "typical_p", "epsilon", "eta", "top_h"])
def test_sampling_with_hf_processors_matches_the_targets_own_sampling(options):
    """HF processors on the verified positions (transformers' own classes give the exact marginals)."""
    target, draft = tiny_llama(layers=2, seed=0, vocab=8, hidden=32), tiny_llama(layers=1, seed=5, vocab=8, hidden=32)
    prompt = [3, 1, 4, 1, 5]
    p1, p2 = processed_marginals(target, prompt, hf_warpers(**options))
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=256, seed=17)
    counts1, counts2 = np.zeros(8), np.zeros(8)
    for _ in range(8):
        out = spec.generate(torch.tensor([prompt] * 256), max_new_tokens=3, do_sample=True, eos_token_id=-1,
                            pad_token_id=0, **options)
        counts1 += np.bincount(out[:, 5].numpy(), minlength=8)
        counts2 += np.bincount(out[:, 6].numpy(), minlength=8)
    accepted = sum(r.num_accepted_tokens for r in spec.records)
    assert 0 < accepted < sum(r.num_draft_tokens for r in spec.records)
    assert chi_square(counts1, p1.numpy()) < CHI2_999[7]
    assert chi_square(counts2, p2.numpy()) < CHI2_999[7]


def test_serve_samples_each_request_with_its_own_settings_beside_greedy_rows():
    """Per-request sampling settings in one batch: sampled rows follow the target's own processed
    distribution (chi-square), greedy rows beside them stay the target's greedy output."""
    target, draft = tiny_llama(layers=2, seed=0, vocab=8, hidden=32), tiny_llama(layers=1, seed=5, vocab=8, hidden=32)
    prompt = [3, 1, 4, 1, 5]
    options = dict(repetition_penalty=1.8, top_p=0.85)
    p1, p2 = processed_marginals(target, prompt, hf_warpers(**options))
    greedy = target.generate(torch.tensor([prompt]), max_new_tokens=3, do_sample=False, eos_token_id=-1, pad_token_id=0)[0, 5:].tolist()
    spec = AutoSpec(target, draft, controller="fixed:3", max_batch_size=256, seed=19)
    items = [{"prompt_ids": prompt, "do_sample": True, **options} if i % 4 else {"prompt_ids": prompt}
             for i in range(2048)]
    result = spec.serve(items, max_new_tokens=3, eos_token_id=-1, progress=False)
    assert result.error is None and not result.rejected
    sampled = [r.output_ids for r in result.results if r.request_id % 4]
    assert all(r.output_ids == greedy for r in result.results if r.request_id % 4 == 0)
    counts1 = np.bincount([o[0] for o in sampled], minlength=8)
    counts2 = np.bincount([o[1] for o in sampled], minlength=8)
    accepted = sum(r.num_accepted_tokens for r in spec.records)
    assert 0 < accepted < sum(r.num_draft_tokens for r in spec.records)
    assert chi_square(counts1, p1.numpy()) < CHI2_999[7]
    assert chi_square(counts2, p2.numpy()) < CHI2_999[7]
