"""The benchmark harness works end to end (seconds, tiny loads, no timing assertions)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytest.importorskip("picows", reason="the bench extra is not installed (pip install -e .[bench])")
pytestmark = pytest.mark.redis


def _run(tmp_path: pathlib.Path, servers: str, scenarios: str) -> dict:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--quiet", "-s", servers, "-c", scenarios,
         "-o", str(out), "--time-limit", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "results.md").read_text().startswith("Run ")
    return json.loads((out / "results.json").read_text())


def test_smoke_run_verifies_every_delivery_for_quart_chat_and_the_floor(tmp_path):
    """quart-chat (plain and coalesced) and the floor deliver every message once, in order."""
    results = _run(tmp_path, "floor,quart-chat/hypercorn,quart-chat/hypercorn+batch",
                   "light,fanout,rooms,memory,handshake")
    for name, scenarios in results["servers"].items():
        for scenario, data in scenarios.items():
            assert "failed" not in data, (name, scenario, data)
        assert scenarios["light"]["loss"] == 0 and scenarios["light"]["errors"] == 0, name
        assert scenarios["light"]["delivered"] > 0, name
        for step in scenarios["fanout"]["steps"]:
            assert step["loss"] == 0 and step["errors"] == 0 and step["received"] > 0, name
    rooms = results["servers"]["quart-chat/hypercorn"]["rooms"]
    assert rooms["loss"] == 0 and rooms["step"]["received"] == rooms["step"]["expected"]
    assert results["servers"]["quart-chat/hypercorn"]["memory"]["clients"] > 0


def test_smoke_run_drives_socketio_through_engineio_framing(tmp_path):
    """The Socket.IO adapter subscribes, publishes and receives through python-socketio."""
    results = _run(tmp_path, "socketio", "light")
    light = results["servers"]["socketio"]["light"]
    assert light["loss"] == 0 and light["errors"] == 0 and light["delivered"] > 0


def test_report_writes_a_chart_and_checks_the_targets(tmp_path):
    """The chart is a PNG and the table names the issue's targets."""
    pytest.importorskip("matplotlib")
    from bench.report import chart, markdown

    results = _run(tmp_path, "floor,quart-chat/hypercorn", "fanout")
    path = tmp_path / "chart.png"
    chart(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Targets" in markdown(results)
