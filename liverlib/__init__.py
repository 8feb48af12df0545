"""liverlib: a reproducible study of liver and liver-tumor segmentation on CT (LiTS).

Public API (see README): :func:`find_cases`, :func:`load_case`, :func:`save_mask_like`,
:func:`resolve_params` (notebook 01), :func:`stage_params` (notebooks 02–06), :class:`RunDir`, and the stage functions in :mod:`liverlib.pipeline.stages`.
"""

from liverlib.data.geometry import from_display, to_display
from liverlib.data.nifti import Case, CasePaths, find_cases, load_case, save_mask_like
from liverlib.errors import CaseError, RunError
from liverlib.labels import LABELS
from liverlib.params import ParamError, Params, load_profiles, stage_params
from liverlib.params import resolve as resolve_params
from liverlib.run import RunDir

__version__ = "0.1.0"

__all__ = [
    "LABELS",
    "Case",
    "CaseError",
    "CasePaths",
    "ParamError",
    "Params",
    "RunDir",
    "RunError",
    "find_cases",
    "from_display",
    "load_case",
    "load_profiles",
    "resolve_params",
    "save_mask_like",
    "stage_params",
    "to_display",
]
