"""Balanced test-patient split (exact k-patient search) and patient-grouped CV folds."""

from .folds import check_folds, natural_key, natural_sorted, patient_folds
from .search import SplitResult, balanced_split, balanced_split_reference
from .step import patient_class_counts, run_balance_split

__all__ = [
    "SplitResult",
    "balanced_split",
    "balanced_split_reference",
    "check_folds",
    "natural_key",
    "natural_sorted",
    "patient_class_counts",
    "patient_folds",
    "run_balance_split",
]
