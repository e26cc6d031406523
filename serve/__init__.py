"""musicgen's Ray Serve application (HTTP API and page over trained runs).

* :func:`run` / :func:`start` (serve/runner.py): deploy on a local or given Ray; ``musicgen serve``.
* serve/app.py: the deployment, FastAPI routes, limits, batching; ``serve.app:build`` for
  serve/config.yaml.
* serve/bench.py: batched vs unbatched throughput.

Importing this package starts nothing and imports neither Ray nor TensorFlow.
"""


def run(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve the runs on ``host:port`` and block (see :func:`serve.runner.run`)."""
    from .runner import run as _run

    return _run(lstm_runs, vae_runs, host, port, **options)


def start(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, **options) -> str:
    """Serve the runs on ``host:port``; return the base URL without blocking (see :func:`serve.runner.start`)."""
    from .runner import start as _start

    return _start(lstm_runs, vae_runs, host, port, **options)
