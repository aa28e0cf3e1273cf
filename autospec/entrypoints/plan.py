"""`autospec plan` and `autospec check-export`: the planning of `autospec.plan` from the command
line, and its export to engines.

Contract:
- Acceptance comes from `--acceptance A` (i.i.d., in (0, 1)), else from `--from-run` (per-position
  rates estimated from a run's step log), else from the profile's measured per-position rates;
  with none of them the command says so.
- The export is validated (`autospec.export.validate_file`) before it is printed or written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from autospec.cost_model import CostModel
from autospec.export import ENGINES, TRTLLM_SEMANTICS, ExportError, to_sglang, to_trtllm, to_vllm, validate_file
from autospec.plan import (DEFAULT_MARGIN, acceptance_from_run, acceptance_vector, converged_spec_lens,
                           format_plan, plan_rows, policy_ranges)
from autospec.types import StepRecord


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="shipped profile name or profile YAML")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--acceptance", type=float, help="i.i.d. acceptance rate in (0, 1)")
    source.add_argument("--from-run", type=Path, help="a run folder or steps.jsonl: acceptance and converged spec_lens")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="rows to print (default: the profile's)")
    p.add_argument("--max-batch-size", type=int, default=None, help="export ranges up to here (default: largest measured)")
    p.add_argument("--max-spec-len", type=int, default=8)
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="goodput margin for near-ties and range merging")
    p.add_argument("--export", choices=ENGINES, default=None)
    add_trtllm_semantics(p)
    p.add_argument("--method", default="draft_model", help="vLLM speculative method written in the export")
    p.add_argument("--draft-model", default=None, help="draft model name written in the vLLM export")
    p.add_argument("--out", type=Path, default=None, help="write the export here (default: print it)")



def resolve_acceptance(args: argparse.Namespace, model: CostModel) -> tuple[np.ndarray, list[StepRecord]]:
    records: list[StepRecord] = []
    if args.acceptance is not None:
        return acceptance_vector(args.acceptance, args.max_spec_len), records
    if args.from_run is not None:
        return acceptance_from_run(args.from_run, args.max_spec_len)
    if model.profile.acceptance_per_pos:
        return acceptance_vector(model.profile.acceptance_per_pos, args.max_spec_len), records
    raise ValueError(f"profile {model.name} has no measured acceptance: give --acceptance A or --from-run RUN")



def run_plan(args: argparse.Namespace) -> int:
    if not 0.0 <= args.margin < 0.5:
        raise ValueError(f"--margin must be in [0, 0.5), got {args.margin}")
    if not 1 <= args.max_spec_len <= 32:
        raise ValueError(f"--max-spec-len must be in 1..32, got {args.max_spec_len}")
    model = CostModel.from_profile(args.profile)
    acceptance, records = resolve_acceptance(args, model)
    batch_sizes = args.batch_sizes or (sorted({r.batch_size for r in records}) if records else model.profile.batch_sizes)
    rows = plan_rows(model, acceptance, batch_sizes, args.max_spec_len, args.margin)
    for b, s in converged_spec_lens(records).items():
        for row in rows:
            if row.batch_size == b:
                row.converged_spec_len = s
    print(format_plan(model, acceptance, rows))
    if args.export:
        print(write_export(args, model, acceptance))
    return 0



def write_export(args: argparse.Namespace, model: CostModel, acceptance: np.ndarray) -> str:
    max_batch = args.max_batch_size or model.profile.batch_sizes[-1]
    ranges = policy_ranges(model, acceptance, max_batch, args.max_spec_len, args.margin)
    if args.export == "vllm":
        document = to_vllm(ranges, method=args.method, model=args.draft_model)
    elif args.export == "sglang":
        near = {lo: plan_rows(model, acceptance, [lo], args.max_spec_len, args.margin)[0].near_best for lo, _, _ in ranges}
        document = to_sglang(ranges, near)
    else:
        document = to_trtllm(ranges, args.trtllm_semantics)
    text = json.dumps(document, indent=1)
    validate_file(text, args.export, args.trtllm_semantics)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        return f"wrote {args.export} policy ({len(ranges)} ranges) to {args.out}"
    return text



def add_trtllm_semantics(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trtllm-semantics", choices=TRTLLM_SEMANTICS, default="upper",
                   help="TensorRT-LLM draft_len_schedule keys: upper bounds (current releases, batch sizes above "
                        "the last key draft nothing) or lower bounds (releases before PR #10860)")


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path)
    p.add_argument("--engine", choices=ENGINES, required=True)
    add_trtllm_semantics(p)



def run_check(args: argparse.Namespace) -> int:
    try:
        result = validate_file(args.file.read_text(encoding="utf-8"), args.engine, args.trtllm_semantics)
    except ExportError as exc:
        print(f"{args.file}: rejected for {args.engine}: {exc}")
        return 1
    print(f"{args.file}: valid {args.engine} policy: {result}")
    return 0


COMMANDS = {"plan": (add_arguments, run_plan), "check-export": (add_check_arguments, run_check)}
