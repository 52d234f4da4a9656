"""Every hook has tests and a documented section (datasette's meta-tests, for this repo)."""

from __future__ import annotations

import inspect
import re

import pytest

from quart_chat import hookspecs

from .kit import REPO

HOOKS = sorted(
    name for name, value in vars(hookspecs).items()
    if inspect.isfunction(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
)
TESTS = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py"))
GUIDE = (REPO / "docs" / "plugins.md").read_text()


def test_meta_every_hookspec_is_found():
    """Guard the guards: the specs are discovered (so the checks below are not vacuous)."""
    assert {"startup", "filter_message", "history", "client_subscribed", "call",
            "register_routes", "register_timers"} <= set(HOOKS)
    assert len(HOOKS) == 15


@pytest.mark.parametrize("hook", HOOKS)
def test_meta_every_hook_has_a_test(hook):
    """At least one ``test_hook_<name>_...`` test exists for each hook."""
    assert re.search(rf"^def test_hook_{hook}_\w+\(", TESTS, re.MULTILINE), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_meta_every_hook_is_documented_with_its_signature(hook):
    """docs/plugins.md has a ``### `name(args)` `` section whose arguments match the spec."""
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### `{hook}({args})`" in GUIDE, hook


@pytest.mark.parametrize("hook", HOOKS)
def test_meta_every_hookspec_has_a_docstring_that_says_how_results_combine(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 100 and re.search(r"ignored|wins|chained|any ``False``|Every", doc), hook
