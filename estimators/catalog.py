"""The estimator catalogue: the one list of didlab's estimators and the protocol they follow.

Every estimator is a frozen dataclass whose fields are its options. The catalogue maps a
stable kind (``twfe``, ``event_study``, ...) to that class and to what the estimator
declares about itself, so that the rest of didlab -- the Hydra schemas in
``experiments/schema.py``, the experiments, the reports and the contract tests -- asks the
catalogue instead of testing class names.

The protocol
------------
- options are the dataclass's fields; ``outcome`` (the column estimated on) and ``label``
  (the name in outputs) are set by whoever builds the estimator, every other field is an
  option that the config schema mirrors with the same name, type and default;
- ``check()`` validates every option without data and raises
  :class:`~estimators.panel.OptionError` naming the option, its value and what is
  accepted; ``fit`` calls it too, so a Python user gets the same message;
- ``fit(panel, rng=None) -> Estimate``; an estimator whose capabilities say
  ``needs_rng`` uses the generator (bootstrap, permutations, matching ties), the others
  accept and ignore it;
- ``estimand(panel)`` gives the true value of each term on a simulated panel, where the
  estimator has a causal estimand (``truth`` capability).

Adding an estimator: write its module (the dataclass, ``check``, ``fit``, ``estimand``),
add one :func:`register` line below, a ``conf/estimator/<kind>.yaml`` and its tests. The
contract and config tests iterate this catalogue.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any, Callable, Iterator

from .panel import OptionError

#: fields every estimator has that are not options: set by whoever builds it
NOT_OPTIONS = ("outcome", "label")


@dataclass(frozen=True)
class Capabilities:
    """What an estimator needs and what it reports, declared once in the catalogue.

    Attributes
    ----------
    needs_rng
        ``fit`` draws random numbers (bootstrap, permutations, matching ties) and must be
        given a seeded generator.
    event_time
        ``terms`` carries an ``event_time`` column (leads and lags) and, where the
        estimator has one, ``event_cov`` for the honest sensitivity analysis.
    quantiles
        ``terms`` are effects at the ``quantile`` column's quantiles.
    subgroups
        ``terms`` are effects by subgroup with an equality test.
    matching
        ``match(panel, rng)`` returns the matching (scores, weights, balance) for
        balance tables and overlap figures.
    comparisons
        ``terms`` decompose the TWFE coefficient into 2x2 comparisons with weights
        (Goodman-Bacon).
    decomposition
        ``terms`` split a gap into explained and unexplained parts (Oaxaca-Blinder).
    wraps
        The estimator wraps another (field ``base``: an estimator spec in configs).
    truth
        ``estimand(panel)`` gives the true value of the headline on a simulated panel.
    switching
        The estimator accepts a treatment that switches off (and on again): ``d`` is then
        not implied by ``cohort`` (de Chaisemartin-D'Haultfoeuille). A user's file with
        such a treatment reaches only these estimators.
    """

    needs_rng: bool = False
    event_time: bool = False
    quantiles: bool = False
    subgroups: bool = False
    matching: bool = False
    comparisons: bool = False
    decomposition: bool = False
    wraps: bool = False
    truth: bool = True
    switching: bool = False


@dataclass(frozen=True)
class Entry:
    """One catalogue line: a kind, its class and what it declares."""

    kind: str
    cls: type
    capabilities: Capabilities
    summary: str

    def options(self) -> list[Option]:
        return options(self.cls)


@dataclass(frozen=True)
class Option:
    """One option of an estimator: name, declared Python type, and default (``REQUIRED``
    when the class has none)."""

    name: str
    type: Any
    default: Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

CATALOG: dict[str, Entry] = {}


def register(kind: str, cls: type, capabilities: Capabilities = Capabilities(),
             summary: str | None = None) -> Entry:
    """Add ``cls`` under ``kind`` (the catalogue's one line per estimator)."""
    if kind in CATALOG:
        raise ValueError(f"estimator kind {kind!r} is registered twice")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    for name in ("check", "fit"):
        if not callable(getattr(cls, name, None)):
            raise TypeError(f"{cls.__name__} must define {name}()")
    if "rng" not in inspect.signature(cls.fit).parameters:
        raise TypeError(f"{cls.__name__}.fit must accept rng=None (the catalogue protocol)")
    if capabilities.truth != callable(getattr(cls, "estimand", None)):
        raise TypeError(f"{cls.__name__}: capabilities.truth must say whether it has estimand()")
    doc = (cls.__doc__ or "").strip().splitlines()
    entry = Entry(kind, cls, capabilities, summary or (doc[0].rstrip(".") if doc else kind))
    CATALOG[kind] = entry
    return entry


def entry(kind: str) -> Entry:
    """The catalogue line of ``kind``; an unknown kind names the accepted ones."""
    _load()
    if kind not in CATALOG:
        raise OptionError(f"estimator kind {kind!r} is not in the catalogue; accepted: "
                          f"{sorted(CATALOG)}")
    return CATALOG[kind]


def kinds() -> list[str]:
    _load()
    return list(CATALOG)


def entries() -> Iterator[Entry]:
    _load()
    return iter(CATALOG.values())


def entry_of(estimator: Any) -> Entry:
    """The catalogue line of a built estimator (looked up by its class)."""
    _load()
    for e in CATALOG.values():
        if type(estimator) is e.cls:
            return e
    raise OptionError(f"{type(estimator).__name__} is not a catalogue estimator")


def capabilities(estimator: Any) -> Capabilities:
    """What a built estimator declares."""
    return entry_of(estimator).capabilities


def kind_of(estimator: Any) -> str:
    """The catalogue kind of a built estimator."""
    return entry_of(estimator).kind


def options(cls: type) -> list[Option]:
    """The options of an estimator class: every dataclass field except ``outcome`` and
    ``label``, with its resolved type and its default."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in NOT_OPTIONS or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        out.append(Option(f.name, hints.get(f.name, Any), default))
    return out


# --- renamed options: old spellings keep working for one release ---------------------------

def renamed(**old_to_new: str | tuple[str, Callable[[Any, Any], Any]]) -> Callable[[type], type]:
    """Class decorator: accept old option names (and, with a converter, old value
    conventions) in the constructor for one release, with a DeprecationWarning.

    ``@renamed(controls="covariates")`` maps ``controls=`` to ``covariates=``;
    ``@renamed(bootstrap=("n_boot", lambda old, new: (new or 999) if old else 0))`` also
    converts the value: the converter gets the old value and the new option's value when
    both are given (``None`` otherwise), and may return a dict of new options when one old
    option maps onto several.
    """

    def deco(cls: type) -> type:
        init = cls.__init__
        table = {old: (new, None) if isinstance(new, str) else new
                 for old, new in old_to_new.items()}

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, (new, convert) in table.items():
                if old not in kwargs:
                    continue
                value = kwargs.pop(old)
                if new in kwargs and convert is None:
                    raise OptionError(f"{cls.__name__}: give {new}= only; {old}= is its old "
                                      "name")
                warnings.warn(f"{cls.__name__}({old}=...) is deprecated and will be removed in "
                              f"the next release; use {new}=", DeprecationWarning, stacklevel=2)
                converted = convert(value, kwargs.get(new)) if convert else value
                if isinstance(converted, dict):  # one old option may set several new ones
                    kwargs.update(converted)
                else:
                    kwargs[new] = converted
            init(self, *args, **kwargs)

        __init__.__doc__ = init.__doc__
        __init__.__wrapped__ = init  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.__renamed__ = {old: new for old, (new, _) in table.items()}  # type: ignore[attr-defined]
        cls.__renamed_converted__ = frozenset(  # type: ignore[attr-defined]
            old for old, (_, convert) in table.items() if convert is not None)
        return cls

    return deco


def renamed_options(cls: type) -> dict[str, str]:
    """Old option name -> new name for a class decorated with :func:`renamed`."""
    return dict(getattr(cls, "__renamed__", {}))


# --- the catalogue -------------------------------------------------------------------------

_LOADED = False


def _load() -> None:
    """Register every estimator (lazily: estimator modules import this module's helpers)."""
    global _LOADED
    if _LOADED:
        return
    try:
        _register_all()
    except BaseException:
        CATALOG.clear()
        raise
    _LOADED = True


def _register_all() -> None:
    from .bacon import BaconDecomposition
    from .callaway_santanna import CallawaySantAnna
    from .drdid import DRDID
    from .event_study import EventStudy
    from .heterogeneity import Heterogeneity
    from .imputation import Imputation
    from .mediation import Mediation
    from .oaxaca import OaxacaBlinder
    from .placebo import RandomizationInference
    from .psm_did import PSMDID, PSMDIDWeighted
    from .quantile import ChangesInChanges, QuantileDID
    from .sun_abraham import SunAbraham
    from .twfe import TWFE

    C = Capabilities
    register("twfe", TWFE)
    register("event_study", EventStudy, C(event_time=True))
    register("randomization", RandomizationInference, C(needs_rng=True, wraps=True))
    register("callaway_santanna", CallawaySantAnna, C(needs_rng=True, event_time=True))
    register("sun_abraham", SunAbraham, C(event_time=True))
    register("imputation", Imputation, C(event_time=True))
    register("bacon", BaconDecomposition, C(comparisons=True))
    register("psm_did", PSMDID, C(needs_rng=True, matching=True))
    register("psm_did_weighted", PSMDIDWeighted, C(needs_rng=True, matching=True))
    register("dr_did", DRDID, C(needs_rng=True))
    register("mediation", Mediation, C(needs_rng=True))
    register("heterogeneity", Heterogeneity, C(subgroups=True))
    register("oaxaca", OaxacaBlinder, C(needs_rng=True, decomposition=True, truth=False))
    register("quantile_did", QuantileDID, C(needs_rng=True, quantiles=True))
    register("changes_in_changes", ChangesInChanges, C(needs_rng=True, quantiles=True))
    from .did2s import TwoStageDID
    from .stacked import StackedDID
    register("stacked", StackedDID, C(event_time=True))
    register("did2s", TwoStageDID, C(event_time=True))
    from .dcdh import DCDH
    register("dcdh", DCDH, C(event_time=True, switching=True))
    from .sdid import SyntheticDID
    from .synth import SyntheticControl
    register("synthetic_control", SyntheticControl, C(needs_rng=True, event_time=True))
    register("sdid", SyntheticDID, C(needs_rng=True, event_time=True))
    from .etwfe import ETWFE
    register("etwfe", ETWFE, C(event_time=True))
    from .bdm import BlockBootstrap, Collapse
    register("bdm_bootstrap", BlockBootstrap, C(needs_rng=True))
    register("bdm_collapse", Collapse)


def is_sequence_type(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str


def is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, UnionType) and type(None) in typing.get_args(tp)


__all__ = ["CATALOG", "Capabilities", "Entry", "Option", "REQUIRED", "capabilities", "entries",
           "entry", "entry_of", "is_optional", "is_sequence_type", "kind_of", "kinds", "options",
           "register", "renamed", "renamed_options"]
