"""The carbon-pilot designs didlab was built for, listed beside the methods literature's.

Their parameters come from the studies in ``shared/reference/STUDIES.md`` (seed 002: 30
provinces x 2000-2018, 6 pilots from 2011; seed 001: 282 cities x 2009-2022, staggered by
market opening; seed 000: the 2012 NDRC date) through the calibrated simulators
(``simulate/province.py``, ``simulate/city.py``), whose docstrings cite each table.
These studies publish estimates, not simulations: there are no paper numbers to
reproduce, so ``numbers`` is empty and the reports carry no comparison table.

``seconds``: the default run of each, measured 2026-11-28 on this project's 2-core machine
(loky on both cores, a fresh store, load 0.3-2.7 from other work), with the batched
Monte Carlo path.
"""

from __future__ import annotations

from experiments.designs import DesignInfo

_SEED002 = ("Seed 002: pilot policy and provincial carbon emissions (30 provinces, "
            "2000-2018; Tables 1-8)")
_PROVINCE = (("30 provinces x 2000-2018, 6 pilots, treatment from 2011", "seed 002, panel"),
             ("effect -0.3 on log emissions", "seed 002, Table 4: -0.29 to -0.33"),
             ("pilots richer and less coal-dependent", "seed 002, Table 3"))

DESIGNS = [
    DesignInfo(
        name="robustness", group="carbon", seconds=118.6,
        title="Seed 002's design crossed with timing, pilot selection and controls",
        paper=_SEED002,
        demonstrates="Whether the pilots' TWFE effect survives another treatment date, "
                     "pilots selected on GDP and another set of controls.",
        parameters=_PROVINCE, fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="size", group="carbon", seconds=25.9,
        title="False rejections of clustered and conventional SEs under persistent errors",
        paper=_SEED002,
        demonstrates="Conventional SEs over-reject with serially correlated provincial "
                     "outcomes; unit clustering and CR2 do not.",
        parameters=_PROVINCE, fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="power", group="carbon", seconds=11.6,
        title="Power of the province design against an effect-size grid",
        paper=_SEED002,
        demonstrates="The smallest effect 6 pilots of 30 can detect.",
        parameters=_PROVINCE, fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="inference", group="carbon", seconds=154.9,
        title="Which inference to trust with 6 treated provinces of 30",
        paper=_SEED002,
        demonstrates="Size and coverage of seven inference methods for the same TWFE "
                     "estimate, ranked against the 99% binomial band.",
        parameters=_PROVINCE, fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="method_comparison", group="carbon", seconds=74.7,
        title="Eleven estimators on the 282-city staggered panel, three effect shapes",
        paper="Seed 001: pilot policy and new quality productive forces (282 cities, "
              "2009-2022)",
        demonstrates="TWFE's bias under staggered adoption with dynamic effects, and which "
                     "repair recovers the ATT.",
        parameters=(("282 cities x 2009-2022, cohorts by market opening",
                     "seed 001, panel"),), fidelity="calibrated to the study's setting"),
    DesignInfo(
        name="method_comparison_province", group="carbon", seconds=34.8,
        title="Eleven estimators with 6 pilots of 30 selected on GDP",
        paper=_SEED002,
        demonstrates="Selection on GDP with GDP-linked trends biases the DID family; "
                     "synthetic control and SDID match each pilot's pre-period path.",
        parameters=_PROVINCE, fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="mediation", group="carbon", seconds=18.9,
        title="Stepwise mediation with real and confounded channels",
        paper=_SEED002,
        demonstrates="Whether Baron-Kenny steps recover the true indirect effects, and how "
                     "an unobserved trend shared by mediator and outcome misleads them.",
        parameters=(*_PROVINCE, ("mediators: energy structure, technology and industry "
                                 "lagged two years", "seed 002, Tables 6-8")),
        fidelity="calibrated to the study's published tables"),
    DesignInfo(
        name="seed000", group="carbon", seconds=19.8,
        title="Seed 000: quantile DID vs changes-in-changes, Oaxaca-Blinder",
        paper="Seed 000: pilot policy, voluntary clean production and air quality",
        demonstrates="What the conditional quantile DID estimates, against the QTT.",
        parameters=(("7 pilot areas dated by the 2012 NDRC notice", "seed 000"),),
        fidelity="calibrated to the study's setting"),
    DesignInfo(
        name="seed001", group="carbon", seconds=11.3,
        title="Seed 001: staggered TWFE vs CS and Sun-Abraham, mediation, heterogeneity",
        paper="Seed 001: pilot policy and new quality productive forces (282 cities, "
              "2009-2022)",
        demonstrates="The study's estimators on its design, with the truth known.",
        parameters=(("282 cities x 2009-2022", "seed 001"),),
        fidelity="calibrated to the study's setting"),
]
