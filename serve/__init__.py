"""musicgen's Ray Serve application: HTTP API and page over trained runs.

The folder serve/ is installed as the package ``musicgen_serve`` (see pyproject.toml).

* :func:`run` / :func:`start` (runner.py): deploy on a local or given Ray; ``musicgen serve``.
* app.py: the deployments (the ingress: FastAPI routes, limits; the models), continuous
  batching in batching.py; ``musicgen_serve.app:build`` is the
  application builder of serve/config.yaml (``serve run`` / ``serve deploy``).
* benchmarks/serve_batching.py and benchmarks/serve_soak.py (outside the package) measure it over HTTP.

Importing this package starts nothing and imports neither Ray nor TensorFlow.
"""


def run(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve the runs on ``host:port`` and block (see :func:`musicgen_serve.runner.run`)."""
    from .runner import run as _run

    return _run(lstm_runs, vae_runs, host, port, **options)


def start(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, **options) -> str:
    """Serve the runs on ``host:port``; return the base URL without blocking (see :func:`musicgen_serve.runner.start`)."""
    from .runner import start as _start

    return _start(lstm_runs, vae_runs, host, port, **options)
