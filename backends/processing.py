"""transformers' logits processors and stopping criteria, applied at every verified position.

Contract:
- A row's *view* is the sequence `target.generate` holds for it: the prompt as the caller gave it
  (left padding included, with its attention mask) followed by the tokens emitted so far. Position
  j of a verify block sees the view plus the row's first j drafts, exactly the prefix HF's own
  generate would hold when it picks that token, so processors that read the length (min_length,
  min_new_tokens, forced EOS, exponential decay) or the tokens (repetition penalty, n-grams, bad
  words) see what they see in HF.
- `Processing.scores(views, drafts, logits)` returns float32 scores [b, q, V] processed by HF's own
  processor list (built by `target._get_logits_processor` from the resolved generation config,
  user processors merged in HF's order, warpers included when sampling); positions past a row's
  drafts are left raw (verification never reads them). With `last_only` it processes one next
  position per row after all its drafts so far: the draft model draws each draft from the same
  processed scores (so a draft equal to the target is always accepted).
- `Processing.stop_after(views, emitted, new, scores)` gives, per row, None or how many of its new
  tokens to keep: the criteria (user criteria, stop strings, max_time) are asked after each token,
  as HF asks after every step; the first that says "done" ends the row there.
- Batched by sequence length: one call of the processor list (or criteria) per distinct
  (prompt width, length) among the (row, position) pairs, each on just those rows. A processor's
  per-row state built from the prompt or its mask (the repetition penalty's padding, the encoder
  repetition penalty's prompt) is rebuilt for each call's rows (~10 us). User processors must
  depend only on (input_ids, scores), as HF's own assisted decoding already requires of them (it
  calls them once per candidate position).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch


@dataclass
class View:
    """What HF holds for one row: the prompt as given (and its mask), then the emitted tokens."""
    prompt_ids: list[int]
    prompt_mask: list[int]

    def with_tokens(self, tokens: list[int]) -> list[int]:
        return self.prompt_ids + tokens


Build = Callable[[torch.Tensor, torch.Tensor], Any]   # (prompt ids [n, P], masks [n, P]) -> LogitsProcessorList


class Processing:
    def __init__(self, build_processors: Build | None, criteria: Any | None, device: torch.device):
        self.build_processors = build_processors
        self.criteria = criteria if criteria else None
        self.device = device

    @property
    def has_processors(self) -> bool:
        return self.build_processors is not None

    def scores(self, views: Sequence[View], emitted: Sequence[list[int]], drafts: list[list[int]],
               logits: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """logits [b, q, V] -> float32 scores [b, q, V], processed at each row's real positions; with
        `last_only`, logits [b, 1, V] are each row's next position after all its drafts (drafting)."""
        out = logits.float()                                                   # HF processes float32 copies
        if self.build_processors is None:
            return out
        out = out.clone()
        pairs = [(i, len(d)) for i, d in enumerate(drafts)] if last_only else \
            [(i, j) for i, d in enumerate(drafts) for j in range(len(d) + 1)]
        for _, rows, cols, ids in self._groups(views, emitted, drafts, pairs):
            prompts = torch.tensor([views[i].prompt_ids for i in rows], device=self.device)      # [n, P]
            masks = torch.tensor([views[i].prompt_mask for i in rows], device=self.device)       # [n, P]
            processors = self.build_processors(prompts, masks)
            cols = [0] * len(rows) if last_only else cols
            out[rows, cols] = processors(ids, out[rows, cols])
        return out

    def stop_after(self, views: Sequence[View], emitted: Sequence[list[int]], new: list[list[int]],
                   scores: torch.Tensor | None) -> list[int | None]:
        """Per row, None (no criterion fired) or how many of its `new` tokens to keep: the first k
        whose prefix (view + emitted + new[:k]) a criterion calls done."""
        stops: list[int | None] = [None] * len(new)
        if self.criteria is None:
            return stops
        pairs = [(i, k) for i, n in enumerate(new) for k in range(len(n))]      # new[i][k] was chosen at position k
        tails = [new[i][:k + 1] for i, k in pairs]
        for _, rows, cols, ids in self._groups(views, emitted, tails, pairs, per_pair=True):
            step_scores = scores[rows, cols] if scores is not None else None
            for i, k, done in zip(rows, cols, self.criteria(ids, step_scores).tolist()):
                if done and (stops[i] is None or k + 1 < stops[i]):
                    stops[i] = k + 1
        return stops

    def _groups(self, views: Sequence[View], emitted: Sequence[list[int]], tails: Sequence[list[int]],
                pairs: list[tuple[int, int]], per_pair: bool = False):
        """(prompt width, rows, positions, input_ids [n, L]) per distinct (width, length); `tails` is
        per row and cut at each pair's j (the drafts before position j), or with `per_pair` one per pair."""
        groups: dict[tuple[int, int], list[tuple[int, int, list[int]]]] = defaultdict(list)
        for n, (i, j) in enumerate(pairs):
            tail = tails[n] if per_pair else tails[i][:j]
            seq = views[i].with_tokens(emitted[i] + tail)
            groups[(len(views[i].prompt_ids), len(seq))].append((i, j, seq))
        for (width, _), members in groups.items():
            rows = [m[0] for m in members]
            cols = [m[1] for m in members]
            ids = torch.tensor([m[2] for m in members], dtype=torch.long, device=self.device)   # [n, L]
            yield width, rows, cols, ids
