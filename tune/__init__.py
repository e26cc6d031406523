"""``musicgen tune``: Bayesian hyperparameter search of the LSTM on Ray Tune (see :mod:`tune.search`)."""
from .search import DEFAULT_SPACE, LIMITS, add_arguments, main, run_search

__all__ = ["DEFAULT_SPACE", "LIMITS", "add_arguments", "main", "run_search"]
