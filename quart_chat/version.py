"""The one place the version is written: the package, the server's welcome frame and
pyproject.toml all read it from here (a module of its own, so importing it loads nothing)."""

__version__ = "0.1.0"
