"""Batched speculative decoding on HuggingFace causal LMs, with continuous batching.

Contract (the `Backend` protocol plus serving):
- `submit(requests)` queues `GenerationRequest`s (prompt ids, their own max_new_tokens, an arrival
  offset in seconds); between steps the backend retires rows that finished (EOS or their budget)
  and admits arrived requests while fewer than `max_batch_size` rows run, prefilling them together.
  When no row runs but requests are still to come it waits for their arrival (rows that finish at
  their prefill leave at once), so after `start()` and every `step()` a row runs or `done()` holds.
- `step(spec_len)` drafts up to `spec_len` tokens per row (never past a row's budget), verifies
  all rows in ONE target forward over a ragged KV cache (`SlotCache`), keeps every row's own
  accepted drafts plus the target's bonus token, and returns the `StepRecord`. The verified block
  is as long as the longest real draft in the batch (a drafter that found nothing costs a plain
  decode); the record keeps the chosen `spec_len` (the controller's arm) and the actual cost. Greedy output is
  the target's greedy output; sampling uses rejection sampling (see `sampling`).
- Timing: one device synchronisation per step. On CUDA the split between draft and verify comes
  from CUDA events; on CPU from the host clock. `overhead_time_s` is the rest of the step: the
  bookkeeping after verification plus the host time since the previous step returned (the
  controller, sinks, the caller's loop), so `StepRecord.step_time_s` is the step's wall time.
  Prefill (admission) time is kept apart, in `prefill_time_s`; idle waits for arrivals count nowhere.
- `results` maps request id -> `RequestResult` for every finished request, with its latency
  timestamps (seconds since `start()`); `unfinished_ids()` lists the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from autospec.types import StepContext, StepRecord, validate_spec_len

from .attention import AttentionPlan, attention_plan
from .drafters import Drafter, Drafts, forward_kwargs, left_padded, model_forward
from .kv_cache import SlotCache
from .sampling import SamplingConfig, select_tokens, verify_greedy, verify_sampling


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    request_id: int | str = 0
    arrival_s: float = 0.0


@dataclass
class RequestResult:
    request_id: int | str
    prompt_ids: list[int]
    output_ids: list[int]
    finish_reason: str                      # "eos" | "length"
    arrival_s: float
    first_token_s: float
    finish_s: float

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first."""
        n = len(self.output_ids) - 1
        return (self.finish_s - self.first_token_s) / n if n > 0 else 0.0


@dataclass
class _Row:
    request: GenerationRequest
    tokens: list[int]                       # prompt + generated; the last one is not in the target cache yet
    first_token_s: float
    generated: int = 1
    finish_reason: str | None = None

    @property
    def remaining(self) -> int:
        return self.request.max_new_tokens - self.generated


@dataclass
class _Clock:
    """Host timestamps plus, on CUDA, events; read once after the step's single sync."""
    device: torch.device
    marks: list = field(default_factory=list)

    def mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def spans_s(self) -> list[float]:
        if self.device.type == "cuda":
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


class HFBackend:
    def __init__(self, target: torch.nn.Module, drafter: Drafter | None, *, sampling: SamplingConfig,
                 eos_token_ids: Sequence[int] = (), max_batch_size: int = 16, max_spec_len: int = 8,
                 slots_capacity: int = 512, seed: int = 0, generator: torch.Generator | None = None,
                 plan: AttentionPlan | None = None):
        self.target = target
        self.drafter = drafter
        self.sampling = sampling
        self.eos = set(int(t) for t in eos_token_ids)
        self.max_batch_size, self.max_spec_len = max_batch_size, max_spec_len if drafter else 0
        self.device = next(target.parameters()).device
        self.generator = generator or torch.Generator(device=self.device).manual_seed(seed)
        self.cache = SlotCache(0, max_batch_size, slots_capacity, self.device,
                               dtype=next(target.parameters()).dtype, plan=plan or attention_plan(target))
        self.cache_kw = forward_kwargs(target)
        self.rows: list[_Row] = []
        self.queue: list[GenerationRequest] = []
        self.results: dict[int | str, RequestResult] = {}
        self.step_index = 0
        self.prefill_time_s = 0.0
        self._t0 = time.perf_counter()
        self._returned_at: float | None = None      # when the last step() returned (None: nothing to charge)

    # --- requests -------------------------------------------------------------------------
    def submit(self, requests: Sequence[GenerationRequest]) -> None:
        self.queue.extend(sorted(requests, key=lambda r: r.arrival_s))

    @torch.inference_mode()
    def start(self) -> None:
        """Zero the serving clock and admit whatever has arrived (under inference mode, like every
        step: admission prefills and retires rows, and cache tensors made in inference mode may only
        be updated in it)."""
        self._t0 = time.perf_counter()
        self._returned_at = None
        self._fill()

    def now_s(self) -> float:
        return time.perf_counter() - self._t0

    def unfinished_ids(self) -> list[int | str]:
        return [r.request.request_id for r in self.rows] + [q.request_id for q in self.queue]

    def done(self) -> bool:
        return not self.rows and not self.queue

    @torch.inference_mode()
    def context(self) -> StepContext:
        lengths = [len(r.tokens) for r in self.rows]
        return StepContext(step=self.step_index, batch_size=len(self.rows), max_spec_len=self.max_spec_len,
                           mean_context_len=sum(lengths) / max(1, len(lengths)), max_context_len=max(lengths, default=0),
                           time_s=self.now_s())

    def _fill(self) -> None:
        """Admit what has arrived; while no row runs but requests are still to come, wait for them
        (admitted rows may finish at their prefill and leave again), so that after `start()` and
        every `step()` either a row runs or `done()` holds."""
        self._admit()
        while not self.rows and self.queue:
            time.sleep(max(0.0, self.queue[0].arrival_s - self.now_s()))
            self._admit()

    # --- admission ------------------------------------------------------------------------
    def _admit(self) -> None:
        now = self.now_s()
        free = self.max_batch_size - len(self.rows)
        arrived = [r for r in self.queue if r.arrival_s <= now][:free]
        if not arrived:
            return
        taken = {id(r) for r in arrived}
        self.queue = [r for r in self.queue if id(r) not in taken]
        t0 = time.perf_counter()
        first = self._prefill([r.prompt_ids for r in arrived])
        stamp = self.now_s()
        new_rows = [_Row(req, list(req.prompt_ids) + [tok], stamp) for req, tok in zip(arrived, first)]
        if self.drafter is not None:
            self.drafter.add_rows([row.tokens for row in new_rows])
        for row in new_rows:
            row.finish_reason = self._finish_reason(row, [row.tokens[-1]])
        self.rows.extend(new_rows)
        self.prefill_time_s += time.perf_counter() - t0
        self._retire()

    @torch.inference_mode()
    def _prefill(self, prompts: list[list[int]]) -> list[int]:
        """Run the target over new prompts (left-padded together); return each row's first token."""
        ids = left_padded(prompts, self.device)                                   # [n, P]
        position_ids, mask, _ = self.cache.prefill_inputs([len(p) for p in prompts])
        logits = model_forward(self.target, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=1)
        tokens, _ = select_tokens(logits[:, -1], self.sampling, self.generator)
        return tokens.tolist()

    def _finish_reason(self, row: _Row, emitted: list[int]) -> str | None:
        if any(t in self.eos for t in emitted):
            return "eos"
        return "length" if row.remaining <= 0 else None

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if r.finish_reason is None]
        if len(keep) == len(self.rows):
            return
        keep = SlotCache.fill_order(keep)
        for row in self.rows:
            if row.finish_reason is not None:
                self._store_result(row)
        self.rows = [self.rows[i] for i in keep]
        self.cache.keep_rows(keep)
        if self.drafter is not None:
            self.drafter.keep_rows(keep)

    def _store_result(self, row: _Row) -> None:
        req = row.request
        self.results[req.request_id] = RequestResult(req.request_id, list(req.prompt_ids),
                                                     row.tokens[len(req.prompt_ids):], row.finish_reason or "",
                                                     req.arrival_s, row.first_token_s, self.now_s())

    # --- one speculative step -------------------------------------------------------------
    @torch.inference_mode()
    def step(self, spec_len: int) -> StepRecord:
        host_gap_s = time.perf_counter() - self._returned_at if self._returned_at is not None else 0.0
        spec_len = validate_spec_len(spec_len, self.max_spec_len)
        if not self.rows:
            raise RuntimeError("step() called with no running rows: check done() first")
        caps = torch.tensor([min(spec_len, r.remaining - 1) for r in self.rows], device=self.device)
        spec_len = spec_len if int(caps.max()) > 0 else 0
        clock = _Clock(self.device)
        clock.mark()
        drafts = self._draft(spec_len, caps)
        clock.mark()
        accepted, bonus = self._verify(drafts)
        clock.mark()
        accepted_list, bonus_list = accepted.tolist(), bonus.tolist()          # the step's one sync
        host_start = time.perf_counter()
        record = self._commit(spec_len, drafts, accepted, accepted_list, bonus_list)
        draft_s, verify_s = clock.spans_s()
        record = _with_times(record, draft_s, verify_s, time.perf_counter() - host_start + host_gap_s, self.now_s())
        self.step_index += 1
        self._retire()
        self._fill()                                    # idle waits for arrivals count in no record
        self._returned_at = time.perf_counter()
        return record

    def _draft(self, spec_len: int, caps: torch.Tensor) -> Drafts:
        b = len(self.rows)
        if spec_len == 0:
            empty = torch.empty(b, 0, dtype=torch.long, device=self.device)
            return Drafts(empty, torch.zeros(b, dtype=torch.long, device=self.device), None)
        drafts = self.drafter.propose([r.tokens for r in self.rows], spec_len, caps)
        if self.drafter.has_model:
            return drafts
        longest = int(drafts.num_drafts.max())                      # a host value: deterministic drafters only
        return Drafts(drafts.tokens[:, :longest], drafts.num_drafts, None)

    def _verify(self, drafts: Drafts) -> tuple[torch.Tensor, torch.Tensor]:
        last = torch.tensor([r.tokens[-1] for r in self.rows], device=self.device)
        ids = torch.cat([last[:, None], drafts.tokens], dim=1)                 # [b, s + 1]
        q = ids.shape[1]
        position_ids, mask = self.cache.decode_inputs(q)
        logits = model_forward(self.target, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=q)
        if not self.sampling.do_sample:
            return verify_greedy(logits, drafts.tokens, drafts.num_drafts)
        probs = self.sampling.probabilities(logits)                            # [b, s + 1, V]
        return verify_sampling(probs, drafts.tokens, drafts.num_drafts, drafts.probs, self.generator)

    def _commit(self, spec_len: int, drafts: Drafts, accepted: torch.Tensor, accepted_list: list[int],
                bonus_list: list[int]) -> StepRecord:
        """Keep accepted drafts + bonus per row in both caches; emit tokens; build the record."""
        q = drafts.tokens.shape[1] + 1
        self.cache.commit(torch.arange(q, device=self.device)[None, :] < (accepted + 1)[:, None])
        if self.drafter is not None and q > 1:
            self.drafter.accept(accepted)
        draft_rows = drafts.tokens.tolist()
        kept_accepted = bonus_rows = 0
        for row, k, drafted, bonus in zip(self.rows, accepted_list, draft_rows, bonus_list):
            emitted = _truncate_at_eos(drafted[:k] + [bonus], self.eos)
            row.tokens.extend(emitted)
            row.generated += len(emitted)
            row.finish_reason = self._finish_reason(row, emitted)
            kept_accepted += min(k, len(emitted))
            bonus_rows += len(emitted) > k
        self.cache.trim(max(len(r.tokens) for r in self.rows))              # the cache holds all but the last token
        num_drafts = drafts.num_drafts.tolist()                                # one copy serves both counts
        return StepRecord(step=self.step_index, batch_size=len(self.rows), spec_len=spec_len,
                          num_draft_tokens=sum(num_drafts), num_accepted_tokens=kept_accepted,
                          accepted_per_pos=tuple(_rows_beyond(accepted_list, spec_len)), draft_time_s=0.0,
                          verify_time_s=0.0, controller="", num_bonus_tokens=bonus_rows,
                          mean_context_len=sum(len(r.tokens) for r in self.rows) / len(self.rows),
                          extra={"verify_q": q, "rows_drafted_per_pos": _rows_beyond(num_drafts, spec_len)})


def _rows_beyond(counts: list[int], spec_len: int) -> list[int]:
    """[spec_len] how many rows have a count above j, for each position j."""
    return [sum(1 for c in counts if c > j) for j in range(spec_len)]


def _truncate_at_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def _with_times(record: StepRecord, draft_s: float, verify_s: float, overhead_s: float, now_s: float) -> StepRecord:
    import dataclasses
    return dataclasses.replace(record, draft_time_s=draft_s, verify_time_s=verify_s, overhead_time_s=overhead_s,
                               time_s=now_s)
