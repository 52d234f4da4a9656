"""The notebooks are checked by nbval (``nox -s notebooks``); these guard what nbval trusts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


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


def test_there_are_four_notebooks() -> None:
    assert [p.name[:2] for p in _notebooks()] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_checks_outputs_it_has_stored(path: Path) -> None:
    """nbval --nbval-lax compares only marked cells: each notebook marks some, and each
    marked cell has a stored output to compare against (and no stored error)."""
    cells = _code_cells(path)
    checked = [cell for cell in cells if _source(cell).startswith(CHECK_MARK)]
    assert len(checked) >= 2, f"{path.name}: mark the outputs that matter with {CHECK_MARK}"
    for cell in checked:
        assert cell["outputs"], f"{path.name}: checked cell has no stored output:\n{_source(cell)}"
    for cell in cells:
        assert all(out["output_type"] != "error" for out in cell["outputs"]), _source(cell)


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
