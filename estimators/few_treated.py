"""Inference with few treated groups: Conley and Taber (2011) and Ferman and Pinto (2019).

Model: ``y_jt = alpha d_jt + x_jt'beta + theta_j + gamma_t + eta_jt`` with ``N1`` treated and
``N0`` control groups (the units). As ``N0`` grows with ``N1`` fixed, the two-way
fixed-effects estimate satisfies (Conley and Taber 2011, Proposition 1)

    alpha_hat - alpha  ->  sum_l sum_t (d_lt - dbar_l) eta_lt  /  sum_l sum_t (d_lt - dbar_l)^2

over the treated groups ``l``, with the sums over each treated group's own periods (so
groups may have different policy dates, durations and numbers of periods). Its law is not
normal and is not estimated by the treated groups' residuals; it is estimated by the
control groups' residuals ``eta_hat_jt``, which are (for N0 large) draws from the same law:
each treated group ``l`` contributes ``c_lj = sum_{t in T_l} (d_lt - dbar_l) eta_hat_jt``
for a control group ``j`` observed in all of ``T_l``, and (their Proposition 2)

    Gamma_hat(z) = mean over all tuples (j_1, ..., j_N1) of 1{ sum_l c_{l j_l} / D < z },

every treated group drawing its control independently (``N0^N1`` tuples). The interval is
``[alpha_hat - Gamma^-1(1 - a/2), alpha_hat - Gamma^-1(a/2)]`` and the p-value of
``alpha = 0`` the equal-tailed one, ``2 min(P(S >= alpha_hat), P(S <= alpha_hat))``, so that
the interval is exactly the set of nulls not rejected.

Ferman and Pinto (2019) show that this over-rejects when treated groups are smaller than
controls (aggregates of fewer individuals have larger variance) and correct it by modelling
the heteroskedasticity: ``var(W_j | M_j) = A + B / M_j`` for a group of size ``M_j`` (their
leading case: group x time cells averaging ``M_j`` individuals). ``A`` and ``B`` are
estimated by least squares of ``c_lj^2`` on ``(1, 1/M_j)`` over the controls, and each
control's contrast is rescaled to the treated group's variance,
``c_lj * sqrt(v(M_l) / v(M_j))``, before forming ``Gamma_hat``.

Caveat (measured, ``tests/test_inference.py``): both rest on ``N0 -> infinity`` with ``N1``
fixed. The exact error of the estimate also carries the control groups' errors, with
weight ``N1/N`` against the treated groups' ``1 - N1/N`` (common timing); the law above
drops that term. With 6 treated of 30 it understates the error variance by about a fifth
(``(6 + 24/16) / 6``), and Conley-Taber rejects a true null about 10% of the time at 5%
with homoskedastic AR(1) errors (400 draws). Use them where ``N1/N0`` is small.

The tuple distribution is computed exactly, without simulation: the treated groups are
split in two halves, each half's sums are enumerated (``N0^(N1/2)`` each) and the count of
tuples below any ``z`` is a sorted search (meet in the middle); quantiles are found by
bisection on that count. With so many treated groups that a half would exceed
:data:`MAX_HALF` sums (6 or more treated of 50), the law of the sum of independent draws is
the convolution of the treated groups' own laws, computed by FFT on a grid of
:data:`GRID_BINS` points spanning the support (:class:`GridLaw`): deterministic, no
simulation, each quantile within ``N1`` half-bins of the exact one (a relative error of
order ``N1 / GRID_BINS`` of the support).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .panel import EstimationError

#: largest enumeration of one half of the treated groups' sums: 6 treated of 30 (24^3 =
#: 13,824) is exact; beyond, the bisections on the exact law take about a second a fit, and
#: the grid law is as good to a few parts in 10^5 of the support
MAX_HALF = 20_000
#: grid points of the convolved law when the exact enumeration is too large
GRID_BINS = 1 << 18
#: a fitted variance v(M) below this share of the mean squared contrast is floored there
VARIANCE_FLOOR = 0.01


@dataclass(frozen=True)
class Contrasts:
    """Each treated group's candidate errors: ``values[l]`` are ``c_lj / D`` over the
    control groups eligible for ``l`` (observed in all of its periods)."""

    values: tuple[np.ndarray, ...]
    treated: np.ndarray      # unit codes of the treated groups
    controls: tuple[np.ndarray, ...]   # unit codes of the eligible controls, per treated group
    denominator: float       # D = sum_l sum_t (d_lt - dbar_l)^2


def contrasts(d: np.ndarray, resid: np.ndarray, unit: np.ndarray, time: np.ndarray,
              n_units: int, n_periods: int, size: np.ndarray | None = None) -> Contrasts:
    """Control groups' residual contrasts for each treated group (Conley-Taber), rescaled for
    group size when ``size`` (one value per unit) is given (Ferman-Pinto).

    Parameters
    ----------
    d, resid, unit, time
        Treatment, residuals of the fixed-effects fit and unit/period codes, per row.
    size
        ``(n_units,)`` group sizes ``M_j`` (population, individuals per cell), or None.
    """
    ever = np.bincount(unit, weights=(d != 0).astype(float), minlength=n_units) > 0
    treated = np.nonzero(ever)[0]
    control = np.nonzero(~ever)[0]
    if treated.size == 0:
        raise EstimationError("no treated group: nothing to test")
    if control.size < 2:
        raise EstimationError("Conley-Taber needs control groups to estimate the error law; "
                              f"this panel has {control.size}")
    eta = np.full((n_units, n_periods), np.nan)
    eta[unit, time] = resid
    dmat = np.full((n_units, n_periods), np.nan)
    dmat[unit, time] = d
    observed = ~np.isnan(eta)
    values, eligible = [], []
    dd_rows = []
    for l in treated:
        periods = observed[l]
        dl = dmat[l, periods]
        dd = dl - dl.mean()
        if not np.any(dd != 0):
            raise EstimationError(f"treated group {l} has no variation in treatment over its "
                                  "periods: it contributes nothing to the estimate")
        ok = control[observed[control][:, periods].all(axis=1)]
        if ok.size < 2:
            raise EstimationError("fewer than 2 control groups are observed in all periods of "
                                  f"treated group {l}: no law to draw its error from")
        values.append(eta[np.ix_(ok, np.nonzero(periods)[0])] @ dd)
        eligible.append(ok)
        dd_rows.append(dd)
    den = float(sum(dd @ dd for dd in dd_rows))
    if size is not None:
        values = [_rescale(c, size[ok], float(size[l]))
                  for c, ok, l in zip(values, eligible, treated)]
    return Contrasts(tuple(c / den for c in values), treated, tuple(eligible), den)


def variance_model(c: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """Ferman-Pinto's ``var(W | M) = A + B / M``: least squares of ``c^2`` on ``(1, 1/M)``.
    With no variation in ``M`` the slope is 0 and ``A`` the mean square."""
    inv = 1.0 / m
    if np.ptp(inv) <= 1e-12 * np.max(np.abs(inv)):
        return float(np.mean(c ** 2)), 0.0
    design = np.column_stack([np.ones_like(inv), inv])
    (a, b), *_ = np.linalg.lstsq(design, c ** 2, rcond=None)
    return float(a), float(b)


def _rescale(c: np.ndarray, m_controls: np.ndarray, m_treated: float) -> np.ndarray:
    if np.any(~np.isfinite(m_controls)) or np.any(m_controls <= 0) or not m_treated > 0:
        raise EstimationError("Ferman-Pinto group sizes (fp_size) must be positive and finite")
    a, b = variance_model(c, m_controls)
    floor = VARIANCE_FLOOR * float(np.mean(c ** 2))
    v = lambda m: np.maximum(a + b / m, floor)  # noqa: E731
    return c * np.sqrt(v(m_treated) / v(m_controls))


class TupleLaw:
    """The exact law of ``S = sum_l x_l[J_l]`` with independent uniform ``J_l`` (one array of
    candidate values per treated group), by meet in the middle."""

    exact = True

    def __init__(self, values: tuple[np.ndarray, ...]):
        sizes = np.array([v.size for v in values], dtype=float)
        # split into two halves of about equal enumeration size (largest first, greedy)
        order = np.argsort(-sizes)
        half: list[list[int]] = [[], []]
        logs = [0.0, 0.0]
        for i in order:
            j = 0 if logs[0] <= logs[1] else 1
            half[j].append(int(i))
            logs[j] += np.log(sizes[i])
        if max(logs) > np.log(MAX_HALF):
            raise EstimationError(
                f"the exact law has {float(np.prod(sizes)):.3g} tuples: use GridLaw")
        self.left = _sums([values[i] for i in half[0]])
        self.right = np.sort(_sums([values[i] for i in half[1]]))
        self.total = float(self.left.size) * float(self.right.size)
        self.low = float(self.left.min() + self.right[0])
        self.high = float(self.left.max() + self.right[-1])

    def cdf(self, z: float) -> float:
        """``P(S <= z)``."""
        return float(np.searchsorted(self.right, z - self.left, side="right").sum()) / self.total

    def sf(self, z: float) -> float:
        """``P(S >= z)``."""
        below = np.searchsorted(self.right, z - self.left, side="left").sum()
        return float(self.right.size * self.left.size - below) / self.total

    def lower(self, q: float) -> float:
        """Smallest atom ``z`` with ``P(S <= z) > q``."""
        return self._bisect(lambda z: self.cdf(z) > q, increasing=True)

    def upper(self, q: float) -> float:
        """Largest atom ``z`` with ``P(S >= z) > q``."""
        return self._bisect(lambda z: self.sf(z) > q, increasing=False)

    def _bisect(self, ok, increasing: bool) -> float:
        lo, hi = self.low, self.high
        span = max(hi - lo, 1e-300)
        # the predicate is monotone in z: find its boundary to near machine precision
        for _ in range(200):
            if hi - lo <= 1e-10 * span:
                break
            mid = 0.5 * (lo + hi)
            if ok(mid) == increasing:
                hi = mid
            else:
                lo = mid
        return hi if increasing else lo


class GridLaw:
    """The law of ``S = sum_l x_l[J_l]`` (independent uniform ``J_l``) on a grid: each
    treated group's values are rounded to the grid and their laws convolved by FFT.

    Used where :class:`TupleLaw`'s exact enumeration is too large. The same interface;
    ``exact`` is False. Rounding moves each value by at most half a bin, so every atom of
    ``S`` by at most ``N1`` half-bins: quantiles and p-values are those of a law within
    ``N1 * step / 2`` of the exact one.
    """

    exact = False

    def __init__(self, values: tuple[np.ndarray, ...], bins: int = GRID_BINS):
        lows = np.array([v.min() for v in values])
        spans = np.array([v.max() - v.min() for v in values])
        self.low = float(lows.sum())
        self.high = float(lows.sum() + spans.sum())
        step = max(float(spans.sum()) / (bins - 1), 1e-300)
        own = [np.bincount(np.rint((v - lo) / step).astype(np.int64)) / v.size
               for v, lo in zip(values, lows)]
        # the law of the sum: one product of the groups' transforms (a single FFT each)
        n = sum(o.size for o in own) - len(own) + 1
        nfft = 1 << int(np.ceil(np.log2(max(n, 2))))
        spectrum = np.ones(nfft // 2 + 1, dtype=complex)
        for o in own:
            spectrum *= np.fft.rfft(o, nfft)
        pmf = np.fft.irfft(spectrum, nfft)[:n]
        # FFT round-off leaves tiny negative and spurious mass: clip and renormalise
        pmf[pmf < 1e-14 * pmf.max()] = 0.0
        pmf /= pmf.sum()
        self.step = step
        self.grid = self.low + step * np.arange(pmf.size)
        self.cdf_at = np.cumsum(pmf)          # P(S <= grid[k])
        self.sf_at = np.cumsum(pmf[::-1])[::-1]   # P(S >= grid[k])
        self.total = float(np.prod([float(v.size) for v in values]))

    def cdf(self, z: float) -> float:
        """``P(S <= z)``."""
        k = int(np.searchsorted(self.grid, z, side="right")) - 1
        return 0.0 if k < 0 else float(min(1.0, self.cdf_at[k]))

    def sf(self, z: float) -> float:
        """``P(S >= z)``."""
        k = int(np.searchsorted(self.grid, z, side="left"))
        return 0.0 if k >= self.grid.size else float(min(1.0, self.sf_at[k]))

    def lower(self, q: float) -> float:
        """Smallest grid atom ``z`` with ``P(S <= z) > q``."""
        return float(self.grid[min(int(np.searchsorted(self.cdf_at, q, side="right")),
                                   self.grid.size - 1)])

    def upper(self, q: float) -> float:
        """Largest grid atom ``z`` with ``P(S >= z) > q``."""
        above = np.flatnonzero(self.sf_at > q)
        return float(self.grid[above[-1]] if above.size else self.grid[0])


def law_of(values: tuple[np.ndarray, ...]) -> "TupleLaw | GridLaw":
    """The exact law (:class:`TupleLaw`) where its enumeration fits :data:`MAX_HALF`, else
    the grid convolution (:class:`GridLaw`)."""
    try:
        return TupleLaw(values)
    except EstimationError:
        return GridLaw(values)


def _sums(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(1)
    for a in arrays:
        out = (out[:, None] + a[None, :]).ravel()
    return out


@dataclass(frozen=True)
class FewTreatedResult:
    p_value: float
    conf_low: float
    conf_high: float
    n_treated: int
    n_controls: int
    n_tuples: float


def few_treated_inference(estimate: float, law: "TupleLaw | GridLaw", alpha: float, n_treated: int,
                          n_controls: int) -> FewTreatedResult:
    """Equal-tailed p-value of ``alpha = 0`` and the interval of nulls not rejected."""
    p = min(1.0, 2.0 * min(law.sf(estimate), law.cdf(estimate)))
    s_lo = law.lower(alpha / 2)
    s_hi = law.upper(alpha / 2)
    return FewTreatedResult(p, estimate - s_hi, estimate - s_lo, n_treated, n_controls,
                            law.total)


__all__ = ["Contrasts", "FewTreatedResult", "GRID_BINS", "GridLaw", "MAX_HALF", "TupleLaw",
           "contrasts", "few_treated_inference", "law_of", "variance_model"]
