"""Tiny random Llama-shaped models with grouped-query attention, and ragged left-padded batches."""
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(layers: int = 2, seed: int = 0, vocab: int = 97, hidden: int = 64, device: str = "cpu") -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval().to(device)


def ragged_batch(batch_size: int, vocab: int, seed: int = 0, min_len: int = 1, max_len: int = 12, device: str = "cpu"):
    """(input_ids [b, P], attention_mask [b, P]) left-padded, with repeated phrases (n-gram food)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(batch_size):
        phrase = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 4))]
        seq = (phrase * 5)[: rng.randint(min_len, max_len)]
        prompts.append(seq)
    width = max(len(p) for p in prompts)
    ids = torch.zeros(batch_size, width, dtype=torch.long)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


class CyclingController:
    """Chooses a different spec_len every step (a test double: public Controller protocol)."""
    name = "cycling"

    def __init__(self, max_spec_len: int = 8, seed: int = 0):
        self.rng = random.Random(seed)
        self.max_spec_len = max_spec_len
        self.chosen = []

    def choose(self, ctx):
        s = self.rng.randint(0, min(self.max_spec_len, ctx.max_spec_len))
        self.chosen.append(s)
        return s

    def observe(self, record):
        pass

    def scores(self, ctx):
        return {s: (float("nan"), float("nan")) for s in range(ctx.max_spec_len + 1)}


def mid_run_eos(reference: torch.Tensor, prompt_width: int) -> int:
    """A token that some rows produce midway through their greedy continuation (so they stop early)."""
    new = reference[:, prompt_width:]
    counts = {}
    for row in new.tolist():
        for t in set(row[2:-2]):
            counts[t] = counts.get(t, 0) + 1
    rows = new.shape[0]
    good = [t for t, c in counts.items() if 0 < c < rows] or list(counts)
    return max(good, key=lambda t: (counts[t], -t))


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]
