"""A KV cache for batched speculative decoding with ragged acceptance, usable by any HF causal LM.

Layout: per layer, keys/values buffers `[rows_capacity, kv_heads, slots_capacity, head_dim]`. Each
row owns its own slot space; all rows write a step's new tokens at the same slots (one shared
`cursor`). A slot either holds an accepted token of its row (`valid`) or is a hole (a rejected
draft, padding, or unused). Attention is permutation-invariant over keys (positions live in the
rotary embedding), so only the 4D mask and the per-row `position_ids` matter:

- `decode_inputs(q, num_real)` -> (position_ids [b, q], mask): each fed token sees the valid slots
  of its row that its layer kind allows (transformers' rule for full / sliding / chunked
  attention, on the real positions kept per slot in `slot_pos`) plus the new block causally;
  positions count accepted tokens only; a row's fed tokens beyond its `num_real[i]` are padding,
  seen by nobody (`pack` lays a ragged block out, padding on the side the layout needs).
- `commit(keep [b, q])`: the fed tokens marked True become valid slots of their row, the rest holes.
- `prefill_inputs(lengths)`: write new rows' prompts right-aligned below the cursor (or move the
  cursor up when a prompt is longer), each row attending to its own prompt only; with `rows=`,
  into rows that joined empty (`add_rows`), for a drafter that prefills only when it drafts.
- `keep_rows(indices)`: retire rows by moving the kept ones to the front, in the given order;
  `tiled(n)`: a new cache of n copies of row 0 (timing caches).
- Holes are reclaimed by `compact()` (each row's valid slots moved to the front) when the cursor
  would run past the capacity; if that is not enough the buffers grow. `trim(longest)` compacts
  early when the holes past the longest row pass a slack (every step attends over all `cursor`
  slots, so holes left by rejected drafts cost attention time until reclaimed); `longest` is a
  host-side upper bound on any row's valid slots, so no device sync is needed.

No method reads the device but a compaction forced by `reserve` (the cursor would pass the
capacity), which reads the longest row's length once; host values reach the device by `upload`
(non-blocking on CUDA), so a decode step's cache work never waits on the device.

The model sees this as a `transformers.Cache`: each layer's `update` writes the region set by the
cache and returns only the slots in use (not the whole capacity).

The mask's form and kind come from the model's `AttentionPlan` (`backends.attention`): boolean for
sdpa, additive 0 / finfo.min for eager, one tensor or a dict keyed by layer kind. A model that derives positions from slots (`plan.positions_from_slots`: no `position_ids`,
ALiBi from a 2D mask, slot-indexed local windows) gets HF's own layout instead: before every
forward each row's valid slots are moved right, to end at the cursor (`align_right`), blocks are
padded on the right and prefills on the left, and the model gets a 2D mask of valid slots, so
slot distances equal real position distances.

Two layout options matter to attention kernels on accelerators: `kv_align` pads the attended
length up to a multiple (the padding slots are masked out), and `additive_mask` hands the model a
0 / -inf float mask in its dtype instead of a boolean one. Defaults: $AUTOSPEC_KV_ALIGN (1) and
$AUTOSPEC_ADDITIVE_MASK (0); for sdpa neither changes results, only which kernels run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .attention import CAUSAL_KINDS, FULL_BOOL, AttentionPlan, as_model_mask, visible
from .transfer import upload


DEFAULT_KV_ALIGN = int(os.environ.get("AUTOSPEC_KV_ALIGN", "1"))
DEFAULT_ADDITIVE_MASK = os.environ.get("AUTOSPEC_ADDITIVE_MASK", "0") == "1"


@dataclass
class _Region:
    rows: slice | torch.Tensor   # rows fed in this forward (a LongTensor: given rows, for a lazy prefill)
    write_at: int        # first slot written
    read_from: int       # first slot returned to attention
    read_to: int = 0     # end of the slots returned (>= the written end when padded for alignment)


class SlotLayer(CacheLayerMixin):
    """One layer's slot buffers: keys and values [rows, heads, slots, dim], and, for sparse-attention
    models whose indexer keeps its own keys (`update_indexer`), indexer keys [rows, 1, slots, dim]."""
    is_compileable = False

    def __init__(self, owner: "SlotCache"):
        super().__init__()
        self.owner = owner
        self.buffers: list[str] = []

    def _allocate(self, name: str, like: torch.Tensor) -> None:
        o = self.owner
        setattr(self, name, like.new_zeros(o.rows_capacity, like.shape[1], o.slots_capacity, like.shape[-1]))
        self.buffers.append(name)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._allocate("keys", key_states)
        self._allocate("values", value_states)
        self.is_initialized = True

    def _write_read(self, name: str, states: torch.Tensor) -> torch.Tensor:
        """Write this forward's states [rows, heads, q, dim] into the region; return the slots in use."""
        r = self.owner.region
        buf = getattr(self, name)
        end = r.write_at + states.shape[-2]
        buf[r.rows, :, r.write_at:end] = states
        return buf[r.rows, :, r.read_from:max(end, r.read_to)]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._write_read("keys", key_states), self._write_read("values", value_states)

    def update_indexer(self, indexer_key_states: torch.Tensor) -> torch.Tensor:
        """Sparse-attention indexer keys [rows, q, dim] -> every slot in use [rows, kv, dim]."""
        states = indexer_key_states[:, None]
        if "indexer_keys" not in self.buffers:
            self._allocate("indexer_keys", states)
        return self._write_read("indexer_keys", states)[:, 0]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.region.write_at + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.region.write_at

    def get_max_length(self) -> int:
        return self.owner.slots_capacity

    def resize(self, rows: int, slots: int) -> None:
        """Grow the buffers, keeping their contents."""
        for name in self.buffers:
            old = getattr(self, name)
            new = old.new_zeros(rows, old.shape[1], slots, old.shape[-1])
            new[: old.shape[0], :, : old.shape[2]] = old
            setattr(self, name, new)

    def reorder(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Rows `src` move to rows `dst` (LongTensors [m], m > 0; rows not named stay)."""
        for name in self.buffers:
            buf = getattr(self, name)
            buf[dst] = buf[src]

    def gather_slots(self, slot_order: torch.Tensor) -> None:
        """Per row, reorder the first w slots by `slot_order` [rows, w] (compaction, alignment): one
        `index_select` of whole (heads, dim) slices per buffer, ~4x faster on CPU than a `gather`
        over an expanded [rows, heads, w, dim] index."""
        n, w = slot_order.shape
        for name in self.buffers:
            buf = getattr(self, name)                                            # [R, H, S, D]
            flat = (slot_order + torch.arange(n, device=buf.device)[:, None] * w).flatten()   # [n * w]
            slots = buf[:n, :, :w].transpose(1, 2).reshape(n * w, buf.shape[1], buf.shape[-1])  # [n * w, H, D]
            buf[:n, :, :w] = slots.index_select(0, flat).view(n, w, buf.shape[1], buf.shape[-1]).transpose(1, 2)


class SlotCache(Cache):
    def __init__(self, num_layers: int, rows_capacity: int, slots_capacity: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32, kv_align: int = DEFAULT_KV_ALIGN,
                 additive_mask: bool = DEFAULT_ADDITIVE_MASK, plan: AttentionPlan = FULL_BOOL):
        self.plan = replace(plan, mask_form="additive") if additive_mask and plan.mask_form == "bool" else plan
        self.kinds = plan.distinct_kinds                             # the masks each forward needs
        self.kv_align, self.dtype = 1 if plan.positions_from_slots else max(1, kv_align), dtype
        slots_capacity = -(-slots_capacity // self.kv_align) * self.kv_align
        self.rows_capacity, self.slots_capacity = rows_capacity, slots_capacity
        self.device = torch.device(device)
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])
        self.layer_class_to_replicate = lambda: SlotLayer(self)     # layers beyond num_layers appear on first use
        self.valid = torch.zeros(rows_capacity, slots_capacity, dtype=torch.bool, device=self.device)
        self.slot_pos = torch.zeros(rows_capacity, slots_capacity, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(rows_capacity, dtype=torch.long, device=self.device)  # accepted tokens per row
        self.cursor = 0
        self.num_rows = 0
        self.region = _Region(slice(0, 0), 0, 0)

    @property
    def pads_right(self) -> bool:
        """Whether ragged decode blocks are padded on the right (HF's layout) instead of the left."""
        return self.plan.positions_from_slots

    # --- decoding -------------------------------------------------------------------------
    def pack(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ragged token rows -> (ids [b, w] padded on this layout's side, num_real [b])."""
        width = max(len(r) for r in rows)
        pad = [[r[-1]] * (width - len(r)) for r in rows]
        ids = [r + p if self.pads_right else p + r for r, p in zip(rows, pad)]
        return upload(ids, self.device), upload([len(r) for r in rows], self.device)

    def real_tokens(self, num_real: torch.Tensor, width: int) -> torch.Tensor:
        """[b] real tokens per row -> [b, w] True where a fed token is real (not padding)."""
        steps = torch.arange(width, device=self.device)[None, :]
        return steps < num_real[:, None] if self.pads_right else steps >= (width - num_real)[:, None]

    def decode_inputs(self, q: int, num_real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Make room for q new tokens per row; return (position_ids [b, q], the model's mask)."""
        self.reserve(q)
        if self.pads_right:
            self.align_right()
        b, c = self.num_rows, self.cursor
        steps = torch.arange(q, device=self.device)
        if num_real is None:
            real, position_ids = None, self.pos[:b, None] + steps[None, :]                   # [b, q]
        else:
            real = self.real_tokens(num_real, q)                                            # [b, q]
            offset = 0 if self.pads_right else (q - num_real)[:, None]
            position_ids = (self.pos[:b, None] + steps[None, :] - offset).clamp(min=0)
        self.slot_pos[:b, c:c + q] = position_ids
        width = self._aligned(c + q)
        self.region = _Region(slice(0, b), c, 0, width)
        if self.pads_right:
            return position_ids, self._mask_2d(b, c, q, real)
        return position_ids, self._mask_4d(b, c, q, width, position_ids, real)

    def _mask_2d(self, b: int, c: int, q: int, real: torch.Tensor | None) -> torch.Tensor:
        """[b, c + q] long: 1 on the valid slots and the real fed tokens (HF builds the rest)."""
        mask = torch.ones(b, c + q, dtype=torch.long, device=self.device)
        mask[:, :c] = self.valid[:b, :c]
        if real is not None:
            mask[:, c:] = real
        return mask

    def _mask_4d(self, b: int, c: int, q: int, width: int, position_ids: torch.Tensor,
                 real: torch.Tensor | None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Per layer kind, [b, 1, q, width]: who each fed token may attend to, in the model's form."""
        masks = {}
        for kind in self.kinds:
            seen = self._causal(b, c, q, width, real) if kind in CAUSAL_KINDS else \
                self._windowed(kind, b, c, q, width, position_ids, real)
            masks[kind] = as_model_mask(seen[:, None], self.plan.mask_form, self.dtype)
        return masks if self.plan.keyed else masks[self.kinds[0]]

    def _causal(self, b: int, c: int, q: int, width: int, real: torch.Tensor | None) -> torch.Tensor:
        """[b, q, width] every valid slot of the row (all earlier), the block causally; padding sees itself."""
        mask = torch.zeros(b, q, width, dtype=torch.bool, device=self.device)
        mask[:, :, :c] = self.valid[:b, None, :c]
        block = torch.ones(q, q, dtype=torch.bool, device=self.device).tril()                 # [q, q]
        if real is None:
            mask[:, :, c:c + q] = block
        else:
            mask[:, :, c:c + q] = (block[None] & real[:, None, :]) | torch.eye(q, dtype=torch.bool, device=self.device)
        return mask

    def _windowed(self, kind: str, b: int, c: int, q: int, width: int, position_ids: torch.Tensor,
                  real: torch.Tensor | None) -> torch.Tensor:
        """[b, q, width] the valid slots (and real fed tokens) that the kind's rule shows, by position."""
        kv_valid = torch.zeros(b, width, dtype=torch.bool, device=self.device)
        kv_valid[:, :c] = self.valid[:b, :c]
        kv_valid[:, c:c + q] = True if real is None else real
        seen = kv_valid[:, None, :] & visible(self.plan, kind, position_ids, self.slot_pos[:b, :width])
        seen[:, :, c:c + q] |= torch.eye(q, dtype=torch.bool, device=self.device)            # padding sees itself
        return seen

    def _aligned(self, length: int) -> int:
        return min(self.slots_capacity, -(-length // self.kv_align) * self.kv_align)

    def commit(self, keep: torch.Tensor) -> None:
        """After a decode forward of q tokens: keep [b, q] says which fed tokens become valid slots."""
        b, q = keep.shape
        self.valid[:b, self.cursor:self.cursor + q] = keep
        self.pos[:b] += keep.sum(1)
        self.cursor += q

    # --- rows joining and leaving ---------------------------------------------------------
    def add_rows(self, n: int) -> None:
        """Rows num_rows..num_rows+n-1 join empty (no slots, position 0): filled later by
        `prefill_inputs(lengths, rows=...)` (a drafter that prefills lazily)."""
        if self.num_rows + n > self.rows_capacity:
            raise ValueError(f"cannot add {n} rows: {self.num_rows} of {self.rows_capacity} in use")
        rows = slice(self.num_rows, self.num_rows + n)
        self.valid[rows] = False
        self.pos[rows] = 0
        self.num_rows += n

    def prefill_inputs(self, lengths: list[int], rows: list[int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New rows b..b+n-1 (or the given empty rows, `add_rows`) with these prompt lengths, fed
        left-padded to max(lengths); the forward that follows runs over those rows only.

        Returns (position_ids [n, P], the model's mask, pad [n, P] True where padding)."""
        n, width = len(lengths), max(lengths)
        if rows is None and self.num_rows + n > self.rows_capacity:
            raise ValueError(f"cannot add {n} rows: {self.num_rows} of {self.rows_capacity} in use")
        self.reserve(width if self.pads_right else 0, at_least=width)
        start = self.cursor if self.pads_right else (self.cursor - width if width <= self.cursor else 0)
        lengths_t = upload(lengths, self.device)
        steps = torch.arange(width, device=self.device)
        pad = steps[None, :] < (width - lengths_t)[:, None]                                  # [n, P]
        position_ids = (steps[None, :] - (width - lengths_t)[:, None]).clamp(min=0)
        index: slice | torch.Tensor = slice(self.num_rows, self.num_rows + n) if rows is None else \
            upload(rows, self.device)
        self.region = _Region(index, start, 0 if self.pads_right else start, start + width)
        self.valid[index] = False
        self.valid[index, start:start + width] = ~pad
        self.slot_pos[index, start:start + width] = position_ids
        self.pos[index] = lengths_t
        self.num_rows += n if rows is None else 0
        self.cursor = max(self.cursor, start + width)
        if self.pads_right:
            return position_ids, self.valid[index, :start + width].long(), pad
        return position_ids, self._prefill_mask(position_ids, pad), pad

    def _prefill_mask(self, position_ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Per layer kind, [n, 1, P, P]: each prompt token sees its own row's earlier real tokens."""
        width = pad.shape[1]
        eye = torch.eye(width, dtype=torch.bool, device=self.device)[None]
        masks = {kind: as_model_mask(((~pad[:, None, :] & visible(self.plan, kind, position_ids, position_ids)) | eye)[:, None],
                                     self.plan.mask_form, self.dtype) for kind in self.kinds}
        return masks if self.plan.keyed else masks[self.kinds[0]]

    def keep_rows(self, indices: list[int]) -> None:
        """Keep only these rows, moved to the front in this order (`fill_order` gives the order that
        moves the fewest rows); the rows that move are known on the host, so nothing is read."""
        n = len(indices)
        moved = [(j, i) for j, i in enumerate(indices) if i != j]
        if moved:
            dst = upload([j for j, _ in moved], self.device)                  # [m]
            src = upload([i for _, i in moved], self.device)                  # [m]
            for layer in self.layers:
                layer.reorder(dst, src)
            for t in (self.valid, self.slot_pos, self.pos):
                t[dst] = t[src]
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

    def trim(self, longest: int, slack: int = 16) -> bool:
        """Compact when the cursor runs more than max(slack, longest / 8) slots past `longest`: every
        step attends over them (SmolLM2 at batch 8: ~0.02 ms per slot per step) while a compaction
        costs a few milliseconds (~3 ms at batch 8 over 160 slots), so ~16 holes is where they break even."""
        if self.num_rows == 0 or self.cursor - longest < max(slack, longest // 8):
            return False
        self.compact(longest)
        return True

    def compact(self, longest: int | None = None) -> None:
        """Move each row's valid slots to the front (in their order); the cursor drops to the longest
        row, or to `longest` (a host upper bound on it: no device read) when given."""
        b = self.num_rows
        if b == 0:
            self.cursor = 0
            return
        c = self.cursor                                          # slots at or beyond the cursor hold nothing
        order = torch.argsort((~self.valid[:b, :c]).to(torch.int8), dim=1, stable=True)   # [b, c]
        self._gather(order)
        counts = self.valid[:b, :c].sum(1)
        self.valid[:b, :c] = torch.arange(c, device=self.device)[None, :] < counts[:, None]
        self.cursor = min(c, longest) if longest is not None else int(counts.max())

    def align_right(self) -> None:
        """Move each row's valid slots (in their order) to end at the cursor, holes to the left:
        HF's left-padded layout, where slot distances are real position distances."""
        b, c = self.num_rows, self.cursor
        if b == 0 or c == 0:
            return
        order = torch.argsort(self.valid[:b, :c].to(torch.int8), dim=1, stable=True)      # [b, c] holes first
        self._gather(order)
        counts = self.valid[:b, :c].sum(1)
        self.valid[:b, :c] = torch.arange(c, device=self.device)[None, :] >= (c - counts)[:, None]

    def tiled(self, n: int) -> "SlotCache":
        """A new cache of `n` rows, each a copy of this cache's row 0 (its slots, positions and every
        layer's buffers): one prefill serves a timing cache of any batch size (`backends.timing`)."""
        out = SlotCache(0, n, self.slots_capacity, self.device, self.dtype, self.kv_align, False, self.plan)
        for layer in self.layers:
            tiles = SlotLayer(out)
            for name in layer.buffers:
                buf = getattr(layer, name)                                       # [R, H, S, D]
                setattr(tiles, name, buf[:1].expand(n, *buf.shape[1:]).clone())  # [n, H, S, D]
                tiles.buffers.append(name)
            tiles.is_initialized = layer.is_initialized
            out.layers.append(tiles)
        out.valid[:] = self.valid[:1]
        out.slot_pos[:] = self.slot_pos[:1]
        out.pos[:] = self.pos[:1]
        out.cursor, out.num_rows = self.cursor, n
        return out

    def _gather(self, order: torch.Tensor) -> None:
        """Per row, reorder the first order.shape[1] slots by `order` [rows, w] in every layer."""
        for layer in self.layers:
            layer.gather_slots(order)
        w = order.shape[1]
        self.slot_pos[: order.shape[0], :w] = self.slot_pos[: order.shape[0], :w].gather(1, order)

    def grow(self, slots: int | None = None, rows: int | None = None) -> None:
        rows = rows or self.rows_capacity
        slots = slots or self.slots_capacity
        for layer in self.layers:
            layer.resize(rows, slots)
        valid = torch.zeros(rows, slots, dtype=torch.bool, device=self.device)
        valid[: self.rows_capacity, : self.slots_capacity] = self.valid
        slot_pos = torch.zeros(rows, slots, dtype=torch.long, device=self.device)
        slot_pos[: self.rows_capacity, : self.slots_capacity] = self.slot_pos
        pos = torch.zeros(rows, dtype=torch.long, device=self.device)
        pos[: self.rows_capacity] = self.pos
        self.valid, self.slot_pos, self.pos = valid, slot_pos, pos
        self.rows_capacity, self.slots_capacity = rows, slots

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Slots before this forward's tokens (what HF calls the past length while the forward runs)."""
        return self.region.write_at
