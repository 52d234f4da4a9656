"""The notebooks are checked by nbval (``nox -s notebooks``); these guard what nbval trusts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECKED = "nbval-check-output"  # the cell tag nbval --nbval-lax compares outputs of


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict[str, Any]]:
    book = json.loads(path.read_text())
    return [cell for cell in book["cells"] if cell["cell_type"] == "code"]


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _sanitizers() -> list[tuple[str, str]]:
    text = (NOTEBOOKS / "sanitize.cfg").read_text()
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, re.MULTILINE)


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def test_there_are_six_notebooks() -> None:
    assert [p.name[:2] for p in _notebooks()] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_checks_outputs_it_has_stored(path: Path) -> None:
    """nbval --nbval-lax compares only tagged cells: each notebook tags some, and each
    tagged cell has a stored output to compare against (and no stored error)."""
    cells = _code_cells(path)
    checked = [cell for cell in cells if CHECKED in _tags(cell)]
    assert len(checked) >= 2, f"{path.name}: tag the outputs that matter with {CHECKED}"
    for cell in checked:
        assert cell["outputs"], f"{path.name}: checked cell has no stored output:\n{_source(cell)}"
    for cell in cells:
        assert all(out["output_type"] != "error" for out in cell["outputs"]), _source(cell)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_the_test_harness_is_not_what_a_reader_sees(path: Path) -> None:
    """nbval's instructions live in cell tags; code asserts nothing; no output is a bare
    True or False."""
    for cell in _code_cells(path):
        source = _source(cell)
        assert "NBVAL" not in source, source
        assert not re.search(r"^\s*assert\b", source, re.MULTILINE), source
        for out in cell["outputs"]:
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"(^|: |\s)(True|False)$", text.strip(), re.MULTILINE), text


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_widgets_are_saved_alive(path: Path) -> None:
    """What GitHub and nbviewer show: the windows as Run All leaves them, open; stopping is
    a button the reader clicks, never a cell Run All executes."""
    book = json.loads(path.read_text())
    state = json.dumps(book["metadata"].get("widgets", {}))
    assert "ChatWidget" in state or "Button" in state, f"{path.name}: no saved widget state"
    assert "● closed" not in state and "disconnected:" not in state
    for cell in _code_cells(path):
        assert not re.search(r"^\w+\.stop\(\)$", _source(cell), re.MULTILINE), _source(cell)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_starts_its_own_server(path: Path) -> None:
    """A notebook runs on a machine with nothing else started."""
    assert any("start_server(" in _source(cell) for cell in _code_cells(path))


def test_sanitizers_hide_what_changes_between_runs() -> None:
    sample = ("Message(channel='lobby', sender='alice', text='hi', ts=1795611415.0601313, "
              "mid='01a212c7d21405c63b5efc') at 13:02:30 on ws://127.0.0.1:41234/ws "
              "session 88209eb8d3c1164d took 0.85 ms "
              '"model_id": "38226dedfd5e456c8b778558ef1a191f"')
    for regex, replace in _sanitizers():
        sample = re.sub(regex, replace, sample)
    assert sample == (
        "Message(channel='lobby', sender='alice', text='hi', ts=TS, mid='MID') at HH:MM:SS "
        "on ws://127.0.0.1:PORT/ws session SESSION took N.NN ms "
        '"model_id": "MODEL_ID"'
    )
