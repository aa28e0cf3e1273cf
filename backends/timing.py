"""Timing single forwards of a model at (batch_size, q) cells: what `autospec profile` and the
engine's first-use calibration (`backends.calibration`) measure.

Contract:
- `CellTimer(model, batch_sizes, max_q, context_len)` prefills one row of `context_len` random
  tokens and copies it into one `SlotCache` per batch size (`SlotCache.tiled`: one prefill, not one
  per row; the ragged cache and, on a CPU bfloat16 model, the prepacked weights the HF backend
  uses) and `time_ms(b, q)` times ONE forward of q new tokens per row over it, leaving the cache
  as it was (all under inference mode, as the backend runs: the cache's tensors are inference
  tensors). A batch size whose cache does not fit in memory is dropped and
  listed in `skipped` (out-of-memory is the only error caught).
- `cell_order` puts the cells a profile needs (target q = 1, 2 and draft q = 1 at every batch
  size) first; `measure_cells` visits every cell once per round in a shuffled order, after
  warm-up rounds, and starts no optional cell once `budget_s` is spent (with `essentials_first`,
  the needed cells' rounds all run first, so the budget bounds the whole run); `summarize_cells`
  gives the median, interquartile range and raw samples per cell.
"""
from __future__ import annotations

import contextlib
import random
import statistics
import time
from typing import Any

import torch

from .attention import attention_plan, text_config
from .drafters import forward_kwargs, model_forward
from .kv_cache import SlotCache
from .prepack import maybe_packed


def model_shape(model: Any) -> dict[str, int | None]:
    """The fields a profile is matched on (None where the config names them otherwise)."""
    c = text_config(model)
    return {k: getattr(c, k, None) for k in ("hidden_size", "num_hidden_layers", "vocab_size")}


class CellTimer:
    """Times one forward of `model` for (batch_size, q) cells over prefilled caches."""

    def __init__(self, model: Any, batch_sizes: list[int], max_q: int, context_len: int, seed: int = 0):
        self.model = model
        self.packed = maybe_packed(model, None)                  # as AutoSpec runs it
        self.device = next(model.parameters()).device
        self.cache_kw = forward_kwargs(model)
        self.generator = torch.Generator().manual_seed(seed)
        self.caches: dict[int, SlotCache] = {}
        self.skipped: list[int] = []                             # batch sizes that did not fit in memory
        self.vocab = text_config(model).vocab_size
        plan = attention_plan(model)
        one_row: SlotCache | None = None
        for b in batch_sizes:
            try:
                if one_row is None:                             # retried per batch size, as each once prefilled its own
                    one_row = self._prefilled(context_len + max_q + 2, context_len, plan)
                self.caches[b] = one_row.tiled(b)
            except Exception as exc:                            # out of memory only; anything else is a bug
                if not is_out_of_memory(exc):
                    raise
                self.skipped.append(b)

    @torch.inference_mode()
    def _prefilled(self, slots: int, context_len: int, plan: Any) -> SlotCache:
        """One row of `context_len` random tokens, prefilled (every batch size's cache copies it:
        a forward's cost does not depend on what its context says)."""
        cache = SlotCache(0, 1, slots, self.device, dtype=next(self.model.parameters()).dtype, plan=plan)
        ids = torch.randint(3, self.vocab, (1, context_len), generator=self.generator).to(self.device)   # [1, C]
        position_ids, mask, _ = cache.prefill_inputs([context_len])
        self._forward(cache, ids, position_ids, mask, 1)
        return cache

    def _forward(self, cache, ids, position_ids, mask, keep):
        return model_forward(self.model, cache, ids, position_ids, mask, self.cache_kw, keep)

    @torch.inference_mode()
    def time_ms(self, batch_size: int, q: int) -> float:
        """One forward of q new tokens per row; the cache is left as it was (nothing committed)."""
        cache = self.caches[batch_size]
        ids = torch.randint(3, self.vocab, (batch_size, q), generator=self.generator).to(self.device)    # [b, q]
        position_ids, mask = cache.decode_inputs(q)
        with self.packed.active() if self.packed else contextlib.nullcontext():
            self._sync()
            t0 = time.perf_counter()
            self._forward(cache, ids, position_ids, mask, q)
            self._sync()
            return (time.perf_counter() - t0) * 1e3

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (or host allocator) out-of-memory error."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def cell_order(batch_sizes: list[int], max_q: int, has_draft: bool) -> list[tuple[str, int, int]]:
    """Cells the profile needs first, then the rest: (model, batch_size, q)."""
    essential = [("target", b, q) for b in batch_sizes for q in (1, 2)]
    if has_draft:
        essential += [("draft", b, 1) for b in batch_sizes]
    rest = [("target", b, q) for b in batch_sizes for q in range(3, max_q + 1)]
    if has_draft:
        rest += [("draft", b, 2) for b in batch_sizes]
    return essential + rest


def measure_cells(timers: dict[str, CellTimer], cells: list[tuple[str, int, int]], warmup: int, reps: int,
                  budget_s: float, seed: int = 0, desc: str = "profiling",
                  essentials_first: bool = False) -> dict[tuple[str, int, int], list[float]]:
    """Rounds over the cells in shuffled order; stops starting optional cells when the budget is
    spent. With `essentials_first` every round of the cells a profile needs runs before any other
    cell (a first-use calibration: the budget then bounds the whole measurement, not just the
    optional part). A cell whose batch size its timer skipped, or whose forward runs out of memory,
    gets no samples."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    count = essential_count(cells)
    optional = set(cells[count:])
    groups = [cells[:count], cells[count:]] if essentials_first else [cells]
    samples: dict[tuple[str, int, int], list[float]] = {c: [] for c in cells}
    failed: set[tuple[str, int, int]] = {c for c in cells if c[1] not in timers[c[0]].caches}
    deadline = time.perf_counter() + budget_s
    with tqdm(total=(warmup + reps) * len(cells), desc=desc, unit="fwd") as bar:
        for group in groups:
            for round_index in range(warmup + reps):
                order = list(group)
                rng.shuffle(order)
                for cell in order:
                    bar.update(1)
                    if cell in failed or (cell in optional and time.perf_counter() > deadline):
                        continue
                    _sample(timers, cell, round_index >= warmup, samples, failed)
    return {c: v for c, v in samples.items() if v}


def _sample(timers: dict[str, CellTimer], cell: tuple[str, int, int], keep: bool,
            samples: dict[tuple[str, int, int], list[float]], failed: set[tuple[str, int, int]]) -> None:
    """Time one forward of `cell`: kept in `samples` (after warm-up), or the cell marked failed (out of memory)."""
    ms = _time_cell(timers[cell[0]], cell)
    if ms is None:
        failed.add(cell)
    elif keep:
        samples[cell].append(ms)


def _time_cell(timer: CellTimer, cell: tuple[str, int, int]) -> float | None:
    """The cell's ms, or None when its forward ran out of memory."""
    try:
        return timer.time_ms(cell[1], cell[2])
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return None


def essential_count(cells: list[tuple[str, int, int]]) -> int:
    return sum(1 for model, _, q in cells if q <= (2 if model == "target" else 1))


def summarize_cells(samples: dict[tuple[str, int, int], list[float]], model: str):
    """(median ms, IQR ms, raw) per (batch_size, q) of one model."""
    median, spread, raw = {}, {}, {}
    for (name, b, q), values in samples.items():
        if name != model:
            continue
        median[(b, q)] = statistics.median(values)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        spread[(b, q)] = quartiles[2] - quartiles[0]
        raw[(b, q)] = [round(v, 4) for v in values]
    return median, spread, raw


