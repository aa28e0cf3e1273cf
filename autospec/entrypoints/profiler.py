"""`autospec profile`: measure a target/draft pair on this machine and write a cost profile YAML.

Contract:
- The target's step time is measured for every (batch_size, q = 1..max_spec_len + 1), the draft's
  for q = 1, 2, each as ONE forward over a KV cache of `context_len` tokens through the same ragged
  cache the HF backend uses, with the same CPU weight prepacking (so the numbers are what a step
  costs there). Measurement runs in
  rounds, each visiting every cell once in a shuffled order, after warm-up rounds; a cell's value
  is the median of its rounds, its spread the interquartile range. Slow drifts of the machine's
  speed therefore spread over all cells instead of bending the surface.
- Cells are ordered so that the ones a profile needs (target q = 1, 2 and draft q = 1 at every
  batch size) come first: if `time_budget_s` runs out, the profile is still complete and the cost
  model predicts the rest.
- The draft's per-position acceptance is measured by running the HF backend greedily at spec_len =
  max_spec_len on a prompt set (the shipped one by default).
- Whole steps: at every batch size, runs of the HF backend with the `sweep` controller time real
  steps at the spec_lens of `--step-spec-lens` (default 0..min(4, max_spec_len); must include 0),
  each once per sweep of consecutive steps in a random order, on the prompt set, for
  `--step-rounds` rounds. Each sweep is scaled so that its plain step costs what the cells predict
  (the host's speed drifts between the cell timing and the runs, and within a run; a sweep lasts a
  fraction of a second), and a step's residual is its scaled wall time minus the forwards the
  cells predict for it at its actual verify width. The median residual per (batch_size, spec_len)
  is the profile's `step_overhead` (0 at spec_len 0 by construction), which the cost model adds to
  every step (and extends along a line in spec_len).
- `--engine vllm` measures through vLLM instead (`autospec.integrations.vllm_profile`, in vLLM's
  environment): whole steps per (batch_size, K) and acceptance, in the same YAML format.
- The YAML records device, dtype, library versions, date, command, settings, every raw timing, the
  target's shape (checked when the profile is used with a model) and the cost model's held-out
  fit error.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autospec.acceptance import acceptance_from_records

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16)


def measure_acceptance(target: Any, draft: Any, tokenizer: Any, prompts: list[dict], max_spec_len: int,
                       new_tokens: int) -> dict[str, Any]:
    """Per-position conditional acceptance of greedy speculation at spec_len = max_spec_len."""
    from autospec.entrypoints.engine import AutoSpec
    from autospec.prompts import chat_token_ids

    engine = AutoSpec(target, draft, controller=f"fixed:{max_spec_len}", max_spec_len=max_spec_len,
                      max_batch_size=8, records_window=None)
    ids = chat_token_ids(tokenizer, [p["prompt"] for p in prompts])
    engine.serve(ids, max_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id, progress=False)
    return acceptance_from_records(engine.records, max_spec_len)


def measure_step_overhead(target: Any, draft: Any, tokenizer: Any, prompts: list[dict], cells_model: Any,
                          spec_lens: list[int], new_tokens: int, rounds: int) -> tuple[dict[int, dict[int, float]], dict]:
    """batch_size -> {spec_len: median residual ms over every sweep of every round}, and the sweep counts."""
    from tqdm.auto import tqdm

    from autospec.prompts import chat_token_ids

    ids = chat_token_ids(tokenizer, [p["prompt"] for p in prompts])
    sizes = cells_model.profile.batch_sizes
    samples: dict[tuple[int, int], list[float]] = {(b, s): [] for b in sizes for s in spec_lens}
    with tqdm(total=rounds * len(sizes), desc="whole steps", unit="run") as bar:
        for r in range(rounds):
            for b in random.Random(r).sample(sizes, len(sizes)):
                rows = [ids[(i + r * b) % len(ids)] for i in range(b)]
                for s, ms in sweep_residuals_ms(target, draft, rows, cells_model, spec_lens, new_tokens, seed=r):
                    samples[(b, s)].append(ms)
                bar.update()
    empty = sorted(b for (b, _), v in samples.items() if not v)
    if empty:
        raise ValueError(f"--step-tokens {new_tokens} left no complete sweep at batch size {empty[0]}; raise it")
    table = _nest({k: round(statistics.median(v), 4) for k, v in samples.items()})
    return table, _nest({k: len(v) for k, v in samples.items()})


def sweep_residuals_ms(target: Any, draft: Any, rows: list[list[int]], cells_model: Any, spec_lens: list[int],
                       new_tokens: int, seed: int) -> list[tuple[int, float]]:
    """(spec_len, residual ms) for each step of every complete sweep after the first, with every row
    still running: wall ms, scaled so the sweep's plain step costs the cells' T(b, 1), minus the
    forwards the cells predict at the step's verify width."""
    from autospec.controllers import SweepController
    from autospec.entrypoints.engine import AutoSpec

    top, b, n = max(spec_lens), len(rows), len(spec_lens)
    controller = SweepController(spec_lens=spec_lens, max_spec_len=top, seed=seed)
    engine = AutoSpec(target, draft, controller=controller, max_spec_len=top, max_batch_size=b, cpu_prepack=None,
                      records_window=None)
    engine.serve(rows, max_new_tokens=new_tokens, eos_token_id=-1, progress=False)
    out = []
    records = engine.records                                # one copy of the window, not one per sweep
    for start in range(n, len(records) - n + 1, n):
        sweep = {r.spec_len: r for r in records[start:start + n] if r.batch_size == b}
        if len(sweep) < n:                                  # clamped near the end, or rows finished
            continue
        scale = cells_model.target_time_s(b, 1) / sweep[0].step_time_s
        out += [(s, 1e3 * (r.step_time_s * scale - cells_model.step_time_at_width_s(b, s, r.verified_width)))
                for s, r in sweep.items()]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                   help="hf: autospec's own backend; vllm: whole steps through vLLM (run in vLLM's environment, "
                        "autospec.integrations.vllm_profile)")
    p.add_argument("--target", default="smollm2", help="'smollm2' (the embedded model) or a local HF checkpoint folder")
    p.add_argument("--draft", default="first:4", help="'ngram', 'first:N' (target's first N layers), 'distilled' or a folder")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--max-spec-len", type=int, default=8)
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds over all cells")
    p.add_argument("--reps", type=int, default=5, help="measured rounds over all cells")
    p.add_argument("--time-budget", type=float, default=480.0, help="seconds for step timing (essential cells always run)")
    p.add_argument("--prompts", type=Path, default=None, help="JSONL prompt file for acceptance (default: shipped)")
    p.add_argument("--acceptance-tokens", type=int, default=48, help="new tokens per prompt when measuring acceptance")
    p.add_argument("--step-spec-lens", type=int, nargs="*", default=None,
                   help="spec_lens swept in the whole-step runs (default 0..min(4, max_spec_len); 0 and at least "
                        "one more; none: --step-spec-lens with no value)")
    p.add_argument("--step-tokens", type=int, default=96, help="new tokens per row in each whole-step run")
    p.add_argument("--step-rounds", type=int, default=2, help="whole-step runs per batch size")
    p.add_argument("--name", default=None)
    p.add_argument("--out", type=Path, required=True)


def load_pair(args: argparse.Namespace):
    import torch

    from autospec.backends.draft_model import make_draft
    from autospec.backends.models import load_target

    dtype = getattr(torch, args.dtype)
    target, tokenizer, target_name = load_target(args.target, args.dtype, args.device)
    if Path(args.draft).is_dir():
        from transformers import AutoModelForCausalLM
        draft = AutoModelForCausalLM.from_pretrained(args.draft, dtype=dtype, local_files_only=True).to(args.device).eval()
    else:
        draft = make_draft(args.draft, target)
    return target, tokenizer, target_name, draft


def check_args(args: argparse.Namespace) -> None:
    if any(b < 1 for b in args.batch_sizes) or not args.batch_sizes:
        raise ValueError(f"--batch-sizes must be positive integers, got {args.batch_sizes}")
    if not 1 <= args.max_spec_len <= 32:
        raise ValueError(f"--max-spec-len must be in 1..32, got {args.max_spec_len}")
    if args.context_len < 1 or args.reps < 1 or args.warmup < 0 or args.time_budget <= 0:
        raise ValueError("--context-len and --reps must be >= 1, --warmup >= 0, --time-budget > 0")
    if args.step_spec_lens is None:
        args.step_spec_lens = list(range(min(4, args.max_spec_len) + 1))
    spec_lens = args.step_spec_lens
    if args.step_rounds < 1:
        raise ValueError(f"--step-rounds must be >= 1, got {args.step_rounds}")
    if spec_lens and (len(set(spec_lens)) < 2 or 0 not in spec_lens or not all(0 <= s <= args.max_spec_len for s in spec_lens)):
        raise ValueError(f"--step-spec-lens needs 0 and at least one more distinct value in 0..{args.max_spec_len}, "
                         f"got {spec_lens}")
    if args.step_tokens < 8:
        raise ValueError(f"--step-tokens must be >= 8, got {args.step_tokens}")


# Flags only autospec's own backend reads: `--engine vllm` measures whole steps its own way.
HF_ONLY_FLAGS = ("context_len", "warmup", "time_budget", "acceptance_tokens", "step_spec_lens", "step_rounds")


def hf_only_flags_given(args: argparse.Namespace) -> list[str]:
    """The HF-only flags set to something other than their defaults, as the user typed them."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--out", "-"]))
    return [f"--{name.replace('_', '-')}" for name in HF_ONLY_FLAGS if getattr(args, name) != defaults[name]]


def run_profile(args: argparse.Namespace) -> int:
    if args.engine == "vllm":
        given = hf_only_flags_given(args)
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --engine hf; --engine vllm measures whole steps "
                             "of --step-tokens new tokens per cell (--reps rounds)")
        from autospec.integrations.vllm_profile import run_vllm_profile
        return run_vllm_profile(args)
    return run_hf_profile(args)


def run_hf_profile(args: argparse.Namespace) -> int:
    from autospec.backends.timing import CellTimer, cell_order, measure_cells, model_shape, summarize_cells
    from autospec.cost_model import CostModel
    from autospec.profiles import Profile
    from autospec.prompts import load_prompts

    check_args(args)
    prompts = load_prompts(path=args.prompts)
    started = time.time()
    target, tokenizer, target_name, draft = load_pair(args)
    draft_name = args.draft if isinstance(draft, str) or draft is None else f"{target_name}-{args.draft.replace(':', '')}"
    batch_sizes = sorted(set(args.batch_sizes))
    timers = {"target": CellTimer(target, batch_sizes, args.max_spec_len + 1, args.context_len)}
    has_draft = not isinstance(draft, str)
    if has_draft:
        timers["draft"] = CellTimer(draft, batch_sizes, 2, args.context_len)
    cells = cell_order(batch_sizes, args.max_spec_len + 1, has_draft)
    samples = measure_cells(timers, cells, args.warmup, args.reps, args.time_budget)
    target_ms, target_iqr, target_raw = summarize_cells(samples, "target")
    draft_ms, draft_iqr, draft_raw = summarize_cells(samples, "draft")
    acceptance = measure_acceptance(target, draft, tokenizer, prompts, args.max_spec_len, args.acceptance_tokens)
    profile = Profile(
        name=args.name or f"{platform.node() or 'host'}-{target_name}-{draft_name}-{args.dtype}",
        target_model=target_name, draft_model=draft_name if has_draft else str(draft),
        context_len=args.context_len, target_step_ms=target_ms, draft_step_ms=draft_ms,
        provenance=provenance(args), acceptance_per_pos=tuple(acceptance["per_pos"]),
        coverage_per_pos=None if has_draft else tuple(acceptance["coverage_per_pos"]),
        extra={"target_shape": model_shape(target),
               "spread_ms": {"target": _nest(target_iqr), "draft": _nest(draft_iqr)},
               "raw_ms": {"target": _nest(target_raw), "draft": _nest(draft_raw)},
               "acceptance_detail": {k: v for k, v in acceptance.items() if k not in ("per_pos", "coverage_per_pos")}})
    step_spec_lens = sorted(set(args.step_spec_lens))
    if step_spec_lens:
        overhead, sweeps = measure_step_overhead(target, draft, tokenizer, prompts, CostModel(profile),
                                                 step_spec_lens, args.step_tokens, args.step_rounds)
        profile = dataclasses.replace(profile, step_overhead_ms=overhead,
                                      extra={**profile.extra, "step_overhead_sweeps": sweeps})
    model = CostModel(profile)
    fit = model.fit_error()
    profile.provenance["fit_error"] = {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in fit.items()}
    profile.provenance["wall_s"] = round(time.time() - started, 1)
    profile.save(args.out)
    print(f"wrote {args.out}: {len(target_ms)} target cells, {len(draft_ms)} draft cells, "
          f"acceptance per position {acceptance['per_pos']}, in {profile.provenance['wall_s']} s")
    if profile.step_overhead_ms:
        print("whole steps beyond their forwards, ms at spec_len " + "/".join(map(str, step_spec_lens)) + ": "
              + ", ".join(f"b={b}: " + "/".join(f"{ms:.1f}" for ms in row.values())
                          for b, row in profile.step_overhead_ms.items()))
    for part, err in fit.items():
        print(f"{part}: held-out MAPE {err['mape_pct']:.1f}% (max {err['max_ape_pct']:.1f}%) over {err['num_cells']} cells")
    return 0


def _nest(cells: dict[tuple[int, int], Any]) -> dict[int, dict[int, Any]]:
    out: dict[int, dict[int, Any]] = {}
    for (b, q), v in sorted(cells.items()):
        out.setdefault(b, {})[q] = v
    return out


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"device": device, "dtype": args.dtype, "torch": str(torch.__version__), "transformers": str(transformers.__version__),
            "date": datetime.date.today().isoformat(), "command": "autospec " + " ".join(sys.argv[1:]),
            "method": f"median of {args.reps} rounds (after {args.warmup} warm-up) of one forward per cell over a "
                      f"{args.context_len}-token KV cache, cells shuffled per round",
            "settings": {"batch_sizes": args.batch_sizes, "max_spec_len": args.max_spec_len,
                         "time_budget_s": args.time_budget}}


COMMANDS = {"profile": (add_arguments, run_profile)}
