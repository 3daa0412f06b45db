"""Dataclass schemas of every config group, registered in Hydra's ConfigStore.

A misspelt key or a wrong type fails when the config is composed. String choices are
validated when the config is used (OmegaConf 2.3 rejects ``typing.Literal``), with errors
that list the accepted values. Schemas are mutable dataclasses: frozen ones would block
command-line overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from estimators.bacon import BaconDecomposition
from estimators.callaway_santanna import CallawaySantAnna
from estimators.event_study import EventStudy
from estimators.heterogeneity import Heterogeneity
from estimators.imputation import Imputation
from estimators.mediation import Mediation
from estimators.oaxaca import OaxacaBlinder
from estimators.placebo import RandomizationInference
from estimators.psm import DRDID, PSMDID, PSMDIDWeighted
from estimators.quantile import ChangesInChanges, QuantileDID
from estimators.sun_abraham import SunAbraham
from estimators.twfe import TWFE
from simulate.city import CityDGP
from simulate.design import Assignment, Effect, Timing
from simulate.province import CONTROLS, ProvinceDGP


@dataclass
class ChannelConf:
    """A mediator channel of the province simulator (simulate/mediators.py)."""

    mediator: str = "lnes"
    a: float = 0.0                 # effect of treatment on the mediator
    b: Optional[float] = None      # effect of the mediator on the outcome (None: Table 4's)
    lag: int = 0                   # the outcome responds `lag` years later
    trend_sd: float = 0.0          # unobserved trend shared with the outcome (confounding)


@dataclass
class ProvinceData(ProvinceDGP):
    """The simulated province panel (seed 002's design)."""

    kind: str = "province"
    outcomes: List[str] = field(default_factory=lambda: ["lnce", "lncei"])
    controls: List[str] = field(default_factory=lambda: list(CONTROLS))
    # a short list for propensity scores: with six covariates and six pilots the logit
    # separates in most draws
    score_covariates: List[str] = field(default_factory=lambda: ["lnpgdp", "lnes"])
    # mediator channels: the policy moves these covariates, which move the outcome
    channels: List[ChannelConf] = field(default_factory=list)


@dataclass
class CityData(CityDGP):
    """The simulated city panel (seed 001's setting: 282 cities, staggered adoption)."""

    kind: str = "city"
    outcomes: List[str] = field(default_factory=lambda: ["nqpf"])
    controls: List[str] = field(default_factory=lambda: ["lnpgdp"])
    score_covariates: List[str] = field(default_factory=lambda: ["lnpgdp"])


@dataclass
class FileData:
    """A user's panel read from a CSV, Parquet or Stata file (see experiments/realdata.py)."""

    kind: str = "file"
    path: str = MISSING
    format: Optional[str] = None        # csv | parquet | dta (default: from the extension)
    unit: str = "unit"                  # file column naming the unit
    time: str = "time"                  # file column holding the year
    cohort: Optional[str] = None        # file column: first treated year (0/empty = never)
    treatment: Optional[str] = None     # or a 0/1 treatment column
    treated_units: List[str] = field(default_factory=list)  # or these units...
    treatment_year: Optional[int] = None                    # ...treated from this year
    derive: Dict[str, str] = field(default_factory=dict)    # new column -> expression
    # composite indices by the entropy-weight method: name -> {indicator: 1 or -1}
    indices: Dict[str, Dict[str, int]] = field(default_factory=dict)
    filter: Optional[str] = None        # pandas query applied after deriving
    outcomes: List[str] = field(default_factory=list)
    controls: List[str] = field(default_factory=list)
    score_covariates: List[str] = II("data.controls")
    allow_gaps: bool = False
    drop_missing: bool = False


@dataclass
class InferenceConf:
    """Inference options shared by the regression-based estimators (see estimators.fe.vcov)."""

    cluster: Optional[str] = "unit"
    se: str = "cluster"            # cluster | robust | conventional
    ssc: str = "stata"             # stata | full | linearmodels | none
    dist: str = "t"                # t | normal
    alpha: float = 0.05


@dataclass
class TWFEConf(InferenceConf):
    kind: str = "twfe"
    controls: List[str] = field(default_factory=list)
    paper_terms: bool = False
    time_by: Optional[str] = None   # e.g. region: region-by-year instead of year effects


@dataclass
class EventStudyConf(InferenceConf):
    kind: str = "event_study"
    controls: List[str] = field(default_factory=list)
    leads: Optional[int] = 5
    lags: Optional[int] = 5
    ref: int = -1
    bin_endpoints: bool = True


@dataclass
class CallawaySantAnnaConf:
    kind: str = "callaway_santanna"
    covariates: List[str] = field(default_factory=list)
    control_group: str = "nevertreated"
    base_period: str = "varying"
    method: str = "dr"
    aggregation: str = "simple"
    anticipation: int = 0
    bootstrap: bool = False
    n_boot: int = 999
    alpha: float = 0.05


@dataclass
class SunAbrahamConf(InferenceConf):
    kind: str = "sun_abraham"
    controls: List[str] = field(default_factory=list)
    control: str = "never"
    ref: int = -1


@dataclass
class ImputationConf:
    kind: str = "imputation"
    controls: List[str] = field(default_factory=list)
    horizons: Optional[int] = None
    pretrend_leads: int = 3
    alpha: float = 0.05


@dataclass
class PSMConf(InferenceConf):
    """PSM-DID (route a: DID on the matched sample, as seed 002 Table 5) and, with
    kind=psm_did_weighted, route b (matching weights carried over all years)."""

    kind: str = "psm_did"
    covariates: List[str] = field(default_factory=list)   # score covariates (default: controls)
    controls: List[str] = field(default_factory=list)     # controls in the final DID
    baseline: str = "mean"        # mean | period | pooled | YEAR (covariates measured when)
    link: str = "logit"           # logit | probit
    method: str = "kernel"        # kernel | nearest | radius
    kernel: str = "epanechnikov"  # epanechnikov | gaussian | uniform | tricube | biweight
    bandwidth: float = 0.06
    n_neighbors: int = 1
    replace: bool = True
    caliper: Optional[float] = None
    support: str = "minmax"       # minmax | quantile | none
    support_q: float = 0.02
    inference: str = "cluster"    # cluster | bootstrap (re-estimates score and matching)
    n_boot: int = 499


@dataclass
class DRDIDConf:
    kind: str = "dr_did"
    controls: List[str] = field(default_factory=list)
    baseline: str = "mean"
    trim_level: float = 0.995
    inference: str = "influence"  # influence | bootstrap
    n_boot: int = 499
    alpha: float = 0.05


@dataclass
class MediationConf:
    """Stepwise (Baron-Kenny) mediation with two-way fixed effects."""

    kind: str = "mediation"
    mediators: List[str] = field(default_factory=lambda: ["lnes"])
    lags: List[int] = field(default_factory=lambda: [0])   # one per mediator
    controls: List[str] = field(default_factory=list)
    equations: str = "separate"    # separate | joint
    bootstrap: str = "cluster"     # cluster | stratified | none
    n_boot: int = 999
    ci: str = "percentile"         # percentile | bc
    headline: str = "indirect"
    alpha: float = 0.05


@dataclass
class HeterogeneityConf(InferenceConf):
    """Effects by a unit-level attribute with a test of equality (seed 001)."""

    kind: str = "heterogeneity"
    by: str = "developed"          # city panel: developed | resource | old_industrial
    controls: List[str] = field(default_factory=list)


@dataclass
class OaxacaConf:
    """Oaxaca-Blinder decomposition of the pilot / non-pilot gap (seed 000)."""

    kind: str = "oaxaca"
    covariates: List[str] = field(default_factory=list)
    group: Optional[str] = None        # a 0/1 column; default: pilots (cohort > 0)
    reference: str = "pooled"          # A | B | pooled | neumark | cotton | reimers
    sample: Optional[str] = None       # pandas query, e.g. "time >= 2012"
    n_boot: int = 499
    alpha: float = 0.05


@dataclass
class QuantileConf:
    """Quantile DID (conditional, kind=quantile_did) or changes-in-changes
    (kind=changes_in_changes, quantile effects on the treated)."""

    kind: str = "quantile_did"
    quantiles: List[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 0.9])
    n_boot: int = 99
    alpha: float = 0.05


@dataclass
class QuantileDIDConf(QuantileConf):
    controls: List[str] = field(default_factory=list)


@dataclass
class BaconConf:
    kind: str = "bacon"


@dataclass
class RandomizationConf:
    """Fake-pilot randomization inference around a base estimator."""

    kind: str = "randomization"
    base: Dict[str, Any] = field(default_factory=lambda: {"kind": "twfe"})
    n_perm: int = 499
    statistic: str = "t"          # t (studentized) | coef
    exact: str = "false"          # auto | true | false
    max_exact: int = 1_000_000
    strata: Optional[str] = None


@dataclass
class PlaceboConf:
    """What experiment=placebo runs around each base estimator."""

    base: List[str] = field(default_factory=lambda: ["twfe", "twfe_controls"])
    shifts: List[int] = field(default_factory=lambda: [1, 2, 3])
    n_perm: int = 9999
    statistic: str = "t"
    exact: str = "false"
    max_exact: int = 1_000_000
    strata: Optional[str] = None


@dataclass
class SpecConf:
    """The choices a specification curve crosses (experiment=spec_curve)."""

    outcomes: List[str] = II("experiment.outcomes")
    # named control sets
    controls: Dict[str, List[str]] = field(default_factory=lambda: {"none": []})
    # year effects, or group-by-year effects named by a unit-level column (e.g. region)
    time_effects: List[str] = field(default_factory=lambda: ["year"])
    cluster: List[str] = field(default_factory=lambda: ["unit"])
    # common treatment dates to try for the treated units (empty: the data's own dates)
    treatment_year: List[int] = field(default_factory=list)
    # named sample restrictions (pandas queries; "" keeps every row)
    samples: Dict[str, str] = field(default_factory=lambda: {"all": ""})
    estimators: List[str] = field(default_factory=lambda: ["twfe"])  # twfe | event_study


@dataclass
class SensitivityConf:
    """What experiment=sensitivity computes."""

    target: str = "average"        # average of the post effects, or an event time (0, 1, ...)
    m_grid: List[float] = field(default_factory=list)      # empty: a grid from the SEs
    mbar_grid: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    alpha: float = 0.05
    # Rambachan-Roth procedures: smoothness flci | c-lf | conditional;
    # relative magnitudes c-lf | conditional | bonferroni (HonestDiD's defaults: flci, c-lf)
    smoothness_method: str = "flci"
    rm_method: str = "c-lf"


@dataclass
class BackendConf:
    # sequential | loky (all cores on this machine) | dask (a scheduler address, or a
    # LocalCluster started for the run when address is null)
    kind: str = "loky"
    n_jobs: int = -1
    address: Optional[str] = None
    n_workers: int = 2
    threads_per_worker: int = 1


@dataclass
class ExperimentConf:
    # single: one draw, every estimator, a table and an event-study figure;
    # montecarlo: n_reps draws and the diagnosands; placebo: timing placebo, fake-pilot
    # randomization inference and leave-one-out on one panel; estimate: the configured
    # estimators on one panel with a paper-style regression table
    kind: str = "single"
    name: str = "single"
    n_reps: int = 1
    chunk_size: int = 25
    outcomes: List[str] = II("data.outcomes")  # the data's outcomes unless an experiment says
    # cells run inside one (non-multirun) job: group -> list of options of that group
    grid: Dict[str, List[str]] = field(default_factory=dict)
    # where resumable chunks live, keyed by a hash of everything that fixes the numbers
    store: str = "outputs/store"
    progress: bool = True
    figures: bool = True
    placebo: PlaceboConf = field(default_factory=PlaceboConf)
    spec: SpecConf = field(default_factory=SpecConf)
    sensitivity: SensitivityConf = field(default_factory=SensitivityConf)


@dataclass
class Config:
    defaults: List[Any] = field(default_factory=lambda: [
        "_self_",
        {"data": "province"},
        {"assignment": "actual"},
        {"timing": "notice_2011"},
        {"effect": "constant"},
        {"estimator": ["twfe", "twfe_controls", "event_study"]},
        {"backend": "loky"},
        {"experiment": None},
        # settings an experiment needs only with one data option, e.g. robustness_province
        {"optional experiment_data": "${experiment}_${data}"},
    ])
    seed: int = 0
    data: Any = MISSING
    assignment: Assignment = MISSING
    timing: Timing = MISSING
    effect: Effect = MISSING
    estimator: Dict[str, Any] = field(default_factory=dict)
    backend: BackendConf = MISSING
    experiment: ExperimentConf = field(default_factory=ExperimentConf)


#: estimator kind -> (estimator class, config schema): the one registry of estimators;
#: experiments.build derives its class table from it
REGISTRY: dict[str, tuple[type, type]] = {
    "twfe": (TWFE, TWFEConf),
    "event_study": (EventStudy, EventStudyConf),
    "randomization": (RandomizationInference, RandomizationConf),
    "callaway_santanna": (CallawaySantAnna, CallawaySantAnnaConf),
    "sun_abraham": (SunAbraham, SunAbrahamConf),
    "imputation": (Imputation, ImputationConf),
    "bacon": (BaconDecomposition, BaconConf),
    "psm_did": (PSMDID, PSMConf),
    "psm_did_weighted": (PSMDIDWeighted, PSMConf),
    "dr_did": (DRDID, DRDIDConf),
    "mediation": (Mediation, MediationConf),
    "heterogeneity": (Heterogeneity, HeterogeneityConf),
    "oaxaca": (OaxacaBlinder, OaxacaConf),
    "quantile_did": (QuantileDID, QuantileDIDConf),
    "changes_in_changes": (ChangesInChanges, QuantileConf),
}
ESTIMATOR_SCHEMAS: dict[str, type] = {kind: schema for kind, (_, schema) in REGISTRY.items()}


def register() -> None:
    """Register the schemas and the ``didlab_root`` resolver (idempotent)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("didlab_root"):
        # where the project lives, so shipped example files resolve from any working directory
        OmegaConf.register_new_resolver("didlab_root",
                                        lambda: str(Path(__file__).resolve().parent.parent))
    cs = ConfigStore.instance()
    cs.store(name="didlab_base", node=Config)
    # schemas live under schema/ so that `didlab --help` lists only real options per group;
    # each option file extends its schema with `- /schema/<group>/<name>@_here_`
    cs.store(group="schema/data", name="province", node=ProvinceData)
    cs.store(group="schema/data", name="city", node=CityData)
    cs.store(group="schema/data", name="file", node=FileData)
    cs.store(group="schema/assignment", name="base", node=Assignment)
    cs.store(group="schema/timing", name="base", node=Timing)
    cs.store(group="schema/effect", name="base", node=Effect)
    cs.store(group="schema/backend", name="base", node=BackendConf)
    cs.store(group="schema/experiment", name="base", node=ExperimentConf)
    for kind, schema in ESTIMATOR_SCHEMAS.items():
        cs.store(group="schema/estimator", name=kind, node=schema)
