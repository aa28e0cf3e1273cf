"""autospec's online controller inside vLLM against every static K, the exported table and plain decoding.

Run in vLLM's environment (`bash scripts/vllm-env.sh`):

    .venv-vllm/bin/python benchmarks/vllm_online.py --rounds 3 --out benchmarks/results/vllm_online_cpu.json

Workload: the shipped chat prompts (chat template), greedy, `--new-tokens` each with EOS ignored,
served in phases of fixed concurrency 1 -> 2 -> 4 -> 8 -> 16 -> 8 -> 4 -> 2 -> 1 (a closed loop:
each finished request's slot takes the phase's next one; max(2, c) requests per phase), so the
number of decode rows sweeps up and down while requests arrive over time.

Engines: plain vLLM (no speculation), n-gram drafting, and a draft model (the shipped distilled
draft written as an HF folder: its layers on the target's full head). On each speculating engine
autospec's scheduler plays, one after another on the same engine in a new random order per round:
fixed:0..K_max (fixed K at every batch size), `table` (the schedule `autospec plan` exports from the
vLLM profile, applied by vLLM's own lookup), and `auto` (autospec's default controller with the
vLLM-measured profile as prior; a fresh controller per run, so every number is a first call).
Each engine runs in a process of its own (vLLM keeps one engine per process), the three in a new
random order per round. The priors are measured first with `autospec profile --engine vllm`
(`--profile-*` to reuse). Checks: every mode's tokens against plain vLLM's (greedy: identical).
Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONCURRENCY = (1, 2, 4, 8, 16, 8, 4, 2, 1)


def workload(prompts: list[list[int]]) -> list[tuple[int, list[list[int]]]]:
    """(concurrency, prompts) phases, prompts taken round-robin from the prompt set."""
    phases, i = [], 0
    for c in CONCURRENCY:
        n = max(2, c)
        phases.append((c, [prompts[(i + j) % len(prompts)] for j in range(n)]))
        i += n
    return phases


def chat_prompts(target_dir: str) -> list[list[int]]:
    from transformers import AutoTokenizer

    from autospec.prompts import chat_token_ids, load_prompts
    tokenizer = AutoTokenizer.from_pretrained(target_dir, local_files_only=True)
    return chat_token_ids(tokenizer, [p["prompt"] for p in load_prompts()])


# --- worker: one engine, every mode, in this process ------------------------------------------------
def run_worker(spec: dict) -> dict:
    from autospec.controllers import build_controller
    from autospec.cost_model import CostModel
    from autospec.integrations.vllm import in_process_llm, in_process_scheduler, run_phases, set_policy
    from autospec.integrations.vllm_profile import RecordList, engine_args

    draft, k_max = spec["draft"], spec["max_spec_len"]
    llm = in_process_llm(**engine_args(spec["target_dir"], draft, k_max, max(CONCURRENCY), spec["dtype"]))
    phases = workload(chat_prompts(spec["target_dir"]))
    run_phases(llm, [(4, phases[4][1][:4])], 8)                          # warm-up (first-call allocations)
    if draft is None:
        return {"plain": _timed(run_phases(llm, phases, spec["new_tokens"]))}
    scheduler, sink = in_process_scheduler(llm), RecordList()
    scheduler.autospec.sinks.append(sink)
    cost_model = CostModel.from_profile(spec["profile"])
    out = {}
    modes = spec["modes"]
    random.Random(spec["seed"]).shuffle(modes)
    for mode in modes:
        if mode == "table":
            set_policy(scheduler, None, schedule=spec["table"])
        else:
            controller = build_controller(mode, max_spec_len=k_max, cost_model=cost_model if mode == "auto" else None,
                                          seed=spec["seed"])
            set_policy(scheduler, controller, schedule=[[1, max(CONCURRENCY), k_max]], cost_model=cost_model)
        sink.records = []
        decisions = scheduler.autospec
        decisions.choose_time_s = decisions.observe_time_s = 0.0
        result = _timed(run_phases(llm, phases, spec["new_tokens"]))
        result.update(_steps_summary(sink.records, decisions))
        out[mode] = result
    return out


def _timed(result: dict) -> dict:
    tokens = sum(len(t) for t in result["tokens"])
    return {"tokens": result["tokens"], "wall_s": result["wall_s"], "phase_s": result["phase_s"],
            "tokens_per_s": tokens / result["wall_s"]}


def _steps_summary(records: list, decisions) -> dict:
    """K played per decode-row count, and the controller's cost per step against the median step."""
    choices: dict[str, dict[str, int]] = {}
    for r in records:
        row = choices.setdefault(str(r.batch_size), {})
        row[str(r.spec_len)] = row.get(str(r.spec_len), 0) + 1
    steps = max(1, len(records))
    median_step_s = statistics.median([r.verify_time_s for r in records]) if records else float("nan")
    per_step_s = (decisions.choose_time_s + decisions.observe_time_s) / steps
    return {"choices": choices, "steps": len(records), "median_step_ms": 1000 * median_step_s,
            "controller_us_per_step": 1e6 * per_step_s, "controller_fraction": per_step_s / median_step_s}


# --- parent: priors, table, rounds --------------------------------------------------------------------
def measure_prior(target: str, draft: str, out: Path, dtype: str, k_max: int, reps: int,
                  batch_sizes: list[int]) -> Path:
    cmd = [sys.executable, "-m", "autospec.entrypoints.cli", "profile", "--engine", "vllm", "--target", target,
           "--draft", draft, "--dtype", dtype, "--max-spec-len", str(k_max), "--reps", str(reps),
           "--step-tokens", "16", "--batch-sizes", *map(str, batch_sizes), "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def exported_schedule(profile: str, k_max: int) -> list[list[int]]:
    """The ranges `autospec plan --export vllm` writes for this profile (num_speculative_tokens_per_batch_size;
    a plan with K = 0 everywhere, which the export refuses, is played as that)."""
    from autospec.cost_model import CostModel
    from autospec.plan import acceptance_vector, policy_ranges

    model = CostModel.from_profile(profile)
    ranges = policy_ranges(model, acceptance_vector(model.profile.acceptance_per_pos, k_max), max(CONCURRENCY), k_max)
    return [list(r) for r in ranges]


def run_engine(spec: dict, work: Path) -> dict:
    spec_path, out_path = work / f"spec-{spec['engine']}.json", work / f"out-{spec['engine']}.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, __file__, "--worker", str(spec_path), "--worker-out", str(out_path)], check=True)
    return json.loads(out_path.read_text())


def summarize(rounds: list[dict], modes: list[str]) -> dict:
    """Per drafter: median tokens/s per mode, the best static K in hindsight, auto's paired ratios."""
    summary = {}
    for engine in ("ngram", "draft"):
        med = {m: statistics.median(r[engine][m]["tokens_per_s"] for r in rounds) for m in modes}
        fixed = {m: v for m, v in med.items() if m.startswith("fixed:") and m != "fixed:0"}
        best = max(fixed, key=fixed.get)
        per_round = {
            "auto_over_best_static": [r[engine]["auto"]["tokens_per_s"] / r[engine][best]["tokens_per_s"] for r in rounds],
            "auto_over_table": [r[engine]["auto"]["tokens_per_s"] / r[engine]["table"]["tokens_per_s"] for r in rounds],
            "auto_over_plain": [r[engine]["auto"]["tokens_per_s"] / r["plain"]["plain"]["tokens_per_s"] for r in rounds]}
        summary[engine] = {"median_tokens_per_s": {**med, "plain": statistics.median(
            r["plain"]["plain"]["tokens_per_s"] for r in rounds)}, "best_static": best,
            "per_round": per_round, **{k: statistics.median(v) for k, v in per_round.items()},
            "controller_fraction_median": statistics.median(r[engine]["auto"]["controller_fraction"] for r in rounds),
            "controller_us_per_step_median": statistics.median(r[engine]["auto"]["controller_us_per_step"]
                                                               for r in rounds)}
    return summary


def mismatches(rounds: list[dict]) -> dict[str, int]:
    """Requests whose tokens differ from plain vLLM's in the same round, per engine/mode."""
    out = {}
    for r in rounds:
        ref = r["plain"]["plain"]["tokens"]
        for engine in ("ngram", "draft"):
            for mode, res in r[engine].items():
                key = f"{engine}/{mode}"
                out[key] = out.get(key, 0) + sum(a != b for a, b in zip(res["tokens"], ref))
    return out


def print_table(summary: dict, modes: list[str]) -> None:
    cols = ["plain"] + modes
    print("| drafter | " + " | ".join(cols) + " | best static | auto / best static | auto / table | auto / plain |")
    print("|" + " --- |" * (len(cols) + 5))
    for engine, s in summary.items():
        tps = s["median_tokens_per_s"]
        print(f"| {engine} | " + " | ".join(f"{tps[c]:.1f}" for c in cols) + f" | {s['best_static']} | "
              f"{s['auto_over_best_static']:.3f} | {s['auto_over_table']:.3f} | {s['auto_over_plain']:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--max-spec-len", type=int, default=4)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--draft", default="distilled", help="first:N or distilled (written as an HF folder)")
    p.add_argument("--profile-ngram", default=None, help="a vLLM profile to reuse (default: measure one)")
    p.add_argument("--profile-draft", default=None)
    p.add_argument("--profile-reps", type=int, default=1)
    p.add_argument("--profile-batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/vllm_online_cpu.json"))
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.worker_out.write_text(json.dumps(run_worker(json.loads(args.worker.read_text()))))
        return
    started = time.time()
    from autospec.backends.models import converted_smollm2
    from autospec.integrations.vllm_profile import resolve_pair
    target_dir = str(converted_smollm2())
    work = Path(tempfile.mkdtemp(prefix="autospec-vllm-online-"))
    draft_dir = resolve_pair("smollm2", args.draft, work)[3]
    k = args.max_spec_len
    profiles = {"ngram": args.profile_ngram or str(measure_prior("smollm2", "ngram", work / "vllm-ngram.yaml",
                                                                 args.dtype, k, args.profile_reps, args.profile_batch_sizes)),
                "draft": args.profile_draft or str(measure_prior("smollm2", draft_dir, work / "vllm-draft.yaml",
                                                                 args.dtype, k, args.profile_reps, args.profile_batch_sizes))}
    tables = {e: exported_schedule(path, k) for e, path in profiles.items()}
    modes = [f"fixed:{i}" for i in range(k + 1)] + ["table", "auto"]
    drafts = {"plain": None, "ngram": "ngram", "draft": draft_dir}
    rounds = []
    for r in range(args.rounds):
        engines = list(drafts)
        random.Random(args.seed + r).shuffle(engines)
        result = {}
        for engine in engines:
            spec = {"engine": engine, "draft": drafts[engine], "target_dir": target_dir, "max_spec_len": k,
                    "dtype": args.dtype, "new_tokens": args.new_tokens, "modes": list(modes),
                    "profile": profiles.get(engine), "table": tables.get(engine), "seed": args.seed + 97 * r}
            result[engine] = run_engine(spec, work)
            print(f"round {r + 1}, {engine}: " + ", ".join(f"{m} {v['tokens_per_s']:.1f}" for m, v in
                                                           result[engine].items()), flush=True)
        rounds.append(result)
        write_results(args, rounds, modes, profiles, tables, started)        # after every round: a cut run keeps its rounds
    print_table(summarize(rounds, modes), modes)
    print("greedy tokens differing from plain vLLM (requests):", mismatches(rounds))


def write_results(args: argparse.Namespace, rounds: list[dict], modes: list[str], profiles: dict, tables: dict,
                  started: float) -> None:
    doc = {"command": "benchmarks/vllm_online.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()} {platform.processor()}", "date": time.strftime("%Y-%m-%d"),
           "rounds": len(rounds), "new_tokens": args.new_tokens, "concurrency": CONCURRENCY,
           "max_spec_len": args.max_spec_len, "profiles": {e: Path(v).name for e, v in profiles.items()},
           "tables": tables, "profile_docs": {e: _read_yaml(v) for e, v in profiles.items()},
           "summary": summarize(rounds, modes), "mismatches": mismatches(rounds),
           "wall_s": round(time.time() - started, 1),
           "per_round": [{e: {m: {kk: vv for kk, vv in v.items() if kk != "tokens"} for m, v in res.items()}
                          for e, res in r.items()} for r in rounds]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out} ({len(rounds)} rounds) after {doc['wall_s']} s", flush=True)


def _read_yaml(path: str) -> dict:
    import yaml
    return yaml.safe_load(Path(path).read_text())


if __name__ == "__main__":
    main()
