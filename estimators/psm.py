"""Compatibility module, kept so that old imports (``from estimators.psm import PSMDID``) work.

Nothing is defined here any more; the names are re-exported from where they now live:

* :mod:`estimators.matching` -- the score model (:func:`fit_binary`, :class:`BinaryFit`),
  :func:`common_support`, kernel and nearest-neighbour matching (:func:`kernel_function`,
  :func:`kernel_match`, :func:`nearest_neighbor_match`, :class:`Matching`),
  :func:`balance_table`, :func:`effective_n`, :func:`att_from_weights`,
  :class:`MatchOptions`, :class:`UnitMatch`, :func:`parse_baseline` and
  :class:`MatchResult`;
* :mod:`estimators.psm_did` -- :class:`PSMDID`, :class:`PSMDIDWeighted` and
  :func:`did_coefficient`;
* :mod:`estimators.drdid` -- :func:`drdid_panel` and :class:`DRDID`.

New code should import from those modules.
"""

from __future__ import annotations

from .drdid import DR_INFERENCE, DRDID, PS_CAP, drdid_panel
from .matching import (BASELINE_HELP, KERNELS, LINKS, METHODS, NEWTON_MAX_ITER, NEWTON_TOL,
                       ORDERS, SUPPORT_RULES, TIES, BinaryFit, MatchOptions, MatchResult,
                       Matching, UnitMatch, att_from_weights, balance_table, common_support,
                       effective_n, fit_binary, kernel_function, kernel_match,
                       nearest_neighbor_match, parse_baseline)
from .psm_did import (BOOT_CI, MAX_BOOT_FAIL_SHARE, PSM_INFERENCE, PSMDID, WEIGHT_COLUMN,
                      PSMDIDWeighted, did_coefficient)

__all__ = [
    "BinaryFit", "DRDID", "KERNELS", "LINKS", "METHODS", "MatchOptions", "MatchResult",
    "Matching", "PSMDID", "PSMDIDWeighted", "UnitMatch", "att_from_weights", "balance_table",
    "common_support", "did_coefficient", "drdid_panel", "effective_n", "fit_binary",
    "kernel_function", "kernel_match", "nearest_neighbor_match", "parse_baseline",
    # module constants that lived here too
    "BASELINE_HELP", "BOOT_CI", "DR_INFERENCE", "MAX_BOOT_FAIL_SHARE", "NEWTON_MAX_ITER",
    "NEWTON_TOL", "ORDERS", "PSM_INFERENCE", "PS_CAP", "SUPPORT_RULES", "TIES", "WEIGHT_COLUMN",
]
