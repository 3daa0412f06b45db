"""Fit the generic simulator (simulate/calibrated.py) to a user's panel, save it as a data
config, and run the semi-synthetic placebo of Bertrand, Duflo and Mullainathan (2004).

Estimation (on a balanced or unbalanced panel):

* outcome: a two-way fixed-effects regression of the outcome on the covariates on the
  untreated observations gives ``beta``; unit and year effects of ``y - x'beta`` by
  alternating means; the unit-effect SD net of the noise in each unit's mean; the gap
  between treated and untreated units' effects; the year-effect path;
* persistence: the within-unit lag-one autocorrelation of the two-way residuals with the
  first-order Nickell correction ``rho = (rho_hat (T-1) + 1) / (T-2)``, and the stationary
  SD from the residual variance divided by ``1 - (1/T^2) sum_{s,t} rho^|s-t|`` (the share
  of an AR(1)'s variance that within-unit demeaning keeps);
* covariates: unit means by group (net of the common linear trend), their SDs net of noise,
  the trend, and the same persistence and scale estimates for the deviations;
* selection: the logit slope of being treated on the first covariate's standardised unit
  mean (used as ``assignment.strength`` for selected pilots).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import special

from estimators.design import codes_of
from estimators.panel import COHORT, D, TIME, UNIT, EstimationError, OptionError, PanelError, validate_panel
from .files import write_text
from simulate.calibrated import CalibratedDGP


def _two_way(z: np.ndarray, unit: np.ndarray, time: np.ndarray, n_units: int, n_periods: int,
             iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Unit and period effects of ``z`` by alternating means (exact at convergence)."""
    a = np.zeros(n_units)
    lam = np.zeros(n_periods)
    cu = np.bincount(unit, minlength=n_units)
    ct = np.bincount(time, minlength=n_periods)
    for _ in range(iters):
        a_new = np.bincount(unit, weights=z - lam[time], minlength=n_units) / cu
        lam_new = np.bincount(time, weights=z - a_new[unit], minlength=n_periods) / ct
        done = max(np.abs(a_new - a).max(), np.abs(lam_new - lam).max()) < 1e-12
        a, lam = a_new, lam_new
        if done:
            break
    return a, lam


def _ar_share(rho: float, t: int) -> float:
    """Share of a stationary AR(1)'s variance left after demeaning within a unit over t
    periods: ``1 - (1/t^2) sum_{s,u} rho^|s-u|``."""
    lags = np.arange(t)
    s = t + 2 * np.sum((t - lags[1:]) * rho ** lags[1:])
    return 1 - s / t**2


def _persistence(resid: np.ndarray, unit: np.ndarray, time: np.ndarray, t_bar: float
                 ) -> tuple[float, float]:
    """Nickell-corrected AR(1) coefficient and stationary SD of within-unit residuals."""
    order = np.lexsort((time, unit))
    r, u, t = resid[order], unit[order], time[order]
    pair = (u[1:] == u[:-1]) & (t[1:] == t[:-1] + 1)
    x0, x1 = r[:-1][pair], r[1:][pair]
    if x0.size < 3:
        raise EstimationError("too few consecutive years to estimate persistence")
    rho_hat = float(x0 @ x1 / (x0 @ x0))
    t_eff = max(t_bar, 3.0)
    rho = float(np.clip((rho_hat * (t_eff - 1) + 1) / (t_eff - 2), -0.95, 0.95))
    share = _ar_share(rho, int(round(t_eff)))
    sd = float(np.sqrt(np.mean(resid**2) / max(share, 1e-3)))
    return rho, sd


def calibrate(panel: pd.DataFrame, outcome: str, covariates: Sequence[str] = ()) -> CalibratedDGP:
    """Estimate :class:`~simulate.calibrated.CalibratedDGP` from a panel (see module doc)."""
    covariates = tuple(covariates)
    validate_panel(panel, (outcome,), covariates)
    unit, n_units = codes_of(panel[UNIT].to_numpy())
    years = np.sort(panel[TIME].unique())
    time, n_periods = codes_of(panel[TIME].to_numpy())
    cohort_u = np.zeros(n_units, dtype=np.int64)
    cohort_u[unit] = panel[COHORT].to_numpy()
    treated_u = cohort_u > 0
    t_bar = len(panel) / n_units
    y = panel[outcome].to_numpy(float)
    x = panel[list(covariates)].to_numpy(float) if covariates else np.empty((len(panel), 0))
    untreated = panel[D].to_numpy() == 0

    # --- outcome ----------------------------------------------------------------------
    from estimators.design import fe_arrays
    from estimators.regression import fit_fe

    beta = np.zeros(len(covariates))
    un = panel.loc[untreated]
    if covariates:
        arrays = fe_arrays(un, outcome, covariates, cluster=None, validate=False)
        res = fit_fe(arrays, "conventional", "none", "normal")
        beta = np.zeros(len(covariates))
        beta[res.fit.keep] = res.fit.coef
    z = y - x @ beta
    u0, t0 = unit[untreated], time[untreated]
    a, lam = _two_way(z[untreated], u0, t0, n_units, n_periods)
    resid = z[untreated] - a[u0] - lam[t0]
    rho, sd = _persistence(resid, u0, t0, t_bar)
    counts = np.bincount(u0, minlength=n_units)
    # noise in a unit's mean of T AR(1) draws: sd^2 (1 - share(rho, T))
    noise_var = np.mean([sd**2 * (1 - _ar_share(rho, int(c))) for c in counts if c > 0])
    a_c = a - a[~treated_u].mean()
    # unit effects on the units' (centred) covariate means and the treated indicator
    means = (np.column_stack([np.bincount(unit, weights=x[:, j], minlength=n_units)
                              / np.bincount(unit, minlength=n_units) for j in range(x.shape[1])])
             if covariates else np.empty((n_units, 0)))
    design = np.column_stack([np.ones(n_units), treated_u.astype(float), means - means.mean(axis=0)])
    coef, *_ = np.linalg.lstsq(design, a_c, rcond=None)
    shift = float(coef[1])
    gamma = {c: float(g) for c, g in zip(covariates, coef[2:])}
    dev = a_c - design @ coef
    dof = max(n_units - design.shape[1], 1)
    unit_sd = float(np.sqrt(max(dev @ dev / dof - noise_var, 0.0)))
    level = a[~treated_u].mean()
    year_effects = (lam + level).tolist()

    # --- covariates --------------------------------------------------------------------
    cov_params: dict[str, dict[str, float]] = {}
    tau_all = panel[TIME].to_numpy(float) - years.mean()
    for j, name in enumerate(covariates):
        v = x[:, j]
        tau_mean_u = np.bincount(unit, weights=tau_all, minlength=n_units) / np.bincount(unit, minlength=n_units)
        m_u = np.bincount(unit, weights=v, minlength=n_units) / np.bincount(unit, minlength=n_units)
        # common linear trend: within-unit slope of v on time
        dt = tau_all - tau_mean_u[unit]
        dv = v - m_u[unit]
        trend = float(dt @ dv / (dt @ dt))
        r = dv - trend * dt
        rho_x, sd_x = _persistence(r, unit, time, t_bar)
        a_u = m_u - trend * tau_mean_u
        noise = sd_x**2 * (1 - _ar_share(rho_x, int(round(t_bar))))
        par = {"trend": trend, "rho": rho_x, "sigma": sd_x}
        for g, mask in (("treated", treated_u), ("control", ~treated_u)):
            vals = a_u[mask]
            par[f"mean_{g}"] = float(vals.mean())
            par[f"sd_{g}"] = float(np.sqrt(max(vals.var(ddof=1) - noise, 0.0))) if vals.size > 1 else 0.0
        cov_params[name] = par

    # --- selection on the first covariate ----------------------------------------------------
    selection = 0.0
    if covariates and treated_u.any():
        m_u = np.bincount(unit, weights=x[:, 0], minlength=n_units) / np.bincount(unit, minlength=n_units)
        zsc = (m_u - m_u.mean()) / (m_u.std() or 1.0)
        b = np.zeros(2)
        X = np.column_stack([np.ones(n_units), zsc])
        for _ in range(50):
            p = special.expit(X @ b)
            step = np.linalg.solve((X * (p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2),
                                   X.T @ (treated_u - p))
            b += step
            if np.abs(step).max() < 1e-10 or np.abs(b).max() > 20:
                break
        selection = float(np.clip(b[1], -10, 10))
    sizes = pd.Series(cohort_u[treated_u]).value_counts().sort_index()
    return CalibratedDGP(
        outcome=outcome, first_year=int(years[0]), last_year=int(years[-1]),
        n_units=n_units, cohort_sizes={str(int(g)): int(k) for g, k in sizes.items()},
        unit_sd=unit_sd, year_effects=[float(v) for v in year_effects], rho=rho, sigma=sd,
        treated_shift=shift, beta={c: float(b) for c, b in zip(covariates, beta)}, gamma=gamma,
        covariates=cov_params, selection=selection,
    )


def save_calibration(dgp: CalibratedDGP, path: Path, source: str, controls: Sequence[str]) -> Path:
    """Write the fitted parameters as a ``data=calibrated`` config file."""
    from dataclasses import asdict

    body = {"kind": "calibrated", "source": source, "outcomes": [dgp.outcome],
            "controls": list(controls), "score_covariates": list(controls)[:2],
            **{k: v for k, v in asdict(dgp).items()}}
    text = ("# Fitted by `didlab experiment=calibrate` from " + source + ".\n"
            "# Use it with: didlab experiment=robustness data=calibrated data.from=" + str(path) + "\n"
            + OmegaConf.to_yaml(OmegaConf.create(body)))
    return write_text(path, text)


def load_calibration(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise PanelError(f"calibration file {str(p)!r} does not exist; make one with "
                         "`didlab data=file ... experiment=calibrate`")
    node = OmegaConf.to_container(OmegaConf.load(p))
    if not isinstance(node, dict) or node.get("kind") != "calibrated":
        raise PanelError(f"{p.name!r} is not a calibration written by experiment=calibrate")
    return node


# --- the semi-synthetic placebo -------------------------------------------------------------

def fake_pilots(panel: pd.DataFrame, outcome: str, rng: np.random.Generator,
                effect: float = 0.0, selection: str | None = None,
                strength: float = 2.0) -> pd.DataFrame:
    """Bertrand-Duflo-Mullainathan placebo: the never-treated units' real outcomes with the
    data's cohort sizes given to units among them.

    The fake pilots are drawn uniformly, or, with ``selection``, with probability rising
    in ``exp(strength * z)`` for ``z`` the standardised first-period value of that column
    (as pilots chosen on observables). ``effect`` is added to the outcome of their treated
    cells and recorded as the truth (``te_<outcome>``); with 0 the truth is zero and every
    rejection is false.
    """
    cohort_u = panel.groupby(UNIT)[COHORT].first()
    never = cohort_u.index[cohort_u == 0].to_numpy()
    sizes = cohort_u[cohort_u > 0].to_numpy()
    if never.size <= sizes.size:
        raise EstimationError("the placebo needs more never-treated units than treated ones")
    data = panel[panel[UNIT].isin(never)].copy()
    if selection is None:
        chosen = rng.choice(never, size=sizes.size, replace=False)
    else:
        from simulate.design import pick_pilots

        first = data.sort_values(TIME).groupby(UNIT)[selection].first().reindex(never)
        z = ((first - first.mean()) / (first.std() or 1.0)).to_numpy(float)
        chosen = never[pick_pilots(z, sizes.size, strength, rng)]
    mapping = dict(zip(chosen, rng.permutation(sizes)))
    data[COHORT] = data[UNIT].map(mapping).fillna(0).astype(np.int64)
    data[D] = ((data[COHORT] > 0) & (data[TIME] >= data[COHORT])).astype(np.int8)
    te = effect * data[D].to_numpy(float)
    data[outcome] = data[outcome].to_numpy(float) + te
    data[f"te_{outcome}"] = te
    data[f"y0_{outcome}"] = data[outcome].to_numpy(float) - te
    return data


def bdm_draw(panel: pd.DataFrame, outcome: str, rng: np.random.Generator,
             effect: float = 0.0, selection: str | None = None,
             strength: float = 2.0) -> pd.DataFrame:
    return fake_pilots(panel, outcome, rng, effect, selection, strength)


def placebo_design(panel: pd.DataFrame, outcome: str, estimators: dict, effect: float = 0.0,
                   selection: str | None = None, strength: float = 2.0,
                   cell: str = "bdm_placebo") -> Any:
    """The semi-synthetic placebo as a Monte Carlo design (one cell)."""
    from .montecarlo import Design

    if selection is not None and selection not in panel:
        raise OptionError(f"experiment.bdm.selection={selection!r} is not a column of the "
                          f"panel; columns: {list(panel.columns)[:20]}")
    return Design(functools.partial(bdm_draw, panel, outcome, effect=effect,
                                    selection=selection, strength=strength),
                  estimators, cell=cell, axes={"effect": f"{effect:g}"})
