"""The prior without asking: a cost profile for this target/drafter pair on this machine, found or
measured on first use.

Contract:
- `find_prior(target, draft, max_batch_size, max_spec_len)` -> `Prior(cost_model, source)`, trying
  in order:
  1. the cache: `<cache_root()>/<key>.yaml` ($AUTOSPEC_PROFILE_CACHE, else
     $AUTOSPEC_CACHE/profiles, else ~/.cache/autospec/profiles), where the
     key hashes the pair's `descriptor` (target shape, dtype, attention implementation; device: CPU
     model and thread count, or the GPU's name; drafter kind and, for a model draft, its shape and
     dtype; torch version; this module's FORMAT). Loaded in well under a second. An entry that
     is unreadable, invalid, recorded for another descriptor, or too small (fewer batch sizes or
     verify widths than asked for) is ignored with a warning naming the file, and replaced.
  2. a shipped profile whose `match` section (device, dtype, target and draft shape) equals this
     pair's: only profiles that name the exact device carry one (the H100 / H200 ones). The CPU
     profiles shipped for SmolLM2 carry none: a VM's speed drifts between hosts (1.8x between the
     day they were measured and today on this project's VM), so a CPU is always calibrated.
  3. calibration: one forward of the target at each (batch size, q) cell for batch sizes 1, 2, 4,
     ... up to `max_batch_size` and q = 1..max_spec_len + 1, and of the draft (q = 1) at each batch
     size, over a `CONTEXT_LEN`-token cache (`backends.timing`: the engine's own cache and weight
     packing; one prefilled row copied into every batch size's cache), `REPS` rounds after one
     warm-up of the cells a profile needs (target q = 1, 2; draft q = 1), then the rest while
     `BUDGET_S` from the start lasts, so a slow machine measures fewer optional cells rather than
     taking longer. About 5-13 s for SmolLM2-135M + the shipped draft on this project's 2-core
     CPUs (bf16 native or, on AVX2-only hosts, emulated); one INFO log line before and one after.
     A batch size that runs out of memory is skipped: the cost model extrapolates it, and the
     source and a warning name it. Written to the cache atomically.
- Acceptance is not calibrated (it depends on the prompts): a calibrated profile has none, so
  the controller starts from its default and learns the drafter's acceptance from its first steps.
- `Prior.source` says where the prior came from (`kind`: "cache" | "shipped" | "calibrated",
  the file, the key, seconds spent, extrapolated batch sizes); the engine shows it in
  `summary()["prior"]` and the run metadata.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from autospec.cost_model import CostModel
from autospec.profiles import Profile, ProfileError, load_profile, shipped_profiles

from .attention import text_config
from .timing import CellTimer, cell_order, measure_cells, model_shape, summarize_cells

FORMAT = 1
CONTEXT_LEN = 96
REPS = 3
BUDGET_S = 6.0
SHAPE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size")


@dataclass
class Prior:
    cost_model: CostModel
    source: dict[str, Any] = field(default_factory=dict)


def cache_root() -> Path:
    """Where calibrated profiles are kept: $AUTOSPEC_PROFILE_CACHE, else $AUTOSPEC_CACHE/profiles
    (default ~/.cache/autospec/profiles)."""
    if os.environ.get("AUTOSPEC_PROFILE_CACHE"):
        return Path(os.environ["AUTOSPEC_PROFILE_CACHE"])
    return Path(os.environ.get("AUTOSPEC_CACHE", Path.home() / ".cache" / "autospec")) / "profiles"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name with the thread count torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model_name()}, {torch.get_num_threads()} threads"


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _shape(model: torch.nn.Module) -> dict[str, Any]:
    config = text_config(model)
    return {k: getattr(config, k, None) for k in SHAPE_FIELDS}


def _dtype(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def descriptor(target: torch.nn.Module, draft: Any) -> dict[str, Any]:
    """What a step time depends on: the models' shapes and dtypes, the device, the versions."""
    device = next(target.parameters()).device
    drafter: Any = draft if isinstance(draft, str) or draft is None else {"shape": _shape(draft), "dtype": _dtype(draft)}
    return {"format": FORMAT, "torch": str(torch.__version__), "device": device_name(device),
            "target": {"shape": _shape(target), "dtype": _dtype(target),
                       "attn_implementation": getattr(text_config(target), "_attn_implementation", None)},
            "drafter": drafter}


def cache_key(desc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... below max_batch_size, and max_batch_size itself."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch_size]


def find_prior(target: torch.nn.Module, draft: Any, max_batch_size: int, max_spec_len: int,
               root: Path | None = None) -> Prior:
    """The cached profile, else a matching shipped one, else a calibration (cached for next time)."""
    desc = descriptor(target, draft)
    path = (root or cache_root()) / f"{cache_key(desc)}.yaml"
    cached = _load_cached(path, desc, max_batch_size, max_spec_len)
    if cached is not None:
        return cached
    shipped = shipped_match(match_fields(target, draft, desc))
    if shipped is not None:
        return shipped
    prior = calibrate(target, draft, max_batch_size, max_spec_len, desc)
    _save(prior.cost_model.profile, path)
    prior.source["path"] = str(path)
    return prior


def _load_cached(path: Path, desc: dict[str, Any], max_batch_size: int, max_spec_len: int) -> Prior | None:
    """The cache entry when it is valid, for this descriptor, and covers what is asked; else None
    (with a warning naming the file when there was one)."""
    if not path.exists():
        return None
    t0 = time.perf_counter()
    try:
        profile = load_profile(path)
    except (ProfileError, OSError, UnicodeDecodeError) as exc:
        logger.warning(f"ignoring the cached cost profile {path}: {exc}; re-calibrating")
        return None
    recorded = profile.extra.get("calibration", {}).get("descriptor")
    problem = _coverage_problem(profile, max_batch_size, max_spec_len) if recorded == desc else \
        "it was measured for another model, device or version"
    if problem:
        logger.warning(f"ignoring the cached cost profile {path}: {problem}; re-calibrating")
        return None
    source = {"kind": "cache", "path": str(path), "key": path.stem, "seconds": round(time.perf_counter() - t0, 3),
              "extrapolated_batch_sizes": profile.extra["calibration"].get("extrapolated_batch_sizes", [])}
    return Prior(CostModel(profile), source)


def _coverage_problem(profile: Profile, max_batch_size: int, max_spec_len: int) -> str | None:
    asked = profile.extra.get("calibration", {})
    if asked.get("max_batch_size", 0) < max_batch_size or asked.get("max_spec_len", -1) < max_spec_len:
        return (f"it covers batch sizes up to {asked.get('max_batch_size')} and spec_len up to "
                f"{asked.get('max_spec_len')}, fewer than the {max_batch_size} and {max_spec_len} asked for")
    return None


def match_fields(target: torch.nn.Module, draft: Any, desc: dict[str, Any]) -> dict[str, Any]:
    """What a shipped profile's `match` section must equal for this pair on this device."""
    return {"device": desc["device"], "dtype": desc["target"]["dtype"], "target_shape": model_shape(target),
            "draft": draft if isinstance(draft, str) or draft is None else model_shape(draft)}


def shipped_match(wanted: dict[str, Any]) -> Prior | None:
    """A shipped profile measured on this device for this pair (its `match` section equals `wanted`)."""
    for name in shipped_profiles():
        profile = load_profile(name)
        if profile.extra.get("match") == wanted:
            return Prior(CostModel(profile), {"kind": "shipped", "path": name, "key": name, "seconds": 0.0,
                                              "extrapolated_batch_sizes": []})
    return None


def calibrate(target: torch.nn.Module, draft: Any, max_batch_size: int, max_spec_len: int,
              desc: dict[str, Any] | None = None) -> Prior:
    """Time the target's and the draft's forwards at a few cells; a profile of them (no acceptance)."""
    desc = desc or descriptor(target, draft)
    sizes = calibration_batch_sizes(max_batch_size)
    logger.info(f"calibrating the cost model for {type(target).__name__} + {_draft_label(draft)} on "
                f"{desc['device']} (first use; cached for later processes)")
    t0 = time.perf_counter()
    timers = {"target": CellTimer(target, sizes, max_spec_len + 1, CONTEXT_LEN)}
    has_draft = isinstance(draft, torch.nn.Module)
    if has_draft:
        timers["draft"] = CellTimer(draft, sizes, 1, CONTEXT_LEN)
    cells = [c for c in cell_order(sizes, max_spec_len + 1, has_draft) if c[2] == 1 or c[0] == "target"]
    samples = measure_cells(timers, cells, warmup=1, reps=REPS, budget_s=BUDGET_S, desc="calibrating",
                            essentials_first=True)
    target_ms, draft_ms, dropped = _complete_cells(samples, sizes, has_draft)
    seconds = time.perf_counter() - t0
    profile = _calibrated_profile(target, draft, desc, target_ms, draft_ms, max_batch_size, max_spec_len,
                                  dropped, seconds)
    if dropped:
        logger.warning(f"calibration: batch sizes {dropped} did not fit in memory; the cost model extrapolates them")
    logger.info(f"calibrated in {seconds:.1f} s: {len(target_ms)} target and {len(draft_ms)} draft cells")
    return Prior(CostModel(profile), {"kind": "calibrated", "key": cache_key(desc), "seconds": round(seconds, 2),
                                      "extrapolated_batch_sizes": dropped})


def _draft_label(draft: Any) -> str:
    return draft if isinstance(draft, str) else f"a {type(draft).__name__} draft"


def _complete_cells(samples: dict, sizes: list[int], has_draft: bool) -> tuple[dict, dict, list[int]]:
    """(target ms, draft ms, dropped batch sizes): a batch size without every cell a profile needs
    (it ran out of memory) is dropped; ValueError when none is left."""
    target_ms, _, _ = summarize_cells(samples, "target")
    draft_ms, _, _ = summarize_cells(samples, "draft")
    needed = lambda b: {(b, 1), (b, 2)} <= set(target_ms) and (not has_draft or (b, 1) in draft_ms)   # noqa: E731
    dropped = [b for b in sizes if not needed(b)]
    if len(dropped) == len(sizes):
        raise ValueError("calibration could not run a single batch size (out of memory at batch size 1); "
                         "pass cost_model= a profile, or cost_model=None for a flat prior")
    target_ms = {k: v for k, v in target_ms.items() if k[0] not in dropped}
    draft_ms = {k: v for k, v in draft_ms.items() if k[0] not in dropped}
    return target_ms, draft_ms, dropped


def _calibrated_profile(target: torch.nn.Module, draft: Any, desc: dict[str, Any], target_ms: dict, draft_ms: dict,
                        max_batch_size: int, max_spec_len: int, dropped: list[int], seconds: float) -> Profile:
    import transformers
    draft_name = draft if isinstance(draft, str) else f"{type(draft).__name__}-{_shape(draft)['num_hidden_layers']}l"
    return Profile(
        name=f"calibrated-{cache_key(desc)}", target_model=type(target).__name__, draft_model=draft_name,
        context_len=CONTEXT_LEN, target_step_ms=target_ms, draft_step_ms=draft_ms,
        provenance={"device": desc["device"], "dtype": desc["target"]["dtype"], "torch": str(torch.__version__),
                    "transformers": str(transformers.__version__), "date": datetime.date.today().isoformat(),
                    "method": f"autospec first-use calibration: median of {REPS} rounds (after 1 warm-up) of one "
                              f"forward per cell over a {CONTEXT_LEN}-token KV cache", "wall_s": round(seconds, 2)},
        extra={"target_shape": model_shape(target),
               "calibration": {"descriptor": desc, "max_batch_size": max_batch_size, "max_spec_len": max_spec_len,
                               "extrapolated_batch_sizes": dropped}})


def _save(profile: Profile, path: Path) -> None:
    """Write atomically (a temporary file renamed over the entry); a failure only logs a warning."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        profile.save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning(f"could not cache the calibrated cost profile at {path}: {exc}")
        tmp.unlink(missing_ok=True)


def check_profile_matches(cost_model: CostModel, target: torch.nn.Module) -> None:
    """A profile that records its target's shape must describe this target."""
    mismatch = cost_model.profile.target_shape_mismatch(target.config)
    if mismatch:
        shape, actual = mismatch
        raise ValueError(f"profile {cost_model.name} was measured for a target with {shape}, but this target has "
                         f"{actual}: profile this model pair with `autospec profile`")
