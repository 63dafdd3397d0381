"""Kept for MLflow models registered by san-search 0.1: MLflow stored their model code
(`pyfunc_model.py` as it was then), which imports `load_ensemble` from here. New code imports
`san_search.ensemble.serving`; this module owns nothing else."""

from san_search.ensemble.serving import load_ensemble

__all__ = ["load_ensemble"]
