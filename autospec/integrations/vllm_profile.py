"""`autospec profile --engine vllm`: a cost profile measured through vLLM itself (its environment).

The HF backend's profile mispredicts vLLM's steps (another engine, another per-step overhead), so
the prior autospec's controller uses inside vLLM is measured there, with autospec's own scheduler
playing fixed K on one engine.

Contract:
- `engine_args(target_dir, draft, ...)` is the `LLM(...)` keyword set both this profiler and
  `benchmarks/vllm_online.py` use: `draft` is 'ngram' or an HF draft folder (`draft_model`);
  speculation is dynamic over [1, max_num_seqs] at `max_spec_len`, autospec's scheduler decides.
- `measure_cells(llm, prompts, batch_sizes, spec_lens, new_tokens, reps)`: for every round, every
  (batch_size, K) cell in a shuffled order serves `batch_size` prompts together at fixed K; a
  cell's time is the median whole-step time (vLLM's schedule -> update_from_output, drafting and
  its own per-step work included) over the steps at which all its rows decoded, its value the
  median over rounds (after one warm-up run). Acceptance per position comes from the steps at K = max(spec_lens).
- `vllm_profile(...)` turns them into autospec's profile format: `target.step_ms[b][K + 1]` holds
  the whole step at K (a draft model's cost included; `draft: none`), `acceptance.per_pos` is the
  conditional acceptance per position with a row that drafted nothing counted as rejected (what
  goodput needs), `engine: vllm` and the drafter are recorded, and so is the target's shape, which
  the vLLM scheduler checks against the model it serves.
- This module imports no vLLM itself: `autospec.integrations.vllm` does.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autospec.acceptance import acceptance_from_records
from autospec.profiles import Profile
from autospec.types import StepRecord

SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size")


def speculative_config(draft: str, max_spec_len: int, max_num_seqs: int) -> dict[str, Any]:
    """vLLM's speculative_config: n-gram lookup or a draft folder, dynamic over every batch size."""
    config: dict[str, Any] = ({"method": "ngram", "prompt_lookup_max": 3, "prompt_lookup_min": 1} if draft == "ngram"
                              else {"method": "draft_model", "model": str(draft)})
    config.update(num_speculative_tokens=max_spec_len,
                  num_speculative_tokens_per_batch_size=[[1, max_num_seqs, max_spec_len]])
    return config


def engine_args(target_dir: str | Path, draft: str | None, max_spec_len: int = 4, max_num_seqs: int = 16,
                dtype: str = "bfloat16", autospec: dict[str, Any] | None = None,
                memory_fraction: float = 0.3) -> dict[str, Any]:
    """`LLM(**engine_args(...))`: plain decoding with draft None, else speculation chosen by autospec."""
    args: dict[str, Any] = dict(model=str(target_dir), max_model_len=1024, max_num_seqs=max_num_seqs, dtype=dtype,
                                enforce_eager=True, seed=0, gpu_memory_utilization=memory_fraction)
    if draft is not None:
        args["speculative_config"] = speculative_config(draft, max_spec_len, max_num_seqs)
        args["scheduler_cls"] = "autospec.integrations.vllm.AutoSpecScheduler"
        args["additional_config"] = {"autospec": {"controller": "fixed:0", **(autospec or {})}}
    return args


class RecordList:
    """A decisions sink keeping the StepRecords of the run under way."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def write(self, record: StepRecord) -> None:
        self.records.append(record)


def cell_step_ms(records: list[StepRecord], batch_size: int) -> float | None:
    """Median whole-step ms over the steps at which all `batch_size` rows decoded."""
    steps = [r.verify_time_s * 1000.0 for r in records if r.batch_size == batch_size]
    return statistics.median(steps) if steps else None


def measure_cells(llm: Any, prompts: list[list[int]], batch_sizes: list[int], spec_lens: list[int],
                  new_tokens: int, reps: int, seed: int = 0, progress: Any = None) -> dict[str, Any]:
    """{"step_ms": {(b, K): median ms}, "raw_ms": {(b, K): [per round]}, "records_at_max": [...],
    "context_len": the mean context of a measured step (prompt + half the new tokens)} (contract)."""
    from autospec.controllers import build_controller
    from autospec.integrations.vllm import in_process_scheduler, run_phases, set_policy

    scheduler = in_process_scheduler(llm)
    sink = RecordList()
    scheduler.autospec.sinks.append(sink)
    rng, raw, at_max = random.Random(seed), {}, []
    cells = [(b, k) for b in batch_sizes for k in spec_lens]
    rows = [len(prompts[(i + b) % len(prompts)]) for b in batch_sizes for i in range(b)]
    run_phases(llm, [(max(batch_sizes), prompts[:max(batch_sizes)])], 4)     # warm-up: first-call allocations
    for _ in range(reps):
        rng.shuffle(cells)
        for b, k in cells:
            set_policy(scheduler, build_controller(f"fixed:{k}", max_spec_len=max(spec_lens)))
            sink.records = []
            run_phases(llm, [(b, [prompts[(i + b) % len(prompts)] for i in range(b)])], new_tokens)
            ms = cell_step_ms(sink.records, b)
            if ms is not None:
                raw.setdefault((b, k), []).append(ms)
            if k == max(spec_lens):
                at_max.extend(sink.records)
            if progress is not None:
                progress.update(1)
    scheduler.autospec.sinks.remove(sink)
    return {"step_ms": {cell: statistics.median(v) for cell, v in raw.items()}, "raw_ms": raw,
            "records_at_max": at_max, "context_len": round(statistics.mean(rows) + new_tokens / 2)}


def vllm_profile(name: str, target_name: str, drafter: str, hf_config: Any, measured: dict[str, Any],
                 max_spec_len: int, provenance: dict[str, Any]) -> Profile:
    """The profile of the contract from `measure_cells`' result."""
    acceptance = acceptance_from_records(measured["records_at_max"], max_spec_len)
    target_ms = {(b, k + 1): ms for (b, k), ms in measured["step_ms"].items()}
    raw = {}
    for (b, k), values in sorted(measured["raw_ms"].items()):
        raw.setdefault(b, {})[k] = [round(v, 3) for v in values]
    return Profile(name=name, target_model=target_name, draft_model="none", context_len=measured["context_len"],
                   target_step_ms=target_ms, draft_step_ms={}, provenance=provenance,
                   acceptance_per_pos=tuple(acceptance["per_pos"]),
                   extra={"engine": "vllm", "drafter": drafter,
                          "target_shape": {k: getattr(hf_config, k, None) for k in SHAPE_FIELDS},
                          "whole_step_ms_by_spec_len": raw,
                          "acceptance_detail": {k: v for k, v in acceptance.items() if k != "per_pos"}})


def check_args(args: argparse.Namespace) -> None:
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda for --engine vllm, got {args.device!r}")
    if not 1 <= args.max_spec_len <= 16:
        raise ValueError(f"--max-spec-len must be in 1..16 for --engine vllm, got {args.max_spec_len}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive integers, got {args.batch_sizes}")
    if args.reps < 1 or args.step_tokens < 8:
        raise ValueError("--reps must be >= 1 and --step-tokens >= 8")


def run_vllm_profile(args: argparse.Namespace) -> int:
    """`autospec profile --engine vllm ...` (in vLLM's environment): measure, write the YAML, print a summary."""
    from tqdm import tqdm
    from transformers import AutoConfig, AutoTokenizer

    from autospec.integrations.vllm import in_process_llm, vllm_version
    from autospec.prompts import chat_token_ids, load_prompts

    check_args(args)
    started = time.time()
    target_dir, target_name, drafter, draft = resolve_pair(args.target, args.draft, args.out.parent)
    batch_sizes = sorted(set(args.batch_sizes))
    llm = in_process_llm(**engine_args(target_dir, draft, args.max_spec_len, max(batch_sizes), args.dtype))
    tokenizer = AutoTokenizer.from_pretrained(target_dir, local_files_only=True)
    prompts = chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts(path=args.prompts)])
    spec_lens = list(range(args.max_spec_len + 1))
    with tqdm(total=args.reps * len(batch_sizes) * len(spec_lens), desc="vLLM cells") as bar:
        measured = measure_cells(llm, prompts, batch_sizes, spec_lens, args.step_tokens, args.reps, progress=bar)
    prov = {"device": f"{platform.processor() or platform.machine()} CPU" if args.device == "cpu" else args.device,
            "dtype": args.dtype, "vllm": vllm_version(), "date": datetime.date.today().isoformat(),
            "command": "autospec " + " ".join(sys.argv[1:]),
            "method": f"median of {args.reps} shuffled rounds; a cell: batch_size prompts served together at fixed K "
                      f"for {args.step_tokens} new tokens, the median whole step while every row decodes",
            "settings": {"batch_sizes": batch_sizes, "max_spec_len": args.max_spec_len}}
    name = args.name or f"vllm-{target_name}-{drafter.replace(':', '')}-{args.dtype}"
    profile = vllm_profile(name, target_name, drafter, AutoConfig.from_pretrained(target_dir), measured,
                           args.max_spec_len, prov)
    profile.provenance["wall_s"] = round(time.time() - started, 1)
    profile.save(args.out)
    print(f"wrote {args.out}: whole-step ms per (batch_size, K) through vLLM {vllm_version()}, acceptance per "
          f"position {list(profile.acceptance_per_pos)}, in {profile.provenance['wall_s']} s")
    for b in batch_sizes:
        print(f"  b={b}: " + " / ".join(f"K={k} {measured['step_ms'].get((b, k), float('nan')):.1f}" for k in spec_lens))
    return 0


def resolve_pair(target: str, draft: str, work_dir: Path) -> tuple[Path, str, str, str]:
    """(target folder, its short name, the drafter's name, what engine_args takes as the draft)."""
    from autospec.backends.draft_model import hf_draft_folder
    from autospec.backends.models import target_folder

    target_dir, target_name = target_folder(target)
    if draft == "ngram":
        return target_dir, target_name, "ngram", "ngram"
    if Path(draft).is_dir():
        return target_dir, target_name, Path(draft).name, str(draft)
    folder = hf_draft_folder(draft, target_dir, work_dir / f"vllm-draft-{target_name}-{draft.replace(':', '')}")
    return target_dir, target_name, draft, str(folder)
