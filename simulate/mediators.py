"""Mediator channels for the province simulator: the policy moves a covariate, and the
covariate moves emissions, with known paths ``a`` and ``b``, so that every draw carries its
true indirect and direct effects.

A :class:`Channel` turns one of the province covariates (``lnes``, ``lntech``, ``lnis2``,
``lnfdi``) into a mediator. With ``M0`` the mediator the simulator would otherwise draw
(its untreated potential value) and ``D`` the treatment indicator (after anticipation),

.. math::

    M_{it} = M^0_{it} + a\\,D_{it}, \\qquad
    Y_{it} = Y^0_{it} + \\tau_{it} + b\\,(M_{i,t-k} - M^0_{i,t-k}),

where ``tau_it`` is the direct effect (the simulator's :class:`~simulate.design.Effect`),
``k`` the channel's lag and ``Y0`` the untreated outcome, which depends on the mediator
through ``b * M0_{i,t-k}`` (in place of seed 002 Table 4's contemporaneous coefficient on
that covariate). The truth columns are ``te_<m> = M - M0`` (the effect of treatment on the
mediator), ``ie_<outcome>_<m> = b (M_{t-k} - M0_{t-k})`` (the indirect effect through ``m``
in each unit-period), ``de_<outcome> = tau`` (the direct effect) and ``te_<outcome>``, their
sum.

``trend_sd`` adds an unobserved province-specific linear trend to both the mediator and
the untreated outcome: the mediator-outcome relation is then confounded (sequential
ignorability fails) although treatment stays as good as random, so Baron-Kenny's ``b`` and
``a*b`` are biased while ``a`` and the total effect are not.

This module draws only when :func:`~simulate.province.draw_province` is given channels, and
then only after every draw of the default design, so a panel with channels shares all its
other random parts with the default panel of the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from estimators.panel import OptionError

#: covariates that may be mediators: GDP per capita and population enter the intensity
#: outcome's denominator (lncei = lnce - log GDP), so they are not offered
MEDIATOR_COLUMNS = ("lnis2", "lnfdi", "lntech", "lnes")


@dataclass
class Channel:
    """One mediator channel (a plain, OmegaConf-compatible dataclass; read-only here)."""

    mediator: str = "lnes"    # covariate column the policy moves (one of MEDIATOR_COLUMNS)
    # effect of treatment on the mediator (log points) from the first treated year on,
    # earlier under anticipation: the a path
    a: float = 0.0
    # effect of the mediator on the log outcomes; None = seed 002 Table 4 model 2's
    # coefficient on that covariate times data.covariate_effects: the b path
    b: float | None = None
    # the outcome responds to the mediator `lag` years later (seed 002 lags technology and
    # industry structure two years); the lag's pre-sample values are drawn backwards
    lag: int = 0
    # SD across provinces of an unobserved linear trend (per year) shared by the mediator
    # and the untreated outcome; breaks sequential ignorability (mediator-outcome
    # confounding), so Baron-Kenny's b and a*b are biased
    trend_sd: float = 0.0

    def validate(self, where: str, n_years: int) -> None:
        if self.mediator not in MEDIATOR_COLUMNS:
            shown = ", ".join(repr(m) for m in MEDIATOR_COLUMNS)
            raise OptionError(f"{where}.mediator={self.mediator!r} is not accepted; use one of {shown}")
        if not isinstance(self.lag, (int, np.integer)) or not 0 <= self.lag <= n_years - 2:
            raise OptionError(f"{where}.lag={self.lag!r} must be an integer in 0..{n_years - 2}")
        if not self.trend_sd >= 0:
            raise OptionError(f"{where}.trend_sd={self.trend_sd!r} must be >= 0")
        if not np.isfinite(self.a) or (self.b is not None and not np.isfinite(self.b)):
            raise OptionError(f"{where}: a={self.a!r} and b={self.b!r} must be finite numbers")


def seed002_channels() -> tuple[Channel, ...]:
    """Channels with seed 002's Tables 6-8 paths for lnce: energy structure (same year),
    technology and industry structure (lagged two years)."""
    return (
        Channel("lnes", a=-0.218, b=0.253, lag=0),
        Channel("lntech", a=0.295, b=-0.0500, lag=2),
        Channel("lnis2", a=-0.0265, b=0.331, lag=2),
    )


def validate_channels(channels: Sequence[Channel], n_years: int) -> None:
    """Check every channel and that no covariate is a mediator twice."""
    seen: set[str] = set()
    for j, ch in enumerate(channels):
        where = f"channels[{j}]"
        if not isinstance(ch, Channel):
            raise OptionError(f"{where} must be a simulate.mediators.Channel, got {type(ch).__name__}")
        ch.validate(where, n_years)
        if ch.mediator in seen:
            raise OptionError(f"{where}.mediator={ch.mediator!r} appears twice; one channel per covariate")
        seen.add(ch.mediator)


@dataclass(frozen=True)
class CovariateParts:
    """How the simulator built one untreated log covariate: ``x = level + growth*tau + v``
    (then capped at ``cap``), with ``v`` a stationary AR(1) of marginal SD ``noise_sd``."""

    level: np.ndarray         # (n_units,) province location
    growth: float
    noise_sd: float
    noise: np.ndarray         # (n_units, n_years) the AR(1) noise v
    cap: float | None = None


@dataclass(frozen=True)
class ChannelDraw:
    """What the channels add to one draw (arrays are ``(n_units, n_years)``)."""

    untreated: dict[str, np.ndarray]       # M0 (with the confounding trend, capped)
    observed: dict[str, np.ndarray]        # M = M0 + te
    effect: dict[str, np.ndarray]          # te_<m> = M - M0
    outcome_terms: dict[str, np.ndarray]   # b * M0_{t-k}: the mediator's term in Y0
    indirect: dict[str, np.ndarray]        # b * te_<m>_{t-k}
    b: dict[str, float]
    outcome_trend: np.ndarray              # confounding trends added to Y0
    lags: dict[str, int] = field(default_factory=dict)


def draw_channels(
    rng: np.random.Generator,
    channels: Sequence[Channel],
    parts: Mapping[str, CovariateParts],
    untreated: Mapping[str, np.ndarray],
    years: np.ndarray,
    cohort: np.ndarray,
    anticipation: int,
    rho_x: float,
    beta: Mapping[str, float],
) -> ChannelDraw:
    """Apply the channels to one draw.

    Parameters
    ----------
    untreated
        The simulator's log covariates for the sample years (already capped).
    parts
        How each was built, to extend a lagged mediator backwards before the first year:
        a stationary Gaussian AR(1) is time-reversible, so ``v_{t-1} = rho v_t +
        noise_sd sqrt(1 - rho^2) e`` draws the pre-sample noise from its exact law.
    cohort, anticipation
        First treated year per unit (0 = never) and years the effect starts early.
    beta
        Default ``b`` per covariate (Table 4 times ``covariate_effects``).

    Randomness is drawn channel by channel: pre-sample innovations (``lag > 0``) then the
    trend slopes (``trend_sd > 0``); nothing is drawn for a channel that needs neither.
    """
    n_units, n_years = untreated[next(iter(untreated))].shape
    tbar = years.mean()
    treated = cohort > 0
    out = ChannelDraw({}, {}, {}, {}, {}, {}, np.zeros((n_units, n_years)))
    for ch in channels:
        m, k = ch.mediator, int(ch.lag)
        p = parts[m]
        years_ext = np.arange(years[0] - k, years[-1] + 1)
        tau_ext = (years_ext - tbar)[None, :]
        x0 = np.empty((n_units, n_years + k))
        x0[:, k:] = untreated[m]
        if k:
            e = rng.standard_normal((n_units, k))
            v = np.empty((n_units, k + 1))
            v[:, k] = p.noise[:, 0]
            scale = p.noise_sd * np.sqrt(1 - rho_x**2)
            for j in range(k - 1, -1, -1):
                v[:, j] = rho_x * v[:, j + 1] + scale * e[:, j]
            pre = p.level[:, None] + p.growth * tau_ext[:, :k] + v[:, :k]
            x0[:, :k] = pre if p.cap is None else np.minimum(pre, p.cap)
        if ch.trend_sd > 0:
            slope = ch.trend_sd * rng.standard_normal(n_units)
            x0 = x0 + slope[:, None] * tau_ext
            if p.cap is not None:
                x0 = np.minimum(x0, p.cap)
            out.outcome_trend[:] += slope[:, None] * tau_ext[:, k:]
        on = treated[:, None] & (years_ext[None, :] >= (cohort - anticipation)[:, None])
        x1 = x0 + ch.a * on
        if p.cap is not None:
            x1 = np.minimum(x1, p.cap)
        te = x1 - x0                       # exact even where the cap binds
        b = float(beta[m]) if ch.b is None else float(ch.b)
        out.untreated[m] = x0[:, k:]
        out.observed[m] = x1[:, k:]
        out.effect[m] = te[:, k:]
        out.outcome_terms[m] = b * x0[:, :n_years]
        out.indirect[m] = b * te[:, :n_years]
        out.b[m] = b
        out.lags[m] = k
    return out
