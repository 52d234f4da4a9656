"""The README documents every setting and every error code the server can send."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from quart_chat import errors
from quart_chat.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [
        field.name for field in dataclasses.fields(Settings)
        if f"`QUART_CHAT_{field.name.upper()}`" not in README
    ]
    assert missing == []


def test_every_error_code_is_documented():
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ChatError)}
    assert {c for c in codes if f"`{c}`" not in README} == set()


def test_readme_gives_one_command_to_run_and_one_to_test():
    assert "quart-chat serve" in README
    assert re.search(r"python3 -m nox", README)
