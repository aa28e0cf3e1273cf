"""Measured cost profiles: a target's step time per (batch_size, q) and a draft's per batch size.

Contract:
- A profile YAML has `autospec_profile: 1`, `name`, `context_len`, `provenance` (where the numbers
  came from: device, dtype, library versions, date, command), `target: {model, step_ms}` and
  `draft: {model, step_ms}` where `step_ms[batch_size][q]` is the median milliseconds of ONE
  forward of `batch_size` rows with `q` new tokens each. `draft` may be `{model: ngram, step_ms: {}}`
  for a drafter with no model cost. Optional: `acceptance: {per_pos: [...], coverage_per_pos: [...]}`
  and `spread_ms`. `coverage_per_pos[j]` is the fraction of rows whose drafter proposed at least j + 1
  tokens (n-gram lookup drafts only where the context repeats; absent means every row always drafts
  spec_len tokens); the cost model uses it for the expected width of the verify block.
  Optional `step_overhead: {residual_ms: {batch_size: {spec_len: ms}}}`: what a whole speculative
  step through the backend costs beyond the forwards above (host bookkeeping, drafting's own work,
  attention over the holes rejected drafts leave in the cache), measured by `autospec profile` at
  the same spec_lens for every batch size. Values may be negative (a calibration: real steps ran
  faster than the cells predict). The older form `{fixed_ms: {batch_size: ms}, per_draft_ms:
  {batch_size: ms}}` is read as residuals fixed at spec_len 0 and fixed + per_draft at spec_len 1.
- `load_profile(name_or_path)` takes a shipped name (see `shipped_profiles()`) or a path and
  validates everything before returning; every problem raises `ProfileError` naming it.
- The target must have q = 1 and q = 2 at every measured batch size, and a model draft q = 1 at
  every one of those batch sizes: the cost model predicts the other cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

FORMAT_VERSION = 1
NO_COST_DRAFTS = ("ngram", "none")
Cells = dict[tuple[int, int], float]


class ProfileError(ValueError):
    """A profile that is malformed, incomplete or for another model pair."""


@dataclass(frozen=True)
class Profile:
    name: str
    target_model: str
    draft_model: str
    context_len: int
    target_step_ms: Cells
    draft_step_ms: Cells
    provenance: dict[str, Any] = field(default_factory=dict)
    acceptance_per_pos: tuple[float, ...] | None = None
    coverage_per_pos: tuple[float, ...] | None = None
    step_overhead_ms: dict[int, dict[int, float]] | None = None    # batch_size -> {spec_len: ms}
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({b for b, _ in self.target_step_ms})

    @property
    def draft_has_cost(self) -> bool:
        return self.draft_model not in NO_COST_DRAFTS

    def target_shape_mismatch(self, config: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(the target shape this profile recorded, `config`'s values of those fields) when they
        differ; None when they match or the profile records no shape."""
        shape = self.extra.get("target_shape")
        if not shape:
            return None
        actual = {k: getattr(config, k, None) for k in shape}
        return None if actual == shape else (shape, actual)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "autospec_profile": FORMAT_VERSION, "name": self.name, "context_len": self.context_len,
            "provenance": dict(self.provenance),
            "target": {"model": self.target_model, "step_ms": _nest(self.target_step_ms)},
            "draft": {"model": self.draft_model, "step_ms": _nest(self.draft_step_ms)},
        }
        if self.acceptance_per_pos is not None:
            d["acceptance"] = {"per_pos": [float(a) for a in self.acceptance_per_pos]}
        if self.coverage_per_pos is not None:
            d.setdefault("acceptance", {})["coverage_per_pos"] = [float(c) for c in self.coverage_per_pos]
        if self.step_overhead_ms:
            d["step_overhead"] = {"residual_ms": {b: {s: round(float(ms), 4) for s, ms in sorted(row.items())}
                                                  for b, row in sorted(self.step_overhead_ms.items())}}
        d.update(self.extra)
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def _nest(cells: Cells) -> dict[int, dict[int, float]]:
    out: dict[int, dict[int, float]] = {}
    for (b, q), ms in sorted(cells.items()):
        out.setdefault(b, {})[q] = float(ms)
    return out


def shipped_profiles() -> list[str]:
    folder = resources.files("autospec") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def profile_path(name_or_path: str | Path) -> Path:
    """A shipped profile's path by name, or the given path; ProfileError if neither exists."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ProfileError(f"profile file {candidate} does not exist")
        return candidate
    shipped = resources.files("autospec") / "profiles" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ProfileError(f"unknown profile {str(name_or_path)!r}; shipped: {', '.join(shipped_profiles())}, "
                           "or give a path to a .yaml file")
    return Path(str(shipped))


def load_profile(name_or_path: str | Path) -> Profile:
    path = profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
    return profile_from_dict(raw, source=str(path))


def profile_from_dict(raw: Any, source: str = "<dict>") -> Profile:
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {source}: expected a mapping at the top level, got {type(raw).__name__}")
    _require(raw, ("autospec_profile", "name", "context_len", "target", "draft"), source)
    if raw["autospec_profile"] != FORMAT_VERSION:
        raise ProfileError(f"profile {source}: unsupported autospec_profile version {raw['autospec_profile']!r}")
    target = _section(raw, "target", source)
    draft = _section(raw, "draft", source)
    profile = Profile(
        name=str(raw["name"]), target_model=str(target["model"]), draft_model=str(draft["model"]),
        context_len=_positive_int(raw["context_len"], "context_len", source),
        target_step_ms=_cells(target["step_ms"], "target.step_ms", source),
        draft_step_ms=_cells(draft["step_ms"], "draft.step_ms", source),
        provenance=dict(raw.get("provenance") or {}),
        acceptance_per_pos=_rates(raw.get("acceptance"), "per_pos", source),
        coverage_per_pos=_rates(raw.get("acceptance"), "coverage_per_pos", source),
        step_overhead_ms=_step_overhead(raw.get("step_overhead"), source),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
    )
    _check_complete(profile, source)
    return profile


_KNOWN_KEYS = {"autospec_profile", "name", "context_len", "target", "draft", "provenance", "acceptance", "step_overhead"}


def _require(raw: dict, keys: tuple[str, ...], source: str) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ProfileError(f"profile {source}: missing key(s) {', '.join(missing)}")


def _section(raw: dict, key: str, source: str) -> dict:
    section = raw[key]
    if not isinstance(section, dict):
        raise ProfileError(f"profile {source}: '{key}' must be a mapping with 'model' and 'step_ms'")
    _require(section, ("model", "step_ms"), f"{source} [{key}]")
    return section


def _positive_int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProfileError(f"profile {source}: {what} must be a positive integer, got {value!r}")
    return value


def _cells(nested: Any, what: str, source: str) -> Cells:
    if nested is None:
        return {}
    if not isinstance(nested, dict):
        raise ProfileError(f"profile {source}: {what} must map batch_size -> {{q: ms}}")
    cells: Cells = {}
    for b, row in nested.items():
        if not isinstance(row, dict):
            raise ProfileError(f"profile {source}: {what}[{b}] must map q -> ms")
        for q, ms in row.items():
            cells[(_int_key(b, what, source), _int_key(q, f"{what}[{b}]", source))] = _ms(ms, f"{what}[{b}][{q}]", source)
    return cells


def _int_key(value: Any, what: str, source: str, minimum: int = 1) -> int:
    try:
        key = int(value)
    except (TypeError, ValueError):
        raise ProfileError(f"profile {source}: {what} has a non-integer key {value!r}") from None
    if key < minimum:
        raise ProfileError(f"profile {source}: {what} has a key {key} below {minimum}")
    return key


def _ms(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProfileError(f"profile {source}: {what} must be a positive number of milliseconds, got {value!r}")
    return float(value)


def _rates(section: Any, key: str, source: str) -> tuple[float, ...] | None:
    """acceptance.<key> as per-position rates in [0, 1]; None when absent."""
    if not section or section.get(key) is None:
        return None
    if not isinstance(section, dict) or not isinstance(section[key], list) or not section[key]:
        raise ProfileError(f"profile {source}: acceptance.{key} must be a non-empty list of rates")
    try:
        rates = tuple(float(a) for a in section[key])
    except (TypeError, ValueError):
        raise ProfileError(f"profile {source}: acceptance.{key} must hold numbers, got {section[key]!r}") from None
    bad = [a for a in rates if not 0.0 <= a <= 1.0]
    if bad:
        raise ProfileError(f"profile {source}: acceptance.{key} must lie in [0, 1], got {bad[0]}")
    return rates


def _step_overhead(section: Any, source: str) -> dict[int, dict[int, float]] | None:
    """step_overhead as batch_size -> {spec_len: residual ms}; None when absent."""
    if section is None:
        return None
    if isinstance(section, dict) and "residual_ms" not in section and {"fixed_ms", "per_draft_ms"} <= set(section):
        section = {"residual_ms": _legacy_overhead(section, source)}
    table = section.get("residual_ms") if isinstance(section, dict) else None
    if not isinstance(table, dict) or not table or not all(isinstance(row, dict) and row for row in table.values()):
        raise ProfileError(f"profile {source}: step_overhead must map residual_ms to {{batch_size: {{spec_len: ms}}}}")
    out = {_int_key(b, "step_overhead.residual_ms", source):
           {_int_key(s, f"step_overhead.residual_ms[{b}]", source, minimum=0):
            _finite(ms, f"step_overhead.residual_ms[{b}][{s}]", source) for s, ms in row.items()}
           for b, row in table.items()}
    if len({tuple(sorted(row)) for row in out.values()}) > 1:
        raise ProfileError(f"profile {source}: step_overhead.residual_ms must cover the same spec_lens at every batch size")
    return {b: dict(sorted(out[b].items())) for b in sorted(out)}


def _legacy_overhead(section: dict, source: str) -> dict[Any, dict[int, float]]:
    """{fixed_ms, per_draft_ms} -> residuals at spec_len 0 and 1 (the same line)."""
    fixed, per_draft = section["fixed_ms"], section["per_draft_ms"]
    if not isinstance(fixed, dict) or not isinstance(per_draft, dict) or set(fixed) != set(per_draft):
        raise ProfileError(f"profile {source}: step_overhead.fixed_ms and per_draft_ms must cover the same batch sizes")
    out = {}
    for b in fixed:
        fixed_ms = _finite(fixed[b], f"step_overhead.fixed_ms[{b}]", source)
        out[b] = {0: fixed_ms, 1: fixed_ms + _finite(per_draft[b], f"step_overhead.per_draft_ms[{b}]", source)}
    return out


def _finite(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"profile {source}: {what} must be a finite number of milliseconds, got {value!r}")
    return float(value)


def _check_complete(profile: Profile, source: str) -> None:
    if not profile.target_step_ms:
        raise ProfileError(f"profile {source}: target.step_ms is empty")
    missing = [f"target ({b},{q})" for b in profile.batch_sizes for q in (1, 2)
               if (b, q) not in profile.target_step_ms]
    if profile.draft_has_cost:
        missing += [f"draft ({b},1)" for b in profile.batch_sizes if (b, 1) not in profile.draft_step_ms]
    if missing:
        raise ProfileError(f"profile {source}: incomplete, missing cell(s) {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else ""))
