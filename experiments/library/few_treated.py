"""Few treated clusters: Conley and Taber (2011) and MacKinnon and Webb (2017)
(``experiment=few_treated``; the panel is ``simulate/states.py`` with US-population state
sizes).

MacKinnon and Webb simulate individual-level data in 50 clusters proportional to US state
populations and report rejection frequencies as the number of treated clusters G1 varies;
their placebo-law experiments use CPS microdata. A state-year panel is their setting
aggregated to state-year means: a mean over a state's individuals has a variance
inversely proportional to its population (``data.sigma_size=1``), which is what makes the
clusters "wildly different". Their exact micro DGP (individual counts, intra-cluster
correlation) is not a state-year panel, and their rejection frequencies are reported in
figures that could not be consulted here; this design therefore reproduces the pattern
their abstract and Conley and Taber state, tested in ``tests/test_design_few_treated.py``:

- the cluster-robust t(G-1) test over-rejects severely with one to three treated clusters
  and approaches 5% as G1 grows (Conley and Taber 2011, Section I; MacKinnon and Webb 2017,
  abstract: "this procedure fails when a small number of clusters is treated");
- the wild cluster restricted bootstrap almost never rejects with one or two treated
  clusters (it under-rejects) and is close to 5% from about five;
- randomization inference over the treated states is exact under random assignment at
  every G1 (the numbers below: a permutation test of an exchangeable assignment).
"""

from __future__ import annotations

from experiments.designs import DesignInfo, PaperNumber

_REF = ("Conley, T. G. and Taber, C. R. (2011), 'Inference with \"difference in differences\" "
        "with a small number of policy changes', Review of Economics and Statistics 93(1), "
        "113-125; MacKinnon, J. G. and Webb, M. D. (2017), 'Wild bootstrap inference for "
        "wildly different cluster sizes', Journal of Applied Econometrics 32(2), 233-254")
_EXACT = ("exact by construction: a permutation test of an exchangeable assignment has "
          "size alpha (Lehmann and Romano, Testing Statistical Hypotheses, 3rd ed., "
          "Section 15.2); the premise of Conley and Taber's and MacKinnon and Webb's "
          "randomization inference")

_NUMBERS = tuple(
    PaperNumber(what=f"randomization inference, {g} treated of 50 states: size", value=0.05,
                source=_EXACT, diagnosand="rejection", estimator="ri_twfe",
                cell={"assignment.n_pilots": str(g)})
    for g in (2, 3, 6, 15)
)

DESIGNS = [
    DesignInfo(
        name="few_treated",
        title="Few treated clusters: cluster-robust t, CR2, wild bootstrap, RI, Conley-Taber",
        paper=_REF,
        demonstrates=(
            "With 1-3 treated states of 50 the cluster-robust t(G-1) test rejects a true "
            "null far too often (most of the time with one), even with 50 clusters; the "
            "wild cluster restricted bootstrap swings to almost never rejecting, and is near "
            "5% from about 5-6 treated states; randomization inference keeps its size at "
            "every number of treated states; Conley-Taber is built for one or a few "
            "treated states and over-rejects as they grow (its law ignores the controls' own "
            "errors). The carbon-pilot designs (6 of 30) "
            "sit at the edge of where cluster-robust inference can be trusted."),
        parameters=(
            ("50 states x 1979-1999, one law date (1990)", "Conley-Taber: a few policy "
             "changes among many states; MacKinnon-Webb: 50 state clusters"),
            ("treated states G1 = 1, 2, 3, 4, 6, 8, 10, 15, drawn at random",
             "MacKinnon and Webb (2017): rejection frequencies as G1 varies"),
            ("state sizes = 2010 Census populations; error variance inversely proportional "
             "to population", "MacKinnon and Webb (2017): 'clusters proportional to US "
             "state populations' (abstract)"),
            ("AR(1) error, rho 0.5", "not from the papers: a serially correlated state-year "
             "outcome, as BDM's (clustering by state absorbs any within-state correlation)"),
            ("WCR wild cluster bootstrap, Rademacher weights, 999 draws",
             "MacKinnon and Webb (2017): WCR, Rademacher"),
            ("no effect: every rejection is a false positive", "size experiments of both papers"),
            ("150 draws per cell", "didlab default; experiment.n_reps=1000 for tighter bands"),
        ),
        numbers=_NUMBERS,
        fidelity=(
            "Pattern, not numbers: MacKinnon and Webb's DGP is individual-level (cluster sizes "
            "in individuals, intra-cluster correlation) and their placebo laws use CPS "
            "microdata; here the clusters are state-year means with the variance that "
            "aggregation gives. Conley and Taber's Monte Carlo is likewise not reproduced "
            "cell by cell. The numbers compared are exact properties (randomization "
            "inference's size)."),
        # measured 2026-11-28: didlab experiment=few_treated, 8 cells x 150 draws, 2 shared
        # cores (load 1.5 before the run), fresh store, Conley-Taber's grid law beyond 5 treated
        seconds=71.8,
    ),
]
