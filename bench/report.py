"""Turn a results dict into a markdown table (with ratios) and a PNG chart."""

from __future__ import annotations

import math
import pathlib
from typing import Any

from .servers import PEERS, SPECS


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def markdown(results: dict[str, Any]) -> str:
    return "markdown pending\n"


def chart(results: dict[str, Any], path: pathlib.Path) -> None:
    pass
