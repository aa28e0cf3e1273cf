"""The paper's quantitative model of batched speculative decoding, built from a measured profile.

    step_time(b, s) = s * T_draft(b) + T_target(b, s + 1) [+ overhead(b, s)]
    E[tokens per row per step] = (1 - a^(s+1)) / (1 - a)         (i.i.d. acceptance a)
    goodput(b, s, a) = b * E / step_time

Contract:
- Measured cells are used as measured; a batch size between two measured ones at a measured q is
  interpolated linearly (that is what the hardware does between GEMM shapes to first order);
  anything else is predicted by `StepTimeFit`, a weighted linear regression on roofline-shaped
  features of tokens = b * q (`WeightedLeastSquares`: scikit-learn's LinearRegression with sample
  weights, in numpy, so an engine's start-up does not import scikit-learn), with a logged warning
  the first time it extrapolates.
- `fit_error()` reports the regression's held-out (5-fold) mean and max absolute percentage error.
- `log_time_stds(b, max_spec_len)` says how much the model knows about each step time: the std of
  log(true / modelled) is `MEASURED_STD` where every term was measured, `INTERPOLATED_STD` where
  one was interpolated, `PREDICTED_STD` where one came from the regression.
- Where the profile measured whole steps (`step_overhead`), a step also costs that overhead: the
  measured residual at (b, s), linear between measured spec_lens and beyond the largest one along
  the least-squares line through them; linear between measured batch sizes and held at the nearest
  one outside them. The step time never drops below half of its forwards.
- Acceptance is either a float `a` (i.i.d.) or a per-position sequence of conditional rates
  (`a[j]` = P(draft j accepted | drafts before j accepted)).
- A `CostModel` is immutable after construction; step-time vectors per batch size are cached.
"""
from __future__ import annotations

import bisect
import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from loguru import logger

from autospec.profiles import Cells, Profile, load_profile

Acceptance = float | Sequence[float]
TOKEN_KNOTS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
MEASURED_STD, INTERPOLATED_STD, PREDICTED_STD = 0.05, 0.1, 0.3


def validate_acceptance(acceptance: float, name: str = "acceptance") -> float:
    if isinstance(acceptance, bool) or not isinstance(acceptance, (int, float)) or not 0.0 < acceptance < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {acceptance!r}")
    return float(acceptance)


def expected_tokens(spec_len: int, acceptance: Acceptance) -> float:
    """Expected tokens emitted per row per step (accepted drafts + the target's bonus token)."""
    if isinstance(acceptance, (int, float)):
        a = float(acceptance)
        return float(spec_len + 1) if a >= 1.0 else (1.0 - a ** (spec_len + 1)) / (1.0 - a)
    rates = np.asarray(acceptance, dtype=float)[:spec_len]
    return 1.0 + float(np.cumprod(rates).sum())


def expected_tokens_vector(max_spec_len: int, acceptance: Acceptance) -> np.ndarray:
    """[max_spec_len + 1] expected tokens per row for spec_len = 0..max_spec_len."""
    if isinstance(acceptance, (int, float)):
        rates = np.full(max_spec_len, float(acceptance))
    else:
        rates = np.asarray(acceptance, dtype=float)[:max_spec_len]
        if len(rates) < max_spec_len:
            raise ValueError(f"need {max_spec_len} per-position acceptance rates, got {len(rates)}")
    tokens = np.empty(max_spec_len + 1)  # [1, r0, r0 r1, ...] then its running sum
    tokens[0] = 1.0
    np.cumprod(rates, out=tokens[1:])
    return np.cumsum(tokens, out=tokens)


def _features(b: np.ndarray, q: np.ndarray, knots: Sequence[int]) -> np.ndarray:
    """Roofline-shaped features (the intercept is the fixed cost of reading the weights once):
    per-token and per-row costs, the q = 1 / odd-q kernel paths, and hinges in tokens where
    compute starts to dominate."""
    n = b * q
    cols = [n, b, b * (q == 1), n * ((q % 2 == 1) & (q > 1))]
    cols += [np.maximum(0.0, n - k) for k in knots]
    return np.stack(cols, axis=1)


def feature_names(knots: Sequence[int]) -> list[str]:
    return ["per_token_ms", "per_row_ms", "q1_per_row_ms", "odd_q_per_token_ms"] + [
        f"per_token_above_{k}_ms" for k in knots]


def _choose_knots(max_tokens: float, max_knots: int) -> tuple[int, ...]:
    """Hinge knots inside the measured token range, thinned evenly to keep >= 3 cells per feature."""
    candidates = [k for k in TOKEN_KNOTS if k < max_tokens]
    if len(candidates) <= max_knots:
        return tuple(candidates)
    if max_knots == 0:
        return ()
    picks = np.linspace(0, len(candidates) - 1, max_knots).round().astype(int)
    return tuple(candidates[i] for i in sorted(set(picks)))


class WeightedLeastSquares:
    """y ~ x @ coef_ + intercept_ minimising sum(w * residual^2): what scikit-learn's
    `LinearRegression().fit(x, y, sample_weight=w)` computes (weighted centring, then the
    minimum-norm least-squares solution), in numpy."""

    def __init__(self, x: np.ndarray, y: np.ndarray, w: np.ndarray):
        x_mean = np.average(x, axis=0, weights=w)                       # [features]
        y_mean = float(np.average(y, weights=w))
        root = np.sqrt(w)[:, None]                                      # [cells, 1]
        self.coef_, *_ = np.linalg.lstsq((x - x_mean) * root, (y - y_mean) * root[:, 0], rcond=None)
        self.intercept_ = y_mean - float(x_mean @ self.coef_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_


class StepTimeFit:
    """Linear regression of step ms on `_features`, weighted by 1/ms^2 (relative error)."""

    def __init__(self, cells: Cells):
        if len(cells) < 2:
            raise ValueError("need at least 2 measured cells to fit step times")
        b, q, ms = (np.array(v, dtype=float) for v in zip(*[(b, q, t) for (b, q), t in cells.items()]))
        self.knots = _choose_knots(float((b * q).max()), max_knots=max(0, len(cells) // 3 - 3))
        self.floor_ms = 0.5 * float(ms.min())
        self._b, self._q, self._ms = b, q, ms
        self.model = self._fit(b, q, ms)

    def _fit(self, b: np.ndarray, q: np.ndarray, ms: np.ndarray) -> WeightedLeastSquares:
        return WeightedLeastSquares(_features(b, q, self.knots), ms, 1.0 / ms**2)

    def coefficients(self) -> dict[str, float]:
        """The fitted model as named coefficients in milliseconds."""
        named = dict(zip(feature_names(self.knots), (float(c) for c in self.model.coef_)))
        return {"fixed_ms": float(self.model.intercept_), **named}

    def predict_ms(self, batch_size: float, q: float) -> float:
        x = _features(np.array([float(batch_size)]), np.array([float(q)]), self.knots)
        return max(self.floor_ms, float(self.model.predict(x)[0]))

    def cv_error(self, folds: int = 5, seed: int = 0) -> dict[str, float]:
        """Held-out absolute percentage error over `folds` random splits of the measured cells."""
        from sklearn.model_selection import KFold

        folds = min(folds, len(self._ms))
        errors: list[float] = []
        for train, test in KFold(folds, shuffle=True, random_state=seed).split(self._ms):
            model = self._fit(self._b[train], self._q[train], self._ms[train])
            pred = np.maximum(self.floor_ms, model.predict(_features(self._b[test], self._q[test], self.knots)))
            errors.extend(np.abs(pred - self._ms[test]) / self._ms[test])
        return {"mape_pct": 100 * float(np.mean(errors)), "max_ape_pct": 100 * float(np.max(errors)),
                "num_cells": len(self._ms)}


class CostModel:
    """Step time, expected tokens and goodput for a target/draft pair on one machine."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.target_fit = StepTimeFit(profile.target_step_ms)
        self.draft_fit = StepTimeFit(profile.draft_step_ms) if profile.draft_has_cost else None
        self._by_q_target = _index_by_q(profile.target_step_ms)
        self._by_q_draft = _index_by_q(profile.draft_step_ms)
        self._overhead_ms = _overhead_table(profile.step_overhead_ms) if profile.step_overhead_ms else None
        self._warned = False
        self.step_times_s = lru_cache(maxsize=4096)(self._step_times_s)
        self.log_time_stds = lru_cache(maxsize=4096)(self._log_time_stds)

    @classmethod
    def from_profile(cls, name_or_path: str | Path) -> "CostModel":
        return cls(load_profile(name_or_path))

    @property
    def name(self) -> str:
        return self.profile.name

    def target_time_s(self, batch_size: float, q: int) -> float:
        """Seconds for one target forward of `batch_size` rows with `q` new tokens each."""
        ms = _interpolate(self._by_q_target, batch_size, q)
        return (ms if ms is not None else self._predict(self.target_fit, batch_size, q)) / 1e3

    def _log_std(self, by_q: dict[int, tuple[list[int], list[float]]], batch_size: float, q: int) -> float:
        if _interpolate(by_q, batch_size, q) is None:
            return PREDICTED_STD
        return MEASURED_STD if batch_size in by_q[q][0] else INTERPOLATED_STD

    def _log_time_stds(self, batch_size: float, max_spec_len: int) -> np.ndarray:
        """[max_spec_len + 1] prior std of log(true / modelled step time) per spec_len (cached)."""
        draft = self._log_std(self._by_q_draft, batch_size, 1) if self.draft_fit is not None else 0.0
        stds = [self._log_std(self._by_q_target, batch_size, s + 1) if s == 0 else
                max(draft, self._log_std(self._by_q_target, batch_size, s + 1)) for s in range(max_spec_len + 1)]
        out = np.array(stds)
        out.setflags(write=False)
        return out

    def draft_time_s(self, batch_size: float) -> float:
        """Seconds for one draft forward (one new token per row); 0 for a drafter with no model."""
        if self.draft_fit is None:
            return 0.0
        ms = _interpolate(self._by_q_draft, batch_size, 1)
        return (ms if ms is not None else self._predict(self.draft_fit, batch_size, 1)) / 1e3

    def _predict(self, fit: StepTimeFit, batch_size: float, q: int) -> float:
        if not self._warned:
            logger.warning(f"cost model {self.name}: batch_size={batch_size}, q={q} was not measured; "
                           "predicting it with the fitted model (extrapolation may be off)")
            self._warned = True
        return fit.predict_ms(batch_size, q)

    def step_time_s(self, batch_size: float, spec_len: int) -> float:
        """spec_len draft forwards + one target forward of the expected verify width + the step's overhead."""
        return self._whole_step_s(batch_size, spec_len, self.verify_time_s(batch_size, spec_len))

    def step_time_at_width_s(self, batch_size: float, spec_len: int, mean_q: float) -> float:
        """`step_time_s` with the verify block's mean width given (measured) instead of modelled."""
        return self._whole_step_s(batch_size, spec_len, self.verify_width_time_s(batch_size, mean_q))

    def _whole_step_s(self, batch_size: float, spec_len: int, verify_s: float) -> float:
        """spec_len draft forwards + `verify_s` + the overhead, never below half of the forwards."""
        forwards = spec_len * self.draft_time_s(batch_size) + verify_s
        return max(0.5 * forwards, forwards + self.overhead_time_s(batch_size, spec_len))

    def overhead_time_s(self, batch_size: float, spec_len: int) -> float:
        """Seconds a whole step costs beyond its forwards (0 for a profile without `step_overhead`)."""
        if self._overhead_ms is None:
            return 0.0
        sizes, spec_lens, residuals, slopes = self._overhead_ms
        last = spec_lens[-1]
        per_size = (residuals[:, -1] + (spec_len - last) * slopes if spec_len > last
                    else [np.interp(spec_len, spec_lens, row) for row in residuals])
        return float(np.interp(batch_size, sizes, per_size)) / 1e3

    def verify_time_s(self, batch_size: float, spec_len: int) -> float:
        """Target forward over the verify block: q = spec_len + 1 when every row drafts spec_len tokens.

        With the profile's draft coverage c_j (rows with a draft at least j long), the block is as wide
        as the longest draft in the batch, W; P(W >= j) = 1 - (1 - c_j)^batch_size for independent rows,
        so E[T] = T(b, 1) + sum_j P(W >= j) * (T(b, j + 1) - T(b, j)).
        """
        coverage = self.profile.coverage_per_pos
        if coverage is None or spec_len == 0:
            return self.target_time_s(batch_size, spec_len + 1)
        times = [self.target_time_s(batch_size, q) for q in range(1, spec_len + 2)]
        expected = times[0]
        for j in range(1, spec_len + 1):
            c = coverage[min(j, len(coverage)) - 1]
            expected += (1.0 - (1.0 - c) ** batch_size) * (times[j] - times[j - 1])
        return expected

    def verify_width_time_s(self, batch_size: float, mean_q: float) -> float:
        """Target forward time at a mean verified width `mean_q` (a measured average over steps),
        linear between the neighbouring whole widths."""
        low = max(1, int(np.floor(mean_q)))
        frac = mean_q - low
        t_low = self.target_time_s(batch_size, low)
        return t_low if frac <= 0 else (1 - frac) * t_low + frac * self.target_time_s(batch_size, low + 1)

    def _step_times_s(self, batch_size: float, max_spec_len: int) -> np.ndarray:
        """[max_spec_len + 1] step seconds for spec_len = 0..max_spec_len (cached, read-only)."""
        times = np.array([self.step_time_s(batch_size, s) for s in range(max_spec_len + 1)])
        times.setflags(write=False)
        return times

    expected_tokens = staticmethod(expected_tokens)

    def goodput_tps(self, batch_size: float, spec_len: int, acceptance: Acceptance) -> float:
        return batch_size * expected_tokens(spec_len, acceptance) / self.step_time_s(batch_size, spec_len)

    def goodput_vector(self, batch_size: float, max_spec_len: int, acceptance: Acceptance) -> np.ndarray:
        """[max_spec_len + 1] goodput in tokens/s for spec_len = 0..max_spec_len."""
        tokens = expected_tokens_vector(max_spec_len, acceptance)
        return batch_size * tokens / self.step_times_s(batch_size, max_spec_len)

    def best_spec_len(self, batch_size: float, acceptance: Acceptance, max_spec_len: int) -> int:
        return int(np.argmax(self.goodput_vector(batch_size, max_spec_len, acceptance)))

    def fit_error(self) -> dict[str, dict[str, float]]:
        out = {"target": self.target_fit.cv_error()}
        if self.draft_fit is not None:
            out["draft"] = self.draft_fit.cv_error()
        return out

    def max_measured_q(self) -> int:
        return max(q for _, q in self.profile.target_step_ms)

    def save(self, path: str | Path) -> Path:
        return self.profile.save(path)

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        return cls.from_profile(path)


def _overhead_table(table: dict[int, dict[int, float]]) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """(sorted batch sizes, spec_lens, residual ms [sizes, spec_lens], least-squares ms per spec_len [sizes])."""
    sizes = sorted(table)
    spec_lens = sorted(table[sizes[0]])
    residuals = np.array([[table[b][s] for s in spec_lens] for b in sizes])   # [num sizes, num spec_lens]
    slopes = (np.polyfit(spec_lens, residuals.T, 1)[0] if len(spec_lens) > 1
              else np.zeros(len(sizes)))                                        # [num sizes]
    return sizes, spec_lens, residuals, slopes


def _index_by_q(cells: Cells) -> dict[int, tuple[list[int], list[float]]]:
    """q -> (sorted measured batch sizes, their ms)."""
    by_q: dict[int, list[tuple[int, float]]] = {}
    for (b, q), ms in cells.items():
        by_q.setdefault(q, []).append((b, ms))
    return {q: ([b for b, _ in sorted(v)], [ms for _, ms in sorted(v)]) for q, v in by_q.items()}


def _interpolate(by_q: dict[int, tuple[list[int], list[float]]], batch_size: float, q: int) -> float | None:
    """Measured ms at (batch_size, q), linear between measured batch sizes; None outside them."""
    if q not in by_q:
        return None
    bs, ms = by_q[q]
    i = bisect.bisect_left(bs, batch_size)
    if i < len(bs) and bs[i] == batch_size:
        return ms[i]
    if i == 0 or i == len(bs):
        return None
    w = (batch_size - bs[i - 1]) / (bs[i] - bs[i - 1])
    return (1 - w) * ms[i - 1] + w * ms[i]


def mean_abs_pct_error(predicted: Sequence[float], measured: Sequence[float]) -> float:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return 100.0 * float(np.mean(np.abs(p - m) / m)) if len(m) else math.nan
