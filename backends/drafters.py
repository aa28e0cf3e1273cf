"""Drafters: what proposes the speculative tokens, behind one small interface.

Contract (`Drafter`):
- `add_rows(sequences)` after the target admitted new rows (their prompts + first token);
  `keep_rows(indices)` when rows retire (same row order as the backend). A model drafter does no
  work for a row until a proposal includes it: `prepare(sequences)` (called by `propose` first, so
  the drafting step that needs it pays for it) prefills every row that joined since, in one
  batched forward, so a draft attached to a run that never speculates costs nothing.
- `propose(sequences, spec_len, caps)` -> `Drafts(tokens [b, w], num_drafts [b], probs)`: row i
  proposes at most `caps[i]` tokens (`caps` a host list); `w` is spec_len for a model drafter and
  the longest proposal for a deterministic one (0 when none found anything); `probs` [b, w, V] is
  the processed draft distribution when sampling with a model drafter, else None.
- `accept(accepted [b], accepted_host)` after verification: row i kept its first `accepted[i]`
  drafts (`accepted_host`: the same counts, already read by the step's one sync). A model
  drafter keeps its KV cache equal to the accepted text: rejected drafts become holes, and
  tokens it has not seen yet (the bonus, or everything emitted during spec_len = 0 steps) are fed
  at the start of its next proposal ("catch-up"), so its cache is never stale.
- No host reads: proposing and accepting stay on the device (a model drafter keeps a host mirror of
  how many tokens each row's cache holds), so the backend's step syncs once. The exception is a
  proposal shaped by HF logits processors, which see each draft on the host.

`ModelDrafter` wraps any HF causal LM with the target's vocabulary; `NgramDrafter` is prompt
lookup (no model): the continuation of the most recent earlier occurrence of the row's last n
tokens, n from `max_n` down to `min_n`. A short match is a weak predictor (on SmolLM2's own
greedy text a 1-gram match's first token was right 22% of the time, a 3-gram match's 77%, with
3.4 of 8 tokens accepted), so `max_tokens_by_match` caps how many tokens a match of each length
may propose (default: 1 for a 1-gram, 4 for a 2-gram, up to spec_len for longer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .attention import AttentionPlan, attention_plan
from .kv_cache import SlotCache
from .sampling import SamplingConfig, select_tokens
from .transfer import upload


@dataclass
class Drafts:
    tokens: torch.Tensor            # [b, spec_len] long (unused positions hold the row's last token)
    num_drafts: torch.Tensor        # [b] long
    probs: torch.Tensor | None      # [b, spec_len, V] float32, or None


# (each row's drafts so far, the next logits [b, 1, V]) -> the scores to draw the next draft from
Shape = Callable[[list[list[int]], torch.Tensor], torch.Tensor]


class Drafter(Protocol):
    name: str
    has_model: bool

    def add_rows(self, sequences: Sequence[Sequence[int]]) -> None: ...

    def keep_rows(self, indices: list[int]) -> None: ...

    def propose(self, sequences: Sequence[Sequence[int]], spec_len: int, caps: Sequence[int],
                shape: Shape | None = None) -> Drafts: ...

    def accept(self, accepted: torch.Tensor, accepted_host: Sequence[int]) -> None: ...


def forward_kwargs(model: torch.nn.Module) -> str:
    """The keyword a model's forward takes its cache by ('cache' since transformers 5.2x, else
    'past_key_values')."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def model_forward(model: torch.nn.Module, cache: SlotCache, ids: torch.Tensor, position_ids: torch.Tensor,
                  mask: torch.Tensor | dict, cache_kw: str, logits_to_keep: int) -> torch.Tensor:
    """One forward over the cache region; returns logits [b, logits_to_keep, V].

    Fewer logits than positions are asked for by index, so the head reads a contiguous copy: the
    strided slice an int gives sends CPU bf16 matmuls down a path ~100x slower at batch 16. A model
    whose forward takes no `position_ids` derives them from the cache layout (see `SlotCache`)."""
    width = ids.shape[1]
    keep = logits_to_keep if logits_to_keep >= width else torch.arange(width - logits_to_keep, width, device=ids.device)
    kwargs = {cache_kw: cache}
    if cache.plan.takes_position_ids:
        kwargs["position_ids"] = position_ids
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=keep, **kwargs)
    return out.logits


def left_padded(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Ragged rows -> [n, max len] ids, each row padded on the left with its own first token."""
    width = max(len(r) for r in rows)
    return upload([[r[0]] * (width - len(r)) + list(r) for r in rows], device)


class NgramDrafter:
    """Prompt lookup: propose the tokens that followed the last earlier match of the row's suffix."""

    has_model = False

    def __init__(self, max_n: int = 3, min_n: int = 1, device: str | torch.device = "cpu",
                 max_tokens_by_match: dict[int, int] | None = None):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"ngram sizes must satisfy 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n, self.min_n = max_n, min_n
        self.max_tokens_by_match = {1: 1, 2: 4} if max_tokens_by_match is None else dict(max_tokens_by_match)
        self.device = torch.device(device)
        self.name = "ngram"

    def add_rows(self, sequences: Sequence[Sequence[int]]) -> None:
        return None

    def keep_rows(self, indices: list[int]) -> None:
        return None

    def accept(self, accepted: torch.Tensor, accepted_host: Sequence[int]) -> None:
        return None

    def propose(self, sequences: Sequence[Sequence[int]], spec_len: int, caps: Sequence[int],
                shape: Shape | None = None) -> Drafts:
        """Prompt lookup (`shape` is not used: the proposals come from the text, not from logits);
        tokens [b, longest proposal], each row padded with its last token."""
        found = [self.lookup(np.asarray(seq, dtype=np.int64), min(spec_len, cap)).tolist()
                 for seq, cap in zip(sequences, caps)]
        width = max((len(f) for f in found), default=0)
        tokens = [f + [seq[-1]] * (width - len(f)) for f, seq in zip(found, sequences)]
        return Drafts(upload(tokens, self.device), upload([len(f) for f in found], self.device), None)   # [b, w], [b]

    def lookup(self, seq: np.ndarray, k: int) -> np.ndarray:
        """Up to k tokens following the most recent earlier occurrence of seq's last n tokens."""
        if k <= 0:
            return seq[:0]
        for n in range(min(self.max_n, len(seq) - 1), self.min_n - 1, -1):
            suffix = seq[-n:]
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)    # [L - n, n], not the suffix itself
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if len(hits):
                start = hits[-1] + n
                return seq[start:start + min(k, self.max_tokens_by_match.get(n, k))]
        return seq[:0]


class ModelDrafter:
    """A small HF causal LM with its own ragged KV cache in the same row order as the target's."""

    has_model = True

    def __init__(self, model: torch.nn.Module, sampling: SamplingConfig, rows_capacity: int, slots_capacity: int,
                 generator: torch.Generator | None = None, plan: AttentionPlan | None = None):
        self.model = model
        self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.sampling = sampling
        self.generator = generator
        self.device = next(model.parameters()).device
        self.cache = SlotCache(0, rows_capacity, slots_capacity, self.device,
                               dtype=next(model.parameters()).dtype, plan=plan or attention_plan(model))
        self.cache_kw = forward_kwargs(model)
        self._fed_slots: list[int] = []   # cache slots holding the drafts fed in the last proposal
        self._pending: list[bool] = []    # per row: joined but not prefilled yet
        self._seen: list[int] = []        # per row: tokens its cache holds (a host mirror of cache.pos)

    def add_rows(self, sequences: Sequence[Sequence[int]]) -> None:
        """New rows join empty: nothing runs until the first proposal that includes them (`prepare`)."""
        if min(len(seq) for seq in sequences) < 2:
            raise ValueError("a draft row needs at least one prompt token")
        self.cache.add_rows(len(sequences))
        self._pending.extend([True] * len(sequences))
        self._seen.extend([0] * len(sequences))

    def keep_rows(self, indices: list[int]) -> None:
        self.cache.keep_rows(indices)
        self._pending = [self._pending[i] for i in indices]
        self._seen = [self._seen[i] for i in indices]

    def prepare(self, sequences: Sequence[Sequence[int]]) -> None:
        """Prefill the rows that joined since the last proposal, together in one forward: each
        sequence so far but its last token (a row that never drafts never costs a draft forward)."""
        rows = [i for i, pending in enumerate(self._pending) if pending]
        if not rows:
            return
        prompts = [list(sequences[i][:-1]) for i in rows]
        ids = left_padded(prompts, self.device)                                  # [n, P]
        position_ids, mask, _ = self.cache.prefill_inputs([len(p) for p in prompts], rows=rows)
        model_forward(self.model, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=1)
        for i, prompt in zip(rows, prompts):
            self._pending[i] = False
            self._seen[i] = len(prompt)

    def propose(self, sequences: Sequence[Sequence[int]], spec_len: int, caps: Sequence[int],
                shape: Shape | None = None) -> Drafts:
        """Draft spec_len tokens per row, no host read; with `shape` (the target's logits processors),
        each draft is drawn from the processed draft distribution (one host copy of the drafts per
        draft step)."""
        self.prepare(sequences)                                               # the rows that joined since the last proposal
        self.cache.trim(max(len(seq) for seq in sequences))                   # before any draft slot is recorded
        first = self._catch_up(sequences)                                     # [b, V] logits
        tokens, probs = [], []
        logits = first
        self._fed_slots = []
        so_far: list[list[int]] = [[] for _ in sequences]
        for j in range(spec_len):
            if shape is not None:
                logits = shape(so_far, logits[:, None])[:, 0]                  # [b, V] processed scores
            token, p = select_tokens(logits, self.sampling, self.generator)   # [b], [b, V] | None
            if shape is not None:
                so_far = [row + [t] for row, t in zip(so_far, token.tolist())]
            tokens.append(token)
            probs.append(p)
            if j + 1 < spec_len:
                logits = self._feed_one(token)
        drafts = torch.stack(tokens, dim=1)                                   # [b, spec_len]
        stacked = torch.stack(probs, dim=1) if self.sampling.do_sample else None
        return Drafts(drafts, upload([min(c, spec_len) for c in caps], self.device), stacked)

    def _catch_up(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Feed every row's tokens the draft has not seen (>= 1 each) as one ragged block; -> each
        row's last logits [b, V]."""
        ids, num_real = self.cache.pack([list(seq[n:]) for seq, n in zip(sequences, self._seen)])   # [b, w], [b]
        width = ids.shape[1]
        position_ids, mask = self.cache.decode_inputs(width, num_real)
        keep = width if self.cache.pads_right else 1
        logits = model_forward(self.model, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=keep)
        self.cache.commit(self.cache.real_tokens(num_real, width))
        self._seen = [len(seq) for seq in sequences]
        if self.cache.pads_right:
            return logits[torch.arange(ids.shape[0], device=self.device), num_real - 1]
        return logits[:, -1]

    def _feed_one(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one draft per row (kept optimistically; `accept` punches holes) -> logits [b, V]."""
        position_ids, mask = self.cache.decode_inputs(1)
        self._fed_slots.append(self.cache.cursor)
        logits = model_forward(self.model, self.cache, token[:, None], position_ids, mask, self.cache_kw, 1)
        self.cache.commit(torch.ones(token.shape[0], 1, dtype=torch.bool, device=self.device))
        self._seen = [n + 1 for n in self._seen]
        return logits[:, -1]

    def accept(self, accepted: torch.Tensor, accepted_host: Sequence[int]) -> None:
        """Drafts fed beyond each row's accepted count become holes (on the device; the host
        mirror of the rows' lengths follows from `accepted_host`)."""
        fed = len(self._fed_slots)
        if not fed:
            return
        b = self.cache.num_rows
        slots = upload(self._fed_slots, self.device)                                         # [s - 1]
        rejected = torch.arange(fed, device=self.device)[None, :] >= accepted[:b, None]     # [b, s-1]
        self.cache.valid[:b, slots] &= ~rejected
        self.cache.pos[:b] -= rejected.sum(1)
        self._seen = [n - fed + min(a, fed) for n, a in zip(self._seen, accepted_host)]
        self._fed_slots = []
