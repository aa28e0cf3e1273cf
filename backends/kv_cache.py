"""A KV cache for batched speculative decoding with ragged acceptance, usable by any HF causal LM.

Layout: per layer, keys/values buffers `[rows_capacity, kv_heads, slots_capacity, head_dim]`. Each
row owns its own slot space; all rows write a step's new tokens at the same slots (one shared
`cursor`). A slot either holds an accepted token of its row (`valid`) or is a hole (a rejected
draft, padding, or unused). Attention is permutation-invariant over keys (positions live in the
rotary embedding), so only the 4D mask and the per-row `position_ids` matter:

- `decode_inputs(q, num_pad)` -> (position_ids [b, q], mask [b, 1, q, cursor + q]): each fed token
  sees every valid slot of its row plus the new block causally; positions count accepted tokens
  only; a row's first `num_pad[i]` fed tokens are left padding, seen by nobody.
- `commit(keep [b, q])`: the fed tokens marked True become valid slots of their row, the rest holes.
- `prefill(rows, lengths)`: write new rows' prompts right-aligned below the cursor (or move the
  cursor up when a prompt is longer), each row attending to its own prompt only.
- `keep_rows(indices)`: retire rows by moving the kept ones to the front, in the given order.
- Holes are reclaimed by `compact()` (each row's valid slots moved to the front) when the cursor
  would run past the capacity; if that is not enough the buffers grow. `trim(longest)` compacts
  early when holes make up most of the attended width (every step attends over all `cursor`
  slots, so holes left by rejected drafts cost attention time until reclaimed); `longest` is a
  host-side upper bound on any row's valid slots, so no device sync is needed.

The model sees this as a `transformers.Cache`: each layer's `update` writes the region set by the
cache and returns only the slots in use (not the whole capacity).

Two layout options matter to attention kernels on accelerators: `kv_align` pads the attended
length up to a multiple (the padding slots are masked out), and `additive_mask` hands the model a
0 / -inf float mask in its dtype instead of a boolean one. Defaults: $AUTOSPEC_KV_ALIGN (1) and
$AUTOSPEC_ADDITIVE_MASK (0); neither changes results, only which kernels run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


DEFAULT_KV_ALIGN = int(os.environ.get("AUTOSPEC_KV_ALIGN", "1"))
DEFAULT_ADDITIVE_MASK = os.environ.get("AUTOSPEC_ADDITIVE_MASK", "0") == "1"


@dataclass
class _Region:
    rows: slice          # rows fed in this forward
    write_at: int        # first slot written
    read_from: int       # first slot returned to attention
    read_to: int = 0     # end of the slots returned (>= the written end when padded for alignment)


class SlotLayer(CacheLayerMixin):
    is_compileable = False

    def __init__(self, owner: "SlotCache"):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        o = self.owner
        shape = (o.rows_capacity, key_states.shape[1], o.slots_capacity)
        self.keys = key_states.new_zeros(*shape, key_states.shape[-1])
        self.values = value_states.new_zeros(*shape, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        r = self.owner.region
        end = r.write_at + key_states.shape[-2]
        self.keys[r.rows, :, r.write_at:end] = key_states       # [rows, heads, q, dim]
        self.values[r.rows, :, r.write_at:end] = value_states
        stop = max(end, r.read_to)
        return self.keys[r.rows, :, r.read_from:stop], self.values[r.rows, :, r.read_from:stop]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.cursor + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.cursor

    def get_max_length(self) -> int:
        return self.owner.slots_capacity

    def resize(self, rows: int, slots: int) -> None:
        """Grow the buffers, keeping their contents."""
        if not self.is_initialized:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(rows, old.shape[1], slots, old.shape[-1])
            new[: old.shape[0], :, : old.shape[2]] = old
            setattr(self, name, new)

    def reorder(self, order: torch.Tensor, count: int) -> None:
        """Rows `order` (a LongTensor) move to the front, in that order; rows already in place stay."""
        if not self.is_initialized or not count:
            return
        dst = (order != torch.arange(count, device=order.device)).nonzero().flatten()
        if len(dst):
            src = order[dst]
            self.keys[dst] = self.keys[src]
            self.values[dst] = self.values[src]

    def gather_slots(self, slot_order: torch.Tensor) -> None:
        """Per row, reorder slots by `slot_order` [rows, slots] (compaction)."""
        if not self.is_initialized:
            return
        n = slot_order.shape[0]
        index = slot_order[:, None, :, None]
        self.keys[:n] = self.keys[:n].gather(2, index.expand(-1, self.keys.shape[1], -1, self.keys.shape[-1]))
        self.values[:n] = self.values[:n].gather(2, index.expand(-1, self.values.shape[1], -1, self.values.shape[-1]))


class SlotCache(Cache):
    def __init__(self, num_layers: int, rows_capacity: int, slots_capacity: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32, kv_align: int = DEFAULT_KV_ALIGN,
                 additive_mask: bool = DEFAULT_ADDITIVE_MASK):
        self.kv_align, self.additive_mask, self.dtype = max(1, kv_align), additive_mask, dtype
        slots_capacity = -(-slots_capacity // self.kv_align) * self.kv_align
        self.rows_capacity, self.slots_capacity = rows_capacity, slots_capacity
        self.device = torch.device(device)
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])
        self.valid = torch.zeros(rows_capacity, slots_capacity, dtype=torch.bool, device=self.device)
        self.pos = torch.zeros(rows_capacity, dtype=torch.long, device=self.device)  # accepted tokens per row
        self.cursor = 0
        self.num_rows = 0
        self.region = _Region(slice(0, 0), 0, 0)

    # --- decoding -------------------------------------------------------------------------
    def decode_inputs(self, q: int, num_pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Make room for q new tokens per row; return (position_ids [b, q], mask [b, 1, q, cursor + q])."""
        self.reserve(q)
        b, c = self.num_rows, self.cursor
        width = self._aligned(c + q)
        steps = torch.arange(q, device=self.device)
        mask = torch.zeros(b, q, width, dtype=torch.bool, device=self.device)
        mask[:, :, :c] = self.valid[:b, None, :c]
        block = steps[:, None] >= steps[None, :]                                          # [q, q] causal
        if num_pad is None:
            position_ids = self.pos[:b, None] + steps[None, :]                            # [b, q]
            mask[:, :, c:c + q] = block
        else:
            position_ids = (self.pos[:b, None] + steps[None, :] - num_pad[:, None]).clamp(min=0)
            pad = steps[None, :] < num_pad[:, None]                                        # [b, q]
            mask[:, :, c:c + q] = (block[None] & ~pad[:, None, :]) | torch.eye(q, dtype=torch.bool, device=self.device)
        self.region = _Region(slice(0, b), c, 0, width)
        return position_ids, self._as_model_mask(mask[:, None])

    def _aligned(self, length: int) -> int:
        return min(self.slots_capacity, -(-length // self.kv_align) * self.kv_align)

    def _as_model_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Boolean [.., q, kv] -> the form the model is given (boolean, or additive 0 / -inf float)."""
        if not self.additive_mask:
            return mask
        return torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill_(~mask, torch.finfo(self.dtype).min)

    def commit(self, keep: torch.Tensor) -> None:
        """After a decode forward of q tokens: keep [b, q] says which fed tokens become valid slots."""
        b, q = keep.shape
        self.valid[:b, self.cursor:self.cursor + q] = keep
        self.pos[:b] += keep.sum(1)
        self.cursor += q

    # --- rows joining and leaving ---------------------------------------------------------
    def prefill_inputs(self, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New rows b..b+n-1 with these prompt lengths (fed left-padded to max(lengths)).

        Returns (position_ids [n, P], mask [n, 1, P, P], pad [n, P] True where padding)."""
        n, width = len(lengths), max(lengths)
        if self.num_rows + n > self.rows_capacity:
            raise ValueError(f"cannot add {n} rows: {self.num_rows} of {self.rows_capacity} in use")
        self.reserve(0, at_least=width)
        start = self.cursor - width if width <= self.cursor else 0
        lengths_t = torch.tensor(lengths, device=self.device)
        steps = torch.arange(width, device=self.device)
        pad = steps[None, :] < (width - lengths_t)[:, None]                                  # [n, P]
        position_ids = (steps[None, :] - (width - lengths_t)[:, None]).clamp(min=0)
        causal = steps[None, :, None] >= steps[None, None, :]
        mask = (causal & ~pad[:, None, :]) | torch.eye(width, dtype=torch.bool, device=self.device)[None]
        rows = slice(self.num_rows, self.num_rows + n)
        self.region = _Region(rows, start, start, start + width)
        self.valid[rows] = False
        self.valid[rows, start:start + width] = ~pad
        self.pos[rows] = lengths_t
        self.num_rows += n
        self.cursor = max(self.cursor, start + width)
        return position_ids, self._as_model_mask(mask[:, None]), pad

    def keep_rows(self, indices: list[int]) -> None:
        """Keep only these rows, moved to the front in this order (`fill_order` gives the order that
        moves the fewest rows)."""
        order = torch.tensor(indices, dtype=torch.long, device=self.device)
        n = len(indices)
        for layer in self.layers:
            layer.reorder(order, n)
        if n:
            self.valid[:n] = self.valid[order]
            self.pos[:n] = self.pos[order]
        self.valid[n:] = False
        self.num_rows = n
        if n == 0:
            self.cursor = 0

    @staticmethod
    def fill_order(keep: list[int]) -> list[int]:
        """The kept rows in an order that leaves rows already below len(keep) in place and fills
        each freed slot with a kept row from above it (so a retirement copies only the moved rows)."""
        n = len(keep)
        staying = set(i for i in keep if i < n)
        movers = iter(i for i in keep if i >= n)
        return [j if j in staying else next(movers) for j in range(n)]

    # --- room -----------------------------------------------------------------------------
    def reserve(self, q: int, at_least: int = 0) -> None:
        """Ensure cursor + q <= capacity (and capacity >= at_least): compact, then grow if needed."""
        if self.cursor + q <= self.slots_capacity and at_least <= self.slots_capacity:
            return
        self.compact()
        need = max(self.cursor + q, at_least)
        if need > self.slots_capacity:
            grown = max(need, int(self.slots_capacity * 1.5))
            self.grow(slots=-(-grown // self.kv_align) * self.kv_align)

    def trim(self, longest: int, slack: int = 64) -> bool:
        """Compact when the cursor runs more than max(slack, longest / 2) slots past `longest`."""
        if self.num_rows == 0 or self.cursor - longest < max(slack, longest // 2):
            return False
        self.compact()
        return True

    def compact(self) -> None:
        """Move each row's valid slots to the front (in their order); the cursor drops to the longest row."""
        b = self.num_rows
        if b == 0:
            self.cursor = 0
            return
        order = torch.argsort((~self.valid[:b]).to(torch.int8), dim=1, stable=True)       # [b, slots]
        for layer in self.layers:
            layer.gather_slots(order)
        counts = self.valid[:b].sum(1)
        self.valid[:b] = torch.arange(self.slots_capacity, device=self.device)[None, :] < counts[:, None]
        self.cursor = int(counts.max())

    def grow(self, slots: int | None = None, rows: int | None = None) -> None:
        rows = rows or self.rows_capacity
        slots = slots or self.slots_capacity
        for layer in self.layers:
            layer.resize(rows, slots)
        valid = torch.zeros(rows, slots, dtype=torch.bool, device=self.device)
        valid[: self.rows_capacity, : self.slots_capacity] = self.valid
        pos = torch.zeros(rows, dtype=torch.long, device=self.device)
        pos[: self.rows_capacity] = self.pos
        self.valid, self.pos = valid, pos
        self.rows_capacity, self.slots_capacity = rows, slots

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cursor
