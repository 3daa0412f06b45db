"""Bertrand, Duflo and Mullainathan (2004): placebo laws on a state panel with serially
correlated outcomes (``experiment=bdm2004``; the panel is ``simulate/states.py``, the
block bootstrap and the collapsed estimator ``estimators/bdm.py``).

BDM's headline numbers use CPS microdata (log weekly earnings of women 25-50, 1979-1999,
aggregated to state-year cells), which cannot ship: those are compared for the pattern
only. Their AR(1) Monte Carlo (Table II, panel B) is specified fully -- 50 states, 21
years, state and year effects, an AR(1) error, half the states treated from a year drawn
uniformly in 1985-1995 -- except for scale parameters that sizes do not depend on (every
test here is invariant to the error's scale and to the state and year effects) and the
initial condition (taken stationary): its rejection rates of conventional OLS are
reproduced as numbers (``tests/test_design_bdm.py``).

Sources of the numbers: every number here (Table II panels A and B, p. 257; the CPS rows
of Tables V and VIII) is as transcribed from the published article (QJE 119(1)) in the
paper review of the ``diff-diff`` project (igerber/diff-diff,
docs/methodology/papers/bertrand-duflo-mullainathan-2004-review.md); the article itself
could not be consulted here. Table II panel B agrees with the rates our exact DGP gives
(tests/test_design_bdm.py); check the CPS rows against the PDF before quoting them.
"""

from __future__ import annotations

from experiments.designs import DesignInfo, PaperNumber

_REF = ("Bertrand, M., Duflo, E. and Mullainathan, S. (2004), 'How much should we trust "
        "differences-in-differences estimates?', Quarterly Journal of Economics 119(1), "
        "249-275")
_T2B = "Table II, panel B (AR(1) Monte Carlo, 50 states, 21 years, OLS), p. 257"
_SIZE = {"effect.att": "0.0"}

_NUMBERS = (
    # reproduced: the AR(1) DGP is the paper's
    *[PaperNumber(what=f"conventional OLS SE, AR(1) rho {rho}, 50 states: rejection of a "
                       "true null (placebo laws)", value=value, source=_T2B,
                  diagnosand="rejection", estimator="twfe_conventional",
                  cell={"data.rho": rho, "data.n_states": "50", **_SIZE})
      for rho, value in (("0.0", 0.053), ("0.4", 0.19), ("0.8", 0.373))],
    # pattern only: CPS wages (microdata)
    PaperNumber(what="conventional OLS SE, CPS state-year log wages, 50 states", value=0.435,
                source="Table II, panel A, row 3 (CPS aggregate), p. 257", diagnosand="rejection",
                estimator="twfe_conventional",
                cell={"data.rho": "0.8", "data.n_states": "50", **_SIZE}, reproduced=False),
    *[PaperNumber(what=f"block bootstrap, CPS, {n} states", value=value,
                  source="Table V (block bootstrap), CPS rows", diagnosand="rejection",
                  estimator="bdm_bootstrap",
                  cell={"data.rho": "0.8", "data.n_states": n, **_SIZE}, reproduced=False)
      for n, value in (("50", 0.065), ("20", 0.13), ("10", 0.23), ("6", 0.435))],
    *[PaperNumber(what=f"clustered SE (arbitrary covariance), CPS, {n} states", value=value,
                  source="Table VIII (arbitrary variance-covariance matrix), CPS rows",
                  diagnosand="rejection", estimator="twfe",
                  cell={"data.rho": "0.8", "data.n_states": n, **_SIZE}, reproduced=False)
      for n, value in (("50", 0.063), ("10", 0.08), ("6", 0.115))],
    PaperNumber(what="clustered SE, CPS, 50 states: power against a 2% effect", value=0.74,
                source="Table VIII, CPS, 50 states, 2% effect column (data.sigma is "
                       "calibrated to it)", diagnosand="rejection", estimator="twfe",
                cell={"data.rho": "0.8", "data.n_states": "50", "effect.att": "0.02"},
                reproduced=False),
)

DESIGNS = [
    DesignInfo(
        name="bdm2004",
        title="Bertrand-Duflo-Mullainathan placebo laws: which SEs survive serial correlation",
        paper=_REF,
        demonstrates=(
            "With a persistent outcome and a persistent treatment, conventional OLS standard "
            "errors reject a true null far too often (about 37% at rho 0.8 with 50 states, "
            "at any number of states); clustering by state, the block bootstrap and "
            "randomization inference keep their size with 50 states. With few states the "
            "block bootstrap over-rejects again (about 10% with 6-10 states; BDM: 23-44% on "
            "CPS data), while clustering with t(G-1) critical values stays close to 5% here "
            "(BDM: 8-12% with 6-10 CPS states) and randomization inference stays exact. The "
            "collapse (residual aggregation) is conservative (about 2% at 5%) and has the "
            "least power: step 1 absorbs part of the effect into the year effects, and its "
            "paired t overstates the standard error."),
        parameters=(
            ("50 states x 21 years, 1979-1999", "Section III: CPS MORG 1979-1999; Table II "
             "panel B uses the same dimensions"),
            ("outcome = state effect + year effect + stationary AR(1) error, rho in "
             "{0, 0.4, 0.8}", "Table II panel B (rho = -0.4, 0, 0.2, 0.4, 0.6, 0.8)"),
            ("placebo laws: exactly half the states, each from a year uniform on 1985-1995",
             "Section III, p. 255 and footnote 9"),
            ("number of states 50, 20, 10, 6 (half treated)", "Tables V, VI and VIII "
             "(states sampled from the 50)"),
            ("effect 0 (size) and 2% (power)", "Section III and Tables II-VIII: 'no effect' "
             "and '2% effect' columns"),
            ("error SD 0.035 (marginal): the clustered test's power against 2% at rho 0.8, "
             "50 states, is then about 0.75", "calibrated to Table VIII's CPS power (0.74); "
             "BDM's AR(1) error variance is not used by any size"),
            ("block bootstrap: whole state series resampled, percentile-t, 200 samples",
             "Section IV.B (200 in the text, 400 in Table V's note)"),
            ("residual aggregation: residuals of state and year effects averaged before and "
             "after each treated state's law, OLS on the two-period panel",
             "Section IV.C, Table VI"),
            ("clustered SEs by state", "Section IV.E, Table VIII"),
            ("randomization inference over placebo assignments (199 permutations, "
             "studentized)", "footnote 11 (p. 256)"),
            ("400 draws per cell", "BDM: 200-400 placebo laws per cell (Table II note)"),
        ),
        numbers=_NUMBERS,
        fidelity=(
            "Exact DGP for the AR(1) simulations of Table II panel B (sizes are invariant to "
            "the error's scale and to the state and year effects; the AR(1) starts from its "
            "stationary law, which BDM do not state). BDM's CPS results (Tables II A, V, VI, "
            "VIII) use microdata that cannot ship: they are shown beside the AR(1) rho 0.8 "
            "cells for the pattern only. Power depends on the error SD, calibrated here. "
            "Monte Carlo error at the default 400 draws is about 2.4 points at a 37% rate "
            "(seed 0 gives 0.39 at rho 0.8; its first 200 draws alone gave 0.48, 1,000 draws "
            "0.379, seed 1 0.342); tests/test_design_bdm.py checks every rho of Table II "
            "panel B with 3,000 draws."),
        # measured 2026-11-28: didlab experiment=bdm2004, 24 cells x 400 draws, 2 shared cores
        # (load 1.6 before the run), fresh store
        seconds=167.2,
    ),
]
