"""``musicgen tune``: Bayesian search of the LSTM's settings on Ray Tune (see :mod:`.search`).

Installed as ``musicgen_tune`` (pyproject's package-dir), so it cannot shadow PyPI's ``tune``.
"""
from .search import DEFAULT_SPACE, LIMITS, add_arguments, main, run_search

__all__ = ["DEFAULT_SPACE", "LIMITS", "add_arguments", "main", "run_search"]
