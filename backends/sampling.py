"""Token selection and verification for speculative decoding.

Contract:
- `SamplingConfig` is validated on construction; `probabilities(logits)` applies temperature, then
  top-k, then top-p (HF's order and semantics: top-p keeps the smallest set whose probability
  reaches p, at least one token) and returns float32 probabilities. Draft and target go through
  the same function, so the rejection sampler preserves the processed target distribution.
- `verify_greedy`: a draft is accepted while it equals the target's argmax at its position; the
  bonus token is the target's argmax after the last accepted draft. Output = target greedy.
- `verify_sampling`: draft j is accepted with probability min(1, p(d)/q(d)) (q one-hot when the
  drafter is deterministic, e.g. n-gram); at the first rejection the token is drawn from the
  normalised residual max(0, p - q); if every proposed draft is accepted the bonus is drawn
  from p. Output tokens are distributed exactly as sampling the target alone.
- Rows may propose fewer drafts than the block holds (`num_drafts`); missing drafts are never
  accepted and cost no rejection (the bonus is then drawn from p).
- Neither verifier reads the device (no `.item()`, `bool()` or `.tolist()`): the step's one host
  read comes after them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., V] logits -> [..., V] float32 probabilities after temperature, top-k and top-p."""
        scores = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            scores = _top_p(scores, self.top_p)
        return torch.softmax(scores, dim=-1)


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """HF's TopPLogitsWarper: drop the tokens whose ascending cumulative probability is <= 1 - top_p."""
    sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1.0 - top_p)
    remove_sorted[..., -1:] = False                       # keep at least one token
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...] argmax, taken in float32 as HF's generate does (exact for bf16 input, and
    ~4x faster than a bf16 argmax on CPU)."""
    return logits.float().argmax(dim=-1)


def select_tokens(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[b, V] logits -> (tokens [b], probabilities [b, V] or None when greedy)."""
    if not config.do_sample:
        return greedy_tokens(logits), None
    probs = config.probabilities(logits)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1), probs


def _draft_mask(drafts: torch.Tensor, num_drafts: torch.Tensor) -> torch.Tensor:
    """[b, s] True where a row really proposed a draft."""
    return torch.arange(drafts.shape[1], device=drafts.device)[None, :] < num_drafts[:, None]


def _leading(ok: torch.Tensor) -> torch.Tensor:
    """[b, s] bool -> [b] length of the all-True prefix."""
    return ok.to(torch.int64).cumprod(dim=1).sum(dim=1)


def verify_greedy(target_logits: torch.Tensor, drafts: torch.Tensor, num_drafts: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """target_logits [b, s+1, V], drafts [b, s], num_drafts [b] -> (accepted [b], bonus tokens [b])."""
    best = greedy_tokens(target_logits)                                          # [b, s+1]
    s = drafts.shape[1]
    accepted = _leading((drafts == best[:, :s]) & _draft_mask(drafts, num_drafts))
    return accepted, best.gather(1, accepted[:, None]).squeeze(1)


def verify_sampling(target_probs: torch.Tensor, drafts: torch.Tensor, num_drafts: torch.Tensor,
                    draft_probs: torch.Tensor | None, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection sampling. target_probs [b, s+1, V]; drafts [b, s]; draft_probs [b, s, V] or None
    (one-hot proposals) -> (accepted [b], bonus tokens [b])."""
    b, s = drafts.shape
    p_draft = target_probs[:, :s].gather(2, drafts[..., None]).squeeze(-1)       # [b, s] p(d)
    q_draft = torch.ones_like(p_draft) if draft_probs is None else draft_probs.gather(2, drafts[..., None]).squeeze(-1)
    u = torch.rand(b, s, generator=generator, device=drafts.device)
    accepted = _leading((u * q_draft < p_draft) & _draft_mask(drafts, num_drafts))
    rows = torch.arange(b, device=drafts.device)
    p_next = target_probs[rows, accepted]                                         # [b, V]
    rejected = accepted < num_drafts
    if s > 0:                                          # no host read: rows not rejected keep p_next
        at = accepted.clamp(max=s - 1)
        if draft_probs is None:
            q_next = torch.zeros_like(p_next).scatter_(1, drafts[rows, at][:, None], 1.0)
        else:
            q_next = draft_probs[rows, at]
        residual = (p_next - q_next).clamp(min=0.0)
        norm = residual.sum(dim=1, keepdim=True)
        residual = torch.where(norm > 0, residual / norm.clamp(min=1e-30), p_next)
        p_next = torch.where(rejected[:, None], residual, p_next)
    return accepted, torch.multinomial(p_next, 1, generator=generator).squeeze(-1)
