"""Event study: leads and lags of treatment in a two-way fixed-effects regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import event_time, fe_arrays
from .panel import excluding_always_treated, EstimationError, OptionError, check_choice, check_panel
from .result import Estimate
from .regression import ALL_SE, CR2_DISTS, InferenceOptions, fit_fe


def event_dummies(
    rel: np.ndarray, leads: int, lags: int, ref: int, bin_endpoints: bool
) -> tuple[dict[str, np.ndarray], list[int], np.ndarray]:
    """Event-time indicator columns for a window ``[-leads, lags]`` without ``ref``.

    Parameters
    ----------
    rel
        Periods since treatment per row (NaN for never-treated units).
    bin_endpoints
        If True the end dummies absorb everything beyond them (``k <= -leads`` and
        ``k >= lags``); if False rows of treated units outside the window are flagged for
        removal (``keep`` False) so that they do not silently join the reference period.

    Returns
    -------
    columns, event_times, keep
    """
    k = np.where(np.isnan(rel), np.nan, rel)
    keep = np.ones(rel.shape[0], dtype=bool)
    if bin_endpoints:
        k = np.clip(k, -leads, lags)
    else:
        outside = ~np.isnan(k) & ((k < -leads) | (k > lags))
        keep &= ~outside
    times = [e for e in range(-leads, lags + 1) if e != ref]
    cols = {f"ev{e:+d}": (k == e).astype(float) for e in times}
    return cols, times, keep


def event_dummy_matrix(
    rel: np.ndarray, leads: int, lags: int, ref: int, bin_endpoints: bool
) -> tuple[list[str], np.ndarray, list[int], np.ndarray]:
    """:func:`event_dummies` as one ``(N, k)`` matrix (one pass, no column per event time).

    Returns
    -------
    names, matrix, event_times, keep
        Column names ``ev+k``, the indicators, the event times and the rows kept (as
        :func:`event_dummies`, whose columns these are, in the same order).
    """
    keep = np.ones(rel.shape[0], dtype=bool)
    has = ~np.isnan(rel)
    k = np.where(has, rel, 0.0)
    if bin_endpoints:
        k = np.clip(k, -leads, lags)
    else:
        keep &= ~(has & ((k < -leads) | (k > lags)))
    times = [e for e in range(-leads, lags + 1) if e != ref]
    col_of = np.full(leads + lags + 1, -1, dtype=np.intp)
    col_of[[e + leads for e in times]] = np.arange(len(times))
    inside = has & (k >= -leads) & (k <= lags)
    rows = np.flatnonzero(inside)
    cols = col_of[k[rows].astype(np.intp) + leads]
    ok = cols >= 0                       # the reference period has no column
    mat = np.zeros((rel.shape[0], len(times)))
    mat[rows[ok], cols[ok]] = 1.0
    return [f"ev{e:+d}" for e in times], mat, times, keep


@dataclass(frozen=True)
class EventStudy(InferenceOptions):
    """Dynamic two-way fixed-effects regression (event study).

    ``y_it = a_i + l_t + sum_{k != ref} b_k 1[t - g_i = k] + x_it'c + e_it``

    Parameters
    ----------
    outcome, controls
        Outcome and covariate columns.
    leads, lags
        Window ``[-leads, lags]`` of event times; ``None`` uses every observed event time
        (then nothing is binned).
    ref
        Omitted reference event time (default -1, the period before treatment).
    bin_endpoints
        Bin event times beyond the window into the end dummies (default) or drop those
        treated observations.
    weights
        Optional column of observation weights (e.g. population): weighted least squares,
        as fixest's ``weights =``; the estimand weights effects alike.
    cluster, se, ssc, dist, alpha, wild_type, wild_weights, wild_draws
        Inference, keyword only (:class:`~estimators.regression.InferenceOptions`, as in
        :class:`estimators.twfe.TWFE`). The event study offers CR2 with Bell-McCaffrey or
        Imbens-Kolesar degrees of freedom (per term and for the headline) and the wild
        cluster bootstrap of the headline (``dist="wild"``, drawing from ``rng``; the
        event-time rows stay analytic). The few-treated intervals (Conley-Taber,
        Ferman-Pinto) apply to TWFE's single coefficient only.

    pretest
        The pre-test of parallel trends reported as ``pretrend_p``: ``"wald"`` (default,
        below) or ``"sidak"``: the largest pre-period ``|t|`` with Sidak's adjustment
        ``1 - (1 - p_min)^q``, using each term's own p-value (so its inference options).
        With few treated clusters the Wald test's covariance is too noisy: in
        ``experiment=size`` (6 pilots of 30) it rejects 25% of draws where parallel trends
        hold; ``se="cr2", dist="satterthwaite", pretest="sidak"`` rejects 5.5%. Both
        p-values are in ``diagnostics`` (``pretrend_wald_p``, ``pretrend_sidak_p``).

    Notes
    -----
    Headline ``ATT_post`` is the equally weighted mean of the post-period coefficients
    ``b_0 .. b_lags``. The pre-trend test is the joint Wald test that every pre-period
    coefficient is zero: ``W = b' V^{-1} b / q`` against F(q, G-1) with clustered SEs and
    ``dist="t"`` (Stata's ``test`` after ``xtreg``), chi2(q)/q otherwise. Works with a
    common date and with staggered dates; with staggered dates and heterogeneous effects the
    coefficients mix cohorts with possibly negative weights (Sun and Abraham 2021).
    """

    outcome: str
    controls: Sequence[str] = ()
    leads: int | None = 5
    lags: int | None = 5
    ref: int = -1
    bin_endpoints: bool = True
    weights: str | None = None
    pretest: str = "wald"
    label: str = "event_study"

    SE_CHOICES: ClassVar[tuple[str, ...]] = ALL_SE
    DIST_CHOICES: ClassVar[tuple[str, ...]] = ("t", "normal", *CR2_DISTS, "wild")

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference(weights=self.weights)
        for name, v in (("leads", self.leads), ("lags", self.lags)):
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 0):
                raise OptionError(f"{name}={v!r} must be a non-negative integer or None")
        if self.ref >= 0:
            raise OptionError(f"ref={self.ref} must be a pre-treatment event time (negative)")
        check_choice("pretest", self.pretest, ("wald", "sidak"))
        if self.leads is not None and self.ref < -self.leads:
            raise OptionError(f"ref={self.ref} lies outside the event window "
                              f"[-{self.leads}, {self.lags}]")

    def _window(self, panel: pd.DataFrame) -> tuple[np.ndarray, int, int]:
        self.check()
        rel = event_time(panel)
        observed = rel[~np.isnan(rel)]
        if observed.size == 0:
            raise EstimationError("no treated unit: the event study has no event time")
        leads = int(-observed.min()) if self.leads is None else int(self.leads)
        lags = int(observed.max()) if self.lags is None else int(self.lags)
        if self.ref >= 0:
            raise OptionError(f"ref={self.ref} must be a pre-treatment event time (negative)")
        if not -leads <= self.ref <= lags:
            raise OptionError(f"ref={self.ref} lies outside the event window [-{leads}, {lags}]")
        return rel, leads, lags

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values on a simulated panel: for each event-time term, the mean effect over
        treated observations in that (binned) event time minus the same at ``ref``; for
        ``ATT_post``, the equally weighted mean of the post terms."""
        rel, leads, lags = self._window(panel)
        te = panel[f"te_{self.outcome}"].to_numpy()
        wt = panel[self.weights].to_numpy(float) if self.weights else np.ones(te.size)
        k = np.clip(rel, -leads, lags) if self.bin_endpoints else rel
        observed = ~np.isnan(k)

        def mean_at(e: int) -> float:
            m = observed & (k == e)
            return float(np.average(te[m], weights=wt[m])) if m.any() else float("nan")

        base = mean_at(self.ref)
        out = {f"ev{e:+d}": mean_at(e) - base for e in range(-leads, lags + 1) if e != self.ref}
        post = [out[f"ev{e:+d}"] for e in range(0, lags + 1)]
        out["ATT_post"] = float(np.nanmean(post))
        return out

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the event study on ``panel``; ``rng`` draws the wild bootstrap's weights
        (``dist="wild"``) and is not used otherwise."""
        self.check()
        cluster = self.cluster_column
        _, unit, time, arrays = check_panel(panel, (self.outcome,), tuple(self.controls))
        rel, leads, lags = self._window(panel)
        names, mat, times, keep = event_dummy_matrix(rel, leads, lags, self.ref,
                                                     self.bin_endpoints)
        notes: list[str] = []
        data = panel
        if not keep.all():
            data = panel.loc[keep]
            mat = mat[keep]
            notes.append(f"{int((~keep).sum())} treated observations outside the window "
                         f"[-{leads}, {lags}] dropped (bin_endpoints=False)")
        checked = (unit, time, arrays) if keep.all() else None
        arrays = fe_arrays(data, self.outcome, tuple(self.controls), cluster=cluster,
                           extra_matrix=(names, mat), validate=not keep.all(),
                           checked=checked,
                           weights=self.weights,
                           extra_first=True)  # collinearity drops controls, not event times
        k_c = len(self.controls)
        res = fit_fe(arrays, self.se, self.ssc, self.dist)
        n_ev = len(times)
        binned = np.zeros(n_ev + k_c, dtype=bool)
        if self.bin_endpoints and self.leads is not None:
            binned[:n_ev] |= np.asarray(times) == -leads
        if self.bin_endpoints and self.lags is not None:
            binned[:n_ev] |= np.asarray(times) == lags
        terms = res.terms(self.alpha,
                          event_time=np.r_[np.asarray(times, dtype=float), np.full(k_c, np.nan)],
                          binned=binned)
        notes.extend(f"{n} not identified: {r}" for n, r in zip(res.names, res.fit.reasons) if r)

        ids = res.identified
        ev_names = [f"ev{e:+d}" for e in times]
        post = [n for n, e in zip(ev_names, times) if e >= 0 and n in ids]
        pre = [n for n, e in zip(ev_names, times) if e < 0 and n in ids]
        if not post:
            raise EstimationError("no post-treatment event time is identified")
        coef = res.fit.coef
        w = np.zeros(len(ids))
        w[[ids.index(n) for n in post]] = 1.0 / len(post)
        inf = self.contrast_inference(res, w, rng=rng)
        notes.extend(inf.notes)
        diagnostics: dict[str, float] = {"n_pre_terms": float(len(pre)), **inf.diagnostics}
        if pre:
            idx = [ids.index(n) for n in pre]
            b = coef[idx]
            v = res.cov[np.ix_(idx, idx)]
            q = len(idx)
            wald = float(b @ np.linalg.solve(v, b)) / q
            if res.df is None:
                p = float(special.chdtrc(q, wald * q))
            else:
                p = float(special.fdtrc(q, res.df, wald))
            pre_p = terms.set_index("term").loc[pre, "p_value"].to_numpy(float)
            p_min = float(np.nanmin(pre_p)) if np.isfinite(pre_p).any() else float("nan")
            sidak = float(-np.expm1(q * np.log1p(-p_min))) if p_min < 1 else 1.0
            diagnostics.update({"pretrend_F": wald, "pretrend_wald_p": p,
                                "pretrend_sidak_p": sidak, "pretrend_df1": float(q),
                                "pretrend_p": p if self.pretest == "wald" else sidak})
        else:
            notes.append("no pre-period coefficient: the pre-trend test is not available")
        ev_ids = [n for n in ev_names if n in ids]
        ix = [ids.index(n) for n in ev_ids]
        event_cov = pd.DataFrame(res.cov[np.ix_(ix, ix)], index=ev_ids, columns=ev_ids)
        return Estimate(
            estimator=self.label,
            term="ATT_post",
            estimate=inf.estimate,
            std_error=inf.std_error,
            p_value=inf.p_value if inf.std_error > 0 else float("nan"),
            conf_low=inf.conf_low,
            conf_high=inf.conf_high,
            alpha=self.alpha,
            n_obs=res.dof.n_obs,
            n_units=res.dof.n_units,
            n_clusters=res.dof.n_clusters,
            inference=inf.inference,
            terms=terms,
            diagnostics=diagnostics,
            notes=tuple(notes),
            event_cov=event_cov,
        )
