"""The README documents every setting and every error code the server can send."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from quart_chat import errors
from quart_chat.cli import serve
from quart_chat.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def configuration_table() -> dict[str, tuple[str, str]]:
    """The README's configuration table: variable -> (option, default), in row order."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:4] for line in section.splitlines()
            if line.startswith("| `QUART_CHAT_")]
    return {var.strip(" `"): (option.strip(), default.strip(" `")) for var, option, default
            in rows}


def test_every_setting_has_a_row_in_the_readme_configuration_table():
    """Each setting: its variable, its option and its default, in alphabetical order."""
    table = configuration_table()
    defaults = Settings()
    options = {param.name: "/".join(param.opts) for param in serve.params}
    expected = {}
    for field in dataclasses.fields(Settings):
        value = getattr(defaults, field.name)
        expected[f"QUART_CHAT_{field.name.upper()}"] = (
            f"`{options[field.name]}`", str(value) if value not in (None, ()) else None,
        )
    assert list(table) == sorted(table)
    assert set(table) == set(expected)
    for variable, (option, default) in expected.items():
        assert table[variable][0] == option, (variable, table[variable])
        if default is not None:
            assert table[variable][1] == default, (variable, table[variable])


def test_every_error_code_is_documented():
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ChatError)}
    assert {c for c in codes if f"`{c}`" not in README} == set()


def test_readme_gives_one_command_to_run_and_one_to_test():
    assert "quart-chat serve" in README
    assert re.search(r"python3 -m nox", README)
