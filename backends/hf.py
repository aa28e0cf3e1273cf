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
- With a `Processing` (the backend's, or a request's own), tokens are chosen from HF-processed
  scores at every position, the draft draws from processed scores too, and stopping criteria cut
  each row's block after the token that ends it (`finish_reason` "stop"); rows may also carry their
  own do_sample and EOS ids, and a batch mixing greedy and sampled rows verifies each its own way.
  `keep_scores` keeps each emitted token's scores and logits; `on_tokens` sees each committed block.
- One host read per step: the draft loop, verification, both caches' commits and compaction stay
  on the device (host values go up by `transfer.upload`, non-blocking on CUDA) until `step` reads
  every row's accepted count, bonus token, draft count and drafts in ONE copy
  (`transfer.read_host`); the commit and the record are built from that host copy. What reads
  more: an admission (its prefill's first tokens), a compaction forced by the cache's capacity
  (`SlotCache.reserve`), and HF logits processors or stopping criteria (they see tokens on the host).
- Timing: one device synchronisation per step. On CUDA the split between draft and verify comes
  from CUDA events; on CPU from the host clock. `overhead_time_s` is the rest of the step: the
  bookkeeping after verification plus the host time since the previous step returned (the
  controller, sinks, the caller's loop), so `StepRecord.step_time_s` is the step's wall time.
  Prefill (admission) time is kept apart, in `prefill_time_s`; a model drafter's deferred prefill
  of the rows that joined since it last drafted runs inside the next drafting step and counts in its
  `draft_time_s` (the choice to speculate caused it, so that arm pays for it); idle waits for
  arrivals count nowhere.
- `results` maps request id -> `RequestResult` for every finished request, with its latency
  timestamps (seconds since `start()`); `unfinished_ids()` lists the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from autospec.types import StepContext, StepRecord, validate_spec_len

from .attention import AttentionPlan, attention_plan
from .drafters import Drafter, Drafts, forward_kwargs, left_padded, model_forward
from .kv_cache import SlotCache
from .processing import Processing, View
from .sampling import SamplingConfig, select_tokens, verify_greedy, verify_sampling
from .transfer import read_host, upload


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    request_id: int | str = 0
    arrival_s: float = 0.0
    view: View | None = None                # the prompt as target.generate holds it (padding, mask); None: as is
    processing: Processing | None = None    # this request's own processors / criteria (None: the backend's)
    do_sample: bool | None = None           # this request's own choice (None: the backend's)
    eos_token_ids: tuple[int, ...] | None = None    # this request's own EOS ids (None: the backend's)


@dataclass
class RequestResult:
    request_id: int | str
    prompt_ids: list[int]
    output_ids: list[int]
    finish_reason: str                      # "eos" | "length" | "stop" (a stopping criterion)
    arrival_s: float
    first_token_s: float
    finish_s: float
    scores: torch.Tensor | None = None      # [tokens, V] processed scores per emitted token, when kept
    logits: torch.Tensor | None = None      # [tokens, V] raw logits per emitted token, when kept

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
    scores: list = field(default_factory=list)      # [n, V] tensors per step, when kept
    logits: list = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.request.max_new_tokens - self.generated

    @property
    def view(self) -> View:
        prompt = self.request.prompt_ids
        return self.request.view or View(list(prompt), [1] * len(prompt))

    @property
    def new_tokens(self) -> list[int]:
        return self.tokens[len(self.request.prompt_ids):]


def _by_processing(rows: list[_Row], default: Processing | None) -> dict[int, tuple[Processing, list[int]]]:
    """Row indices grouped by the Processing that applies to them (rows without any left out)."""
    groups: dict[int, tuple[Processing, list[int]]] = {}
    for i, row in enumerate(rows):
        processing = row.request.processing or default
        if processing is not None:
            groups.setdefault(id(processing), (processing, []))[1].append(i)
    return groups


@dataclass
class _StepHost:
    """What the step's one host read brought back, per row."""
    accepted: list[int]             # drafts kept
    bonus: list[int]                # the target's token after them
    num_drafts: list[int]           # drafts proposed
    tokens: list[list[int]]         # the drafts [b][w]


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
                 plan: AttentionPlan | None = None, processing: Processing | None = None,
                 keep_scores: bool = False, on_tokens: Callable[[GenerationRequest, list[int]], None] | None = None):
        self.target = target
        self.processing, self.keep_scores, self.on_tokens = processing, keep_scores, on_tokens
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
                           time_s=self.now_s(), remaining_tokens=max((r.remaining for r in self.rows), default=0))

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
        new_rows = [_Row(req, list(req.prompt_ids), 0.0) for req in arrived]
        first, scores, logits = self._prefill(new_rows)
        stamp = self.now_s()
        for row, tok in zip(new_rows, first):
            row.tokens.append(tok)
            row.first_token_s = stamp
        if self.drafter is not None:
            self.drafter.add_rows([row.tokens for row in new_rows])
        self._emit(new_rows, [[tok] for tok in first], [0] * len(new_rows), scores, logits)
        self.rows.extend(new_rows)
        self.prefill_time_s += time.perf_counter() - t0
        self._retire()

    @torch.inference_mode()
    def _prefill(self, rows: list[_Row]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Run the target over new prompts (left-padded together); each row's first token, and the
        scores [n, 1, V] it was chosen from (processed when there is processing) and the logits."""
        prompts = [r.tokens for r in rows]
        ids = left_padded(prompts, self.device)                                   # [n, P]
        position_ids, mask, _ = self.cache.prefill_inputs([len(p) for p in prompts])
        logits = model_forward(self.target, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=1)
        scores = self._scores(rows, [[] for _ in rows], logits[:, -1:])          # [n, 1, V]
        return self._select(rows, scores[:, 0]).tolist(), scores, logits[:, -1:]

    def _scores(self, rows: list[_Row], drafts: list[list[int]], logits: torch.Tensor,
                last_only: bool = False) -> torch.Tensor:
        """[n, q, V] logits -> what tokens are chosen from: HF-processed scores for the rows that have
        processors (each row with its own), the logits elsewhere (`last_only`: Processing.scores)."""
        groups = [g for g in _by_processing(rows, self.processing).values() if g[0].has_processors]
        if not groups:
            return logits
        out = logits.float().clone()
        for processing, idx in groups:
            out[idx] = processing.scores([rows[i].view for i in idx], [rows[i].new_tokens for i in idx],
                                         [drafts[i] for i in idx], logits[idx], last_only)
        return out

    def _has_processors(self, rows: list[_Row]) -> bool:
        """Some row's tokens come from HF-processed scores (the backend's processing or its own)."""
        return any(g[0].has_processors for g in _by_processing(rows, self.processing).values())

    @staticmethod
    def _mixed(rows: list[_Row]) -> bool:
        """Rows carry their own sampling choice or processing (serve with per-request settings)."""
        return any(r.request.processing is not None or r.request.do_sample is not None for r in rows)

    def _sample_flags(self, rows: list[_Row]) -> list[bool]:
        """Per row (on the host): whether it samples."""
        return [r.request.do_sample if r.request.do_sample is not None else self.sampling.do_sample for r in rows]

    def _sampled(self, flags: list[bool]) -> torch.Tensor:
        """[n] bool on the device: the rows that sample."""
        return upload(flags, self.device, dtype=torch.bool)

    def _probabilities(self, rows: list[_Row], scores: torch.Tensor) -> torch.Tensor:
        """Target probabilities: a softmax of HF-processed scores (warpers included) for rows with
        their own processing, the backend's sampling settings for the others."""
        own = [r.request.processing is not None and r.request.processing.has_processors for r in rows]
        if not any(own):
            return self.sampling.probabilities(scores)
        probs = torch.softmax(scores.float(), dim=-1)
        if not all(own):
            rest = [i for i, o in enumerate(own) if not o]
            probs[rest] = self.sampling.probabilities(scores[rest])
        return probs

    def _select(self, rows: list[_Row], scores: torch.Tensor) -> torch.Tensor:
        """[n, V] -> [n] first tokens, each row greedy or sampled as it asks."""
        if not self._mixed(rows):
            return select_tokens(scores, self.sampling, self.generator)[0]
        greedy = scores.argmax(dim=-1)
        flags = self._sample_flags(rows)
        if not any(flags):
            return greedy
        drawn = torch.multinomial(self._probabilities(rows, scores), 1, generator=self.generator).squeeze(-1)
        return torch.where(self._sampled(flags), drawn, greedy)

    def _emit(self, rows: list[_Row], new: list[list[int]], before: list[int], scores: torch.Tensor,
              logits: torch.Tensor) -> list[list[int]]:
        """Cut each row's new tokens at EOS or a stopping criterion (as HF stops after each token),
        set its finish reason, keep scores, stream; return what each row keeps. `before` is how
        many tokens each row had generated before these; `row.tokens` already holds the new ones."""
        new = [_truncate_at_eos(n, self._eos(r)) for n, r in zip(new, rows)]
        stops: list[int | None] = [None] * len(rows)
        for processing, idx in _by_processing(rows, self.processing).values():
            if processing.criteria is None:
                continue
            earlier = [rows[i].tokens[len(rows[i].request.prompt_ids):len(rows[i].request.prompt_ids) + before[i]]
                       for i in idx]
            found = processing.stop_after([rows[i].view for i in idx], earlier, [new[i] for i in idx], scores[idx])
            for i, stop in zip(idx, found):
                stops[i] = stop
        kept = []
        for i, (row, tokens, stop) in enumerate(zip(rows, new, stops)):
            tokens = tokens if stop is None else tokens[:stop]
            del row.tokens[len(row.request.prompt_ids) + before[i] + len(tokens):]
            row.generated = before[i] + len(tokens)
            row.finish_reason = "stop" if stop is not None else self._finish_reason(row, tokens)
            if self.keep_scores:
                row.scores.append(scores[i, :len(tokens)].float().clone())
                row.logits.append(logits[i, :len(tokens)].float().clone())
            if self.on_tokens is not None:
                self.on_tokens(row.request, tokens)
            kept.append(tokens)
        return kept

    def _eos(self, row: _Row) -> set[int]:
        own = row.request.eos_token_ids
        return self.eos if own is None else set(own)

    def _finish_reason(self, row: _Row, emitted: list[int]) -> str | None:
        if any(t in self._eos(row) for t in emitted):
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
        kept = (torch.cat(row.scores), torch.cat(row.logits)) if row.scores else (None, None)
        self.results[req.request_id] = RequestResult(req.request_id, list(req.prompt_ids),
                                                     row.tokens[len(req.prompt_ids):], row.finish_reason or "",
                                                     req.arrival_s, row.first_token_s, self.now_s(), *kept)

    # --- one speculative step -------------------------------------------------------------
    @torch.inference_mode()
    def step(self, spec_len: int) -> StepRecord:
        host_gap_s = time.perf_counter() - self._returned_at if self._returned_at is not None else 0.0
        spec_len = validate_spec_len(spec_len, self.max_spec_len)
        if not self.rows:
            raise RuntimeError("step() called with no running rows: check done() first")
        caps = [min(spec_len, r.remaining - 1) for r in self.rows]        # host values: nothing read
        spec_len = spec_len if max(caps) > 0 else 0
        clock = _Clock(self.device)
        clock.mark()
        drafts = self._draft(spec_len, caps)             # with a model drafter's deferred prefill, if any
        clock.mark()
        accepted, bonus, scores, logits = self._verify(drafts)
        clock.mark()
        host = _StepHost(*read_host(accepted, bonus, drafts.num_drafts, drafts.tokens))   # the step's one sync
        host_start = time.perf_counter()
        record = self._commit(spec_len, drafts, accepted, host, scores, logits)
        draft_s, verify_s = clock.spans_s()
        record = _with_times(record, draft_s, verify_s, time.perf_counter() - host_start + host_gap_s, self.now_s())
        self.step_index += 1
        self._retire()
        self._fill()                                    # idle waits for arrivals count in no record
        self._returned_at = time.perf_counter()
        return record

    def _draft(self, spec_len: int, caps: list[int]) -> Drafts:
        """Drafts [b, w] for the verify block (w = 0 at spec_len 0); no host read."""
        b = len(self.rows)
        if spec_len == 0:
            empty = torch.empty(b, 0, dtype=torch.long, device=self.device)
            return Drafts(empty, torch.zeros(b, dtype=torch.long, device=self.device), None)
        shape = None
        if self.drafter.has_model and self._has_processors(self.rows):
            shape = lambda so_far, logits: self._scores(self.rows, so_far, logits, last_only=True)   # noqa: E731
        return self.drafter.propose([r.tokens for r in self.rows], spec_len, caps, shape=shape)

    def _verify(self, drafts: Drafts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(accepted [b], bonus [b], the scores [b, q, V] tokens are chosen from, the logits [b, q, V])."""
        last = upload([r.tokens[-1] for r in self.rows], self.device)         # [b]
        ids = torch.cat([last[:, None], drafts.tokens], dim=1)                 # [b, s + 1]
        q = ids.shape[1]
        position_ids, mask = self.cache.decode_inputs(q)
        logits = model_forward(self.target, self.cache, ids, position_ids, mask, self.cache_kw, logits_to_keep=q)
        scores = logits
        if self._has_processors(self.rows):
            tokens, num_drafts = read_host(drafts.tokens, drafts.num_drafts)    # processors see drafts on the host
            rows = [t[:n] for t, n in zip(tokens, num_drafts)]
            scores = self._scores(self.rows, rows, logits)
        if self._mixed(self.rows):
            return (*self._verify_mixed(drafts, scores), scores, logits)
        if not self.sampling.do_sample:
            return (*verify_greedy(scores, drafts.tokens, drafts.num_drafts), scores, logits)
        probs = self.sampling.probabilities(scores)                            # [b, s + 1, V]
        return (*verify_sampling(probs, drafts.tokens, drafts.num_drafts, drafts.probs, self.generator), scores, logits)

    def _verify_mixed(self, drafts: Drafts, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy rows verified greedily, sampled rows by rejection sampling, in one batch."""
        accepted, bonus = verify_greedy(scores, drafts.tokens, drafts.num_drafts)
        flags = self._sample_flags(self.rows)
        if any(flags):
            sampled = self._sampled(flags)                                     # [b]
            probs = self._probabilities(self.rows, scores)                     # [b, s + 1, V]
            drawn = verify_sampling(probs, drafts.tokens, drafts.num_drafts, drafts.probs, self.generator)
            accepted, bonus = torch.where(sampled, drawn[0], accepted), torch.where(sampled, drawn[1], bonus)
        return accepted, bonus

    def _commit(self, spec_len: int, drafts: Drafts, accepted: torch.Tensor, host: _StepHost,
                scores: torch.Tensor, logits: torch.Tensor) -> StepRecord:
        """Keep accepted drafts + bonus per row in both caches (on the device, from `accepted` [b]);
        emit tokens and build the record from the host copy."""
        q = drafts.tokens.shape[1] + 1
        self.cache.commit(torch.arange(q, device=self.device)[None, :] < (accepted + 1)[:, None])
        if self.drafter is not None and q > 1:
            self.drafter.accept(accepted, host.accepted)
        accepted_list = host.accepted
        before = [r.generated for r in self.rows]
        new = [drafted[:k] + [bonus] for k, drafted, bonus in zip(accepted_list, host.tokens, host.bonus)]
        for row, tokens in zip(self.rows, new):
            row.tokens.extend(tokens)
        kept = self._emit(self.rows, new, before, scores, logits)
        kept_accepted = sum(min(k, len(e)) for k, e in zip(accepted_list, kept))
        bonus_rows = sum(len(e) > k for k, e in zip(accepted_list, kept))
        self.cache.trim(max(len(r.tokens) for r in self.rows))              # the cache holds all but the last token
        num_drafts = host.num_drafts
        return StepRecord(step=self.step_index, batch_size=len(self.rows), spec_len=spec_len,
                          num_draft_tokens=sum(num_drafts), num_accepted_tokens=kept_accepted,
                          accepted_per_pos=tuple(_rows_beyond(accepted_list, spec_len)), draft_time_s=0.0,
                          verify_time_s=0.0, controller="", num_bonus_tokens=bonus_rows,
                          mean_context_len=sum(len(r.tokens) for r in self.rows) / len(self.rows),
                          verified_width=q, rows_drafted_per_pos=tuple(_rows_beyond(num_drafts, spec_len)))


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
