"""Sessions: ``nox`` runs tests and notebooks; ``nox -s lint``; ``nox -s bench`` on demand."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "notebooks", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against the embedded broker and a real redis-server."""
    session.install("-e", ".[test,browser,bench]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def notebooks(session: nox.Session) -> None:
    """Run every notebook in notebooks/ top to bottom with nbval, headless."""
    session.install("-e", ".[test,notebook]")
    session.run(
        "pytest", "--nbval-lax", "--nbval-current-env",
        "--nbval-sanitize-with", "notebooks/sanitize.cfg", "notebooks", *session.posargs
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff on everything, mypy strict on the package and the example plugins."""
    session.install("-e", ".[test,lint,servers]")
    session.run("ruff", "check", ".")
    session.run("mypy")
    session.run("mypy", "--strict", "plugins")


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark quart-chat against the floor and peer servers (about 15 min; not default)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "bench", *session.posargs)
