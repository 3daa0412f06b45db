"""Propensity-score matching DID (PSM-DID), both routes.

* :class:`PSMDID` (label ``psm_did``) -- score, match, keep the units (or unit-years) that
  received a positive matching weight, and re-run the two-way fixed-effects DID on that
  matched sample, unweighted. This is the route of seed 002's Table 5 ("DID re-estimated on
  the matched sample", n = 287) and of the carbon-trading literature generally
  (``psmatch2 ...; reghdfe ... if _weight != .``).
* :class:`PSMDIDWeighted` (label ``psm_did_weighted``) -- the same matching, but the DID is
  a weighted two-way fixed-effects regression whose weights are the matching (ATT) weights
  carried over every year: the kernel-matching DID of Heckman, Ichimura and Todd (1997)
  and of Stata's ``diff, kernel``. Route (a) throws the weights away after using them to
  pick the sample; route (b) uses them.

The score, support, matching and balance come from :mod:`estimators.matching`;
:func:`did_coefficient` is the array-level DID of the bootstrap's fast path. The doubly
robust DID, the modern comparison, is in :mod:`estimators.drdid`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from .fe import ols_fe
from .matching import (MatchOptions, MatchResult, _match_subjects, _matching_diagnostics,
                       _no_match_error, _PanelData, _panel_data, _Subjects, _subjects,
                       balance_table, parse_baseline)
from .panel import (treated_att, excluding_always_treated, COHORT, D, TIME, UNIT, EstimationError, OptionError,
                    PanelError, check_choice)
from .catalog import renamed
from .regression import InferenceOptions
from .result import Estimate, critical_value, p_value
from .resample import draw_units
from .twfe import TWFE

PSM_INFERENCE = ("cluster", "bootstrap")
BOOT_CI = ("normal", "percentile")
#: a bootstrap whose draws fail (no overlap or a separated score in the resample) more often
#: than this share raises instead of reporting an SE computed on the lucky resamples only
MAX_BOOT_FAIL_SHARE = 0.5
#: column that carries matching weights into TWFE (must not clash with a user column)
WEIGHT_COLUMN = "_psm_weight"


# --- fast DID on a balanced panel (bootstrap inner loop) ----------------------------------------

def did_coefficient(y: np.ndarray, d: np.ndarray, c: np.ndarray | None = None,
                    w: np.ndarray | None = None) -> float:
    """TWFE coefficient on ``d`` in a balanced panel with unit-level weights.

    Parameters
    ----------
    y, d
        ``(n_units, n_periods)`` outcome and treatment.
    c
        ``(n_units, n_periods, k)`` controls or None.
    w
        ``(n_units,)`` weight of each unit in every period, or None.

    Notes
    -----
    With weights constant within unit, the weighted two-way within transform of a
    balanced panel has the closed form ``z_it - zbar_i. - sum_j w_j (z_jt - zbar_j.) / sum w``
    (the unit mean needs no weights; the period mean is the weighted mean of the
    unit-demeaned values). The regression then goes through :func:`estimators.fe.ols_fe`,
    so absorbed or collinear controls are dropped by the same rule as :class:`TWFE`. A test
    pins this path to :class:`TWFE` to 1e-10.
    """
    parts = [y[..., None], d[..., None]]
    if c is not None and c.shape[-1]:
        parts.append(c)
    z = np.concatenate(parts, axis=2)
    z = z - z.mean(axis=1, keepdims=True)
    if w is None:
        z = z - z.mean(axis=0, keepdims=True)
    else:
        z = z - (np.tensordot(w, z, axes=(0, 0)) / w.sum())[None]
    n, t, m = z.shape
    flat = z.reshape(n * t, m)
    raw = np.concatenate(parts[1:], axis=2).reshape(n * t, m - 1)
    wr = None if w is None else np.repeat(w, t)
    fit = ols_fe(flat[:, 0], flat[:, 1:], raw, wr)
    if not fit.keep[0]:
        raise EstimationError("the treatment indicator is absorbed in this sample")
    return float(fit.coef[0])


def _boot_summary(est: float, draws: np.ndarray, alpha: float, ci: str) -> tuple[float, float, float, float, int]:
    ok = draws[np.isfinite(draws)]
    n_failed = draws.size - ok.size
    if ok.size < 2 or n_failed > MAX_BOOT_FAIL_SHARE * draws.size:
        raise EstimationError(
            f"the bootstrap failed in {n_failed} of {draws.size} draws (a resample without "
            "overlap, a separated score or no match); an SE from the remaining draws would "
            "describe only resamples with overlap: use fewer score covariates or "
            "n_boot=0 (analytic SEs)"
        )
    se = float(ok.std(ddof=1))
    if ci == "percentile":
        lo, hi = (float(v) for v in np.quantile(ok, [alpha / 2, 1 - alpha / 2]))
    else:
        crit = critical_value(alpha, None)
        lo, hi = est - crit * se, est + crit * se
    p = float(p_value(est / se, None)) if se > 0 else float("nan")
    return se, p, lo, hi, int(n_failed)


def _resample_panel(panel: pd.DataFrame, unit: np.ndarray, columns: Sequence[str],
                    draw: np.ndarray) -> pd.DataFrame:
    """Panel of the drawn units (unit codes), each copy a new unit numbered by its draw."""
    order = np.argsort(unit, kind="stable")
    counts = np.bincount(unit, minlength=int(unit.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.concatenate([order[starts[u]:starts[u] + counts[u]] for u in draw])
    new_unit = np.repeat(np.arange(draw.size), counts[draw])
    out = panel[list(columns)].iloc[rows].reset_index(drop=True)
    out[UNIT] = new_unit
    return out


# --- PSM-DID ---------------------------------------------------------------------------------

def _old_inference(allowed: tuple[str, ...]):
    """Converter of the old ``inference`` option (before the shared vocabulary): its
    bootstrap value means ``n_boot`` draws (499 unless given), the other means none."""

    def convert(old: str, n_boot: int | None) -> int:
        check_choice("inference", old, allowed)
        return (n_boot or 499) if old == "bootstrap" else 0

    return convert


@renamed(inference=("n_boot", _old_inference(PSM_INFERENCE)))
@dataclass(frozen=True)
class PSMDID(MatchOptions, InferenceOptions):
    """PSM-DID: propensity-score matching, then DID on the matched sample (route a).

    Score the units at a baseline, match treated (``cohort > 0``) to never-treated
    (``cohort == 0``) units,
    keep every unit (or unit-year) with a positive matching weight, and fit the two-way
    fixed-effects DID on those rows **unweighted**. This is seed 002's Table 5 route: "DID
    re-estimated on the matched sample" (n = 287). 287 is not a multiple of the 19 years,
    which suggests the paper matched province-years (psmatch2 on the stacked panel,
    ``baseline="pooled"``) and kept the rows with a weight -- see Notes for why that is
    fragile.
    :class:`PSMDIDWeighted` keeps the weights instead (route b).

    Parameters
    ----------
    outcome
        Outcome column.
    covariates
        Score covariates; empty (default) uses ``controls``.
    controls
        Covariates of the final DID regression (time-varying; seed 002's models 6 and 8).
    baseline
        Where the score covariates are measured: ``"mean"`` (default: each unit's mean over
        the periods before the first cohort), an int year or ``"year:2010"`` (that
        pre-period year), ``"period"`` (a separate score and matching in each year, as
        for repeated cross sections) or ``"pooled"`` (one score over all unit-years, treated
        unit-years matched to control unit-years of any year: the common ``psmatch2``
        practice). The last two match unit-years, not units.
    n_boot
        ``0`` (default): the final regression's cluster-robust SE, which treats the score
        and the matching as fixed. ``n_boot > 0``: that many bootstrap draws, each
        resampling units and re-estimating the score, the support, the matching and the
        DID (needs ``rng``). (Before: ``inference="cluster"|"bootstrap"`` beside
        ``n_boot``, which still works for one release; ``"bootstrap"`` means 499 draws
        unless ``n_boot`` says otherwise.)
    boot_ci, stratify
        ``"normal"`` (estimate +- z * bootstrap SE) or ``"percentile"`` bootstrap
        interval; resample treated and control units separately (keeps the number of
        treated units, as the pilot design fixes it).
    cluster, se, ssc, dist, alpha
        Inference options of the final regression, as :class:`~estimators.twfe.TWFE`
        (keyword only, from :class:`~estimators.regression.InferenceOptions`).
    fast
        Bootstrap through the array path (balanced panel, unit-level baseline); ``False``
        refits the estimator on each resampled panel (identical numbers, pinned by a test).
    label
        Name in outputs.

    Matching options (keyword only) are those of :class:`MatchOptions`: ``link="logit"``,
    ``method="kernel"``, ``kernel="epanechnikov"``, ``bandwidth=0.06``, ``n_neighbors=1``,
    ``replace=True``, ``caliper=None``, ``order="descending"``, ``ties="lowest"``,
    ``support="minmax"``, ``support_q=0.02``.

    Notes
    -----
    Model: ``y_it = a_i + l_t + tau d_it + x_it'b + e_it`` on the matched sample.
    Identification: parallel trends of the untreated outcome *conditional on the score*
    (on the matched sample), no anticipation, and overlap. Matching changes the estimand:
    treated units off support or without a control in reach are dropped, so the target is
    the ATT of the matched treated units (:meth:`matched_estimand`), not the ATT of all
    treated units (:meth:`estimand`); when pilots are selected on the score and effects vary
    with it, the two differ (the Monte Carlo test in ``tests/test_psm.py`` shows kernel
    matching with min-max trimming unbiased for the first and biased for the second).
    Route (a) discards the weights, so a control that
    is the best match of five treated units counts as much as one barely inside the kernel;
    with unit-year matching the kept sample can hold a province in some years and not in
    others, and scores built on post-treatment covariates (``period`` / ``pooled``) are
    affected by the policy itself. The cluster-robust SE (small-sample convention
    ``ssc``) ignores the estimation of the score and the matching; the bootstrap does not
    (but Abadie and Imbens 2008 show the bootstrap is not valid for nearest-neighbour
    matching with a fixed number of matches; smooth kernel matching escapes that result).
    A bootstrap with more than half of its draws failing raises instead of reporting.
    """

    outcome: str
    covariates: Sequence[str] = ()
    controls: Sequence[str] = ()
    baseline: Any = "mean"
    n_boot: int = 0
    boot_ci: str = "normal"
    stratify: bool = True
    fast: bool = True
    label: str = "psm_did"

    route: ClassVar[str] = "matched"

    # -- options ---------------------------------------------------------------------------
    def score_covariates(self) -> tuple[str, ...]:
        """The score covariates (``covariates``, or ``controls`` when empty)."""
        return tuple(self.covariates) or tuple(self.controls)

    @property
    def inference(self) -> str:
        """``"bootstrap"`` when ``n_boot > 0``, else ``"cluster"``."""
        return "bootstrap" if self.n_boot else "cluster"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self._check()

    def _check(self) -> tuple[str, int | None]:
        self.check_matching()
        check_choice("boot_ci", self.boot_ci, BOOT_CI)
        self.check_inference()
        if not self.score_covariates():
            raise OptionError(
                "PSM-DID needs covariates for the propensity score: set covariates=(...) "
                "(controls are used when covariates is empty)"
            )
        if (isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer))
                or self.n_boot < 0 or self.n_boot == 1):
            raise OptionError(f"n_boot={self.n_boot!r} must be 0 (cluster-robust SEs) or an "
                              "integer >= 2 (bootstrap draws)")
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")
        return parse_baseline(self.baseline, row_level=True)

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells
        (``mean te_<outcome>`` over rows with ``d == 1``, as :meth:`TWFE.estimand`)."""
        return treated_att(panel, self.outcome)

    # -- matching ----------------------------------------------------------------------------
    def _prepare(self, panel: pd.DataFrame) -> tuple[_PanelData, _Subjects]:
        kind, year = self._check()
        covs = self.score_covariates()
        extra = [c for c in tuple(self.controls) if c not in covs]
        data = _panel_data(panel, self.outcome, (*covs, *extra))
        return data, _subjects(data, covs, kind, year)

    def _match_prepared(self, data: _PanelData, subj: _Subjects,
                        rng: np.random.Generator | None) -> MatchResult:
        if self.needs_rng() and rng is None:
            raise OptionError("ties='random' or order='random' needs a generator: fit(panel, rng=...)")
        covs = self.score_covariates()
        score, on, weights, m = _match_subjects(self, subj, covs, data.years, rng)
        bal = balance_table(np.column_stack([score, subj.x]), ["pscore", *covs], subj.treated, weights)
        diag = _matching_diagnostics(subj.treated, on, weights, bal, subj.n_no_baseline)
        ids = data.unit_ids[subj.units]
        table = {UNIT: ids}
        if subj.level == "unit-year":
            table[TIME] = data.arrays[TIME][subj.rows].astype(int)
            row_w = weights
        else:
            unit_w = np.zeros(data.unit_ids.size)
            unit_w[subj.units] = weights
            row_w = unit_w[data.unit]
        table.update({COHORT: data.unit_cohort[subj.units].astype(int), "treated": subj.treated,
                      "score": score, "on_support": on, "matched": weights > 0, "weight": weights})
        pairs = {"treated": ids[m.pairs_treated], "control": ids[m.pairs_control]}
        if subj.level == "unit-year":
            pairs[TIME] = table[TIME][m.pairs_treated]
            pairs["control_time"] = table[TIME][m.pairs_control]
        pairs["weight"] = m.pairs_weight
        return MatchResult(pd.DataFrame(table), pd.DataFrame(pairs), bal, diag, subj.level, row_w)

    @excluding_always_treated
    def match(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> MatchResult:
        """Score and match without estimating: per-subject scores and weights, the pairs,
        the balance table and the diagnostics (for tables and figures)."""
        data, subj = self._prepare(panel)
        return self._match_prepared(data, subj, rng)

    @excluding_always_treated
    def matched_estimand(self, panel: pd.DataFrame, rng: np.random.Generator | None = None
                         ) -> dict[str, float]:
        """True ATT of the treated subjects that matching keeps, on a simulated panel.

        ``mean te_<outcome>`` over the ``d == 1`` rows of matched treated units (or
        unit-years): the estimand of both routes once trimming has dropped the treated
        units off support or out of reach. It differs from :meth:`estimand` when effects
        vary with the score (the Monte Carlo test shows the gap).
        """
        data, subj = self._prepare(panel)
        mr = self._match_prepared(data, subj, rng)
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        treated_rows = data.unit_cohort[data.unit] > 0
        sel = d & treated_rows & (mr.row_weights > 0)
        return {"ATT": float(te[sel].mean()) if sel.any() else float("nan")}

    # -- estimation ------------------------------------------------------------------------------
    def _twfe(self, weights: str | None) -> TWFE:
        return TWFE(self.outcome, controls=tuple(self.controls), cluster=self.cluster, se=self.se,
                    ssc=self.ssc, dist=self.dist, alpha=self.alpha, weights=weights)

    def _did(self, panel: pd.DataFrame, row_weights: np.ndarray) -> Estimate:
        """The DID step on the matched sample (route a) or with the weights (route b)."""
        if self.route == "weighted":
            if WEIGHT_COLUMN in panel.columns:
                raise OptionError(f"the panel already has a column {WEIGHT_COLUMN!r}; rename it")
            return self._twfe(WEIGHT_COLUMN).fit(panel.assign(**{WEIGHT_COLUMN: row_weights}))
        return self._twfe(None).fit(panel.loc[row_weights > 0])

    def _point(self, data: _PanelData, subj: _Subjects,
               rng: np.random.Generator | None) -> tuple[MatchResult, Estimate]:
        mr = self._match_prepared(data, subj, rng)
        diag = mr.diagnostics
        if diag["n_matched_treated"] < 1 or diag["n_matched_controls"] < 1:
            raise _no_match_error(diag, self)
        return mr, self._did(data.panel, mr.row_weights)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Match, then estimate the ATT by DID (see the class docstring)."""
        data, subj = self._prepare(panel)
        if self.inference == "bootstrap" and rng is None:
            raise OptionError(
                f"n_boot={self.n_boot} (the bootstrap) needs a generator: "
                "fit(panel, rng=np.random.default_rng(...))"
            )
        mr, est = self._point(data, subj, rng)
        diagnostics = {**mr.diagnostics, **est.diagnostics}  # the final regression's R-squared
        notes = list(est.notes)
        route = ("DID re-estimated on the matched sample, unweighted (seed 002 Table 5 route)"
                 if self.route == "matched" else "weighted DID, matching weights carried over all years")
        notes.append(f"matched {mr.level}s: {self.describe_matching()}; "
                     f"score covariates {list(self.score_covariates())} at baseline={self.baseline!r}; {route}")
        if subj.n_no_baseline:
            notes.append(f"{subj.n_no_baseline} unit(s) have no baseline observation and were not matched")
        std_error, pv, lo, hi = est.std_error, est.p_value, est.conf_low, est.conf_high
        inference = f"{est.inference}; score and matching treated as fixed"
        if self.inference == "bootstrap":
            draws = self.bootstrap(panel, rng, _prepared=(data, subj))
            std_error, pv, lo, hi, n_failed = _boot_summary(est.estimate, draws, self.alpha, self.boot_ci)
            diagnostics.update(n_boot=float(self.n_boot), n_boot_failed=float(n_failed),
                               cluster_se=est.std_error)
            inference = (f"bootstrap ({self.n_boot} resamples of units"
                         f"{', within treated and controls' if self.stratify else ''}; score and "
                         f"matching re-estimated), {self.boot_ci} interval")
            if n_failed:
                notes.append(f"{n_failed} of {self.n_boot} bootstrap draws failed (no overlap or no "
                             "match) and were left out")
        terms = _psm_terms(est.terms, mr.balance)
        return replace(est, estimator=self.label, std_error=std_error, p_value=pv, conf_low=lo,
                       conf_high=hi, inference=inference, terms=terms, diagnostics=diagnostics,
                       notes=tuple(notes))

    # -- bootstrap --------------------------------------------------------------------------------
    def bootstrap(self, panel: pd.DataFrame, rng: np.random.Generator,
                  _prepared: tuple[_PanelData, _Subjects] | None = None) -> np.ndarray:
        """``n_boot`` bootstrap estimates (NaN where a draw failed).

        Each draw resamples units with replacement (within treated and never-treated units
        when ``stratify``), renumbers the copies as distinct units, and re-runs the score,
        the support rule, the matching and the DID. Draw indices come first from ``rng``,
        then any randomness the matching needs, so the fast and the generic paths consume
        the generator identically.
        """
        if rng is None:
            raise OptionError("the bootstrap needs a generator: rng=np.random.default_rng(...)")
        data, subj = _prepared if _prepared is not None else self._prepare(panel)
        treated_unit = data.unit_cohort > 0
        draws_idx = draw_units(treated_unit.astype(int), self.n_boot, rng, self.stratify)
        if self.fast and subj.level == "unit" and data.balanced and subj.n_no_baseline == 0:
            return self._bootstrap_fast(data, subj, draws_idx, rng)
        columns = list(dict.fromkeys([UNIT, TIME, COHORT, D, self.outcome, *self.score_covariates(),
                                      *self.controls]
                                     + ([self.cluster] if self.cluster and self.cluster != UNIT else [])))
        out = np.full(self.n_boot, np.nan)
        for b, draw in enumerate(draws_idx):
            sample = _resample_panel(panel, data.unit, columns, draw)
            try:
                d2, s2 = self._prepare(sample)
                out[b] = self._point(d2, s2, rng)[1].estimate
            except (EstimationError, PanelError, np.linalg.LinAlgError):
                continue
        return out

    def _bootstrap_fast(self, data: _PanelData, subj: _Subjects, draws_idx: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        n_units, n_periods = data.unit_ids.size, data.years.size
        order = np.lexsort((data.time, data.unit))
        y = data.arrays[self.outcome][order].reshape(n_units, n_periods)
        d = data.arrays[D][order].reshape(n_units, n_periods)
        ctrl = tuple(self.controls)
        c = (np.stack([data.arrays[k][order] for k in ctrl], axis=1).reshape(n_units, n_periods, -1)
             if ctrl else None)
        x = np.empty((n_units, subj.x.shape[1]))
        x[subj.units] = subj.x
        treated = data.unit_cohort > 0
        names = self.score_covariates()
        out = np.full(self.n_boot, np.nan)
        for b, idx in enumerate(draws_idx):
            try:
                um = self.match_units(x[idx], treated[idx], names, rng)
                w = um.weights
                keep = w > 0
                if not (keep & treated[idx]).any() or not (keep & ~treated[idx]).any():
                    continue
                sel = idx[keep]
                out[b] = did_coefficient(y[sel], d[sel], None if c is None else c[sel],
                                         w[keep] if self.route == "weighted" else None)
            except (EstimationError, np.linalg.LinAlgError):
                continue
        return out


@dataclass(frozen=True)
class PSMDIDWeighted(PSMDID):
    """PSM-DID with the matching weights carried over all years (route b).

    The same score and matching as :class:`PSMDID`; the DID is the weighted two-way
    fixed-effects regression with each subject's ATT weight (treated 1, control
    ``sum_i w_ij``) in every period. With common timing in a balanced panel it equals the
    kernel-matching DID ``mean_i [dY_i - sum_j w_ij dY_j]`` on pre/post means (Heckman,
    Ichimura and Todd 1997; Stata ``diff, kernel``). Not the route of seed 002's Table 5,
    which re-runs an unweighted DID on the matched sample (:class:`PSMDID`).

    Notes
    -----
    Model: weighted least squares of ``y_it = a_i + l_t + tau d_it + x_it'b + e_it`` with
    weights ``w_i``. Identification: parallel trends conditional on the score, no
    anticipation, overlap. Cluster-robust SEs use the weighted scores and treat the weights
    as fixed; the bootstrap re-estimates them.
    """

    label: str = "psm_did_weighted"

    route: ClassVar[str] = "weighted"


def _psm_terms(did_terms: pd.DataFrame, balance: pd.DataFrame) -> pd.DataFrame:
    """DID coefficients followed by one balance row per covariate (``term`` ``smd:<name>``,
    ``estimate`` = SMD after matching, inference columns NaN; ``kind`` tells them apart)."""
    n_c, n_b = len(did_terms), len(balance)
    nan_b = np.full(n_b, np.nan)
    cols: dict[str, Any] = {}
    for col in did_terms.columns:
        top = did_terms[col].to_numpy()
        if col == "term":
            bottom = np.array([f"smd:{c}" for c in balance["covariate"]], dtype=object)
        elif col == "estimate":
            bottom = balance["smd_after"].to_numpy(float)
        elif top.dtype.kind == "f":
            bottom = nan_b
        else:
            bottom = np.full(n_b, None, dtype=object)
        cols[col] = np.concatenate([top.astype(object) if bottom.dtype == object else top, bottom])
    cols["kind"] = np.array(["coefficient"] * n_c + ["balance"] * n_b, dtype=object)
    for col in ("smd_before", "smd_after", "vr_before", "vr_after", "mean_treated",
                "mean_control", "mean_treated_after", "mean_control_after"):
        cols[col] = np.concatenate([np.full(n_c, np.nan), balance[col].to_numpy(float)])
    return pd.DataFrame(cols, copy=False)


__all__ = ["BOOT_CI", "MAX_BOOT_FAIL_SHARE", "PSMDID", "PSMDIDWeighted", "PSM_INFERENCE",
           "WEIGHT_COLUMN", "did_coefficient"]
