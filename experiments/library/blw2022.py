"""Baker, Larcker and Wang (2022): TWFE against the staggered-adoption estimators in
their six simulations (``experiment=blw2022``; the panel is ``simulate/staggered.py``).

The paper reports its Monte Carlo results as figures (Figure 2: densities of 500 TWFE
estimates per simulation with the true ATT; Figure 6: the same for Callaway-Sant'Anna,
Sun-Abraham and stacked DID) and states the pattern in words: TWFE centred on the truth
where adoption is not staggered or effects are constant and equal (simulations 1-3),
biased where staggered effects differ by cohort or grow with exposure (4-6), of the wrong
sign in simulation 6; the alternatives centred on the truth in all six. Those statements
are the numbers below (a bias of zero). The sizes of TWFE's biases depend on Compustat's
moments and are not printed in the paper; ``tests/test_design_blw.py`` checks them
against the population TWFE estimand instead (TWFE on the noiseless effect surface: the
Goodman-Bacon weighted average of the 2x2 comparisons).
"""

from __future__ import annotations

from experiments.designs import DesignInfo, PaperNumber

_REF = ("Baker, A. C., Larcker, D. F. and Wang, C. C. Y. (2022), 'How much should we "
        "trust staggered difference-in-differences estimates?', Journal of Financial "
        "Economics 144(2), 370-395")
_CODE = "replication code github.com/andrewchbaker/JFE_DID, Code/1b, run_sim"
_FIG2 = "Section 3.1.1 and Figure 2 (TWFE estimates centred on the true ATT)"
_FIG6 = "Section 4.2 and Figure 6 (alternative estimators centred on the truth)"

_NUMBERS = tuple(
    [PaperNumber(what=f"TWFE bias, simulation {s} (no bias: {why})", value=0.0,
                 source=_FIG2, diagnosand="bias", estimator="twfe",
                 cell={"data.simulation": str(s)})
     for s, why in ((1, "one treatment date"), (2, "one date, dynamic effects"),
                    (3, "staggered, constant equal effects"))]
    + [PaperNumber(what=f"{label} bias, simulation {s}", value=0.0, source=_FIG6,
                   diagnosand="bias", estimator=est, cell={"data.simulation": str(s)})
       for est, label in (("cs_notyet", "Callaway-Sant'Anna (not yet treated)"),
                          ("sun_abraham", "Sun-Abraham"), ("stacked", "stacked DID"))
       for s in range(1, 7)]
)

DESIGNS = [
    DesignInfo(
        name="blw2022",
        title="Baker-Larcker-Wang's six simulations: TWFE vs CS, SA, imputation, stacked",
        paper=_REF,
        demonstrates=(
            "TWFE recovers the ATT with one treatment date (simulations 1-2) and with "
            "staggered constant equal effects (3); with staggered adoption and effects that "
            "differ by cohort or grow with exposure (4-6) it is biased, in simulation 6 "
            "wrong-signed (about -0.08 against a true ATT of 0.39 here), because already "
            "treated firms serve as controls. Callaway-Sant'Anna, Sun-Abraham, imputation "
            "and stacked DID compare treated firms with clean controls only."),
        parameters=(
            ("firm-year panel 1980-2015 (36 years)", "Section 3.1: Compustat 1980-2015"),
            ("1000 firms", "working-paper version (SSRN 3794018), DiD_Codes/Final Code/"
             "Simulation.R: unit = 1:1000; JFE: every Compustat firm"),
            ("state of incorporation uniform over 50 states; treatment by state in random "
             "order", _CODE + ": sample(state.abb, n, replace = TRUE)"),
            ("sims 1-2: states 1-25 treated from 1998, 26-50 never", _CODE),
            ("sims 3-6: states 1-17 from 1989, 18-35 from 1998, 36-50 from 2007", _CODE),
            ("effects in SDs of ROA: sim 1 0.5; sim 2 0.05(k+1); sim 3 0.5; sim 4 0.5/0.3/0.1; "
             "sim 5 0.03(k+1); sim 6 (0.05/0.03/0.01)(k+1), k = years since adoption",
             _CODE + " (delta, delta_base); Section 3.1.1"),
            ("firm effect, year effect, residual ~ N(0, 0.5^2) each; SD of ROA = "
             "sqrt(3) x 0.5 = 0.866", "working-paper version, Simulation.R (rnorm(., 0, 0.5))"),
            ("SEs clustered by state (TWFE, Sun-Abraham, stacked); CS and imputation "
             "by firm", _CODE + ": feols(..., cluster = 'incorp')"),
            ("500 simulations", _CODE + " (x <- 1:500); default here 100 per simulation"),
        ),
        numbers=_NUMBERS,
        fidelity=(
            "DGP of the authors' code except the outcome's moments: the JFE draws firm and "
            "year effects and residuals from their empirical distributions in Compustat "
            "(microdata that cannot ship); here they are normal with the working paper's "
            "SDs (0.5 each) and 1000 firms. TWFE's bias depends only on the effect surface "
            "and cohort shares, which are the paper's. The paper reports figures, not "
            "tables: the numbers compared are its stated biases of zero. Its alternative "
            "estimators target the first six years of the 1989 and 1998 cohorts (te_5); "
            "didlab's each target their own aggregate (CS and Sun-Abraham: every cell "
            "before 2007; stacked: the trimmed aggregate in [-3, +2])."),
        # measured 2026-11-28: `didlab experiment=blw2022`, loky on the 2 shared cores, fresh
        # store (122 s at load ~4; 71 s at load 1.8, imputation now fitting sims 3-6)
        seconds=70.7,
    ),
]
