"""Turn a results dict into markdown tables (with ratios) and a PNG chart."""

# ruff: noqa: RUF001  (the tables use the multiplication sign and en dash on purpose)

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from typing import Any

from .servers import PEERS, SPECS

QC = "quart-chat/hypercorn"
QC_BATCH = "quart-chat/hypercorn+batch"
THIN = "thin-quart/hypercorn"


def _get(results: dict[str, Any], server: str, *path: str) -> float:
    node: Any = results.get("servers", {}).get(server, {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return float("nan")
        node = node[key]
    try:
        return float(node)
    except (TypeError, ValueError):
        return float("nan")


#: (column title, path into a server's results, formatter, higher is better)
METRICS: list[tuple[str, tuple[str, ...], Callable[[float], str], bool]] = [
    ("(a) fan-out held, deliveries/s", ("fanout", "best_rate"), lambda v: f"{v:,.0f}", True),
    ("(a) server CPU µs/delivery", ("fanout", "cpu_us"), lambda v: f"{v:.1f}", False),
    ("(b) light p50 ms", ("light", "p50"), lambda v: f"{v * 1e3:.2f}", False),
    ("(b) light p99 ms", ("light", "p99"), lambda v: f"{v * 1e3:.2f}", False),
    ("(c) rooms p99 ms", ("rooms", "p99"), lambda v: f"{v * 1e3:.2f}", False),
    ("(c) rooms CPU µs/delivery", ("rooms", "server_cpu_us"), lambda v: f"{v:.1f}", False),
    ("(d) KiB per idle conn", ("memory", "per_conn"), lambda v: f"{v / 1024:.1f}", False),
    ("(d) KiB per idle conn, 10,000", ("memory", "10000", "per_conn"),
     lambda v: f"{v / 1024:.1f}", False),
    ("(e) handshakes+subscribes/s", ("handshake", "rate"), lambda v: f"{v:,.0f}", True),
    ("(g) storm of 2,000: subscribed/s", ("storm", "2000", "rate"), lambda v: f"{v:,.0f}",
     True),
    ("(g) storm of 2,000: failed", ("storm", "2000", "failures"), lambda v: f"{v:,.0f}", False),
    ("(g) storm of 10,000: subscribed/s", ("storm", "10000", "rate"), lambda v: f"{v:,.0f}",
     True),
    ("(g) storm of 10,000: failed", ("storm", "10000", "failures"), lambda v: f"{v:,.0f}",
     False),
]


def _ratio(value: float, other: float, higher_better: bool) -> float:
    """How many times better ``value`` is than ``other`` (>1: better)."""
    if math.isnan(value) or math.isnan(other) or value <= 0 or other <= 0:
        return float("nan")
    return value / other if higher_better else other / value


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) and b > 0 else float("nan")


def _fmt_ratio(r: float) -> str:
    return "–" if math.isnan(r) else f"{r:.2f}×"


def markdown(results: dict[str, Any]) -> str:
    servers = list(results.get("servers", {}))
    lines: list[str] = []
    meta = results.get("meta", {})
    lines.append(f"Run {meta.get('started', '?')}, {meta.get('seconds', '?')} s, "
                 f"{meta.get('cpus', '?')} CPUs, server pinned to CPU 0 and load generator + "
                 f"Redis to CPU 1: {meta.get('pinned')}. Command: "
                 f"`{meta.get('command', 'python -m bench')}`")
    lines.append("")
    lines.append("Each cell: the figure, then its ratio to the floor in the same run "
                 "(>1× means better than the floor; for latency, memory and CPU, lower "
                 "figures are better and the ratio is inverted accordingly).")
    lines.append("")
    header = ["server", *(m[0] for m in METRICS)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for server in servers:
        row = [f"**{server}**" if server.startswith("quart-chat") else server]
        for _, path, fmt, higher in METRICS:
            value = _get(results, server, *path)
            if math.isnan(value) or (value == 0 and higher):
                failed = results["servers"][server].get(path[0], {})
                row.append("failed" if isinstance(failed, dict) and "failed" in failed else "–")
                continue
            floor = _get(results, "floor", *path)
            ratio = _ratio(value, floor, higher)
            row.append(fmt(value) + ("" if server == "floor" or math.isnan(ratio)
                                     else f" ({ratio:.2f}×)"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # quart-chat against every yardstick and peer.
    others = [s for s in ("floor", "floor+batch", THIN, *PEERS) if s in servers]
    if QC in servers and others:
        lines.append("quart-chat against each other server in the same run (>1×: quart-chat "
                     "is better; the fan-out row with coalescing compares "
                     f"`{QC_BATCH}`):")
        lines.append("")
        lines.append("| metric | " + " | ".join(others) + " |")
        lines.append("|---|" + "---|" * len(others))
        rows = [(title, QC, path, higher) for title, path, _, higher in METRICS]
        if QC_BATCH in servers:
            rows.insert(1, ("(a) fan-out held, with ?batch=1", QC_BATCH, ("fanout", "best_rate"),
                            True))
        for title, mine, path, higher in rows:
            value = _get(results, mine, *path)
            cells = []
            for other in others:
                # Compare coalescing with the other server's own best mode.
                other_value = _get(results, other, *path)
                cells.append(_fmt_ratio(_ratio(value, other_value, higher)))
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        lines.append("")

    scale = results.get("scale")
    if isinstance(scale, dict) and "w1" in scale:
        lines.append(f"(f) scale-out, `{scale['server']}`, same offered load, one process vs "
                     "two on one Redis (server and load generator unpinned):")
        lines.append("")
        lines.append("| processes | delivered/s | p50 ms | p99 ms | loss | server CPU s | "
                     "CPU µs/delivery | CPU split (s) | load generator CPU |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for key, label in (("w1", "1"), ("w2", "2")):
            w = scale[key]
            split = ", ".join(f"{x:.2f}" for x in w["cpu_split"])
            lines.append(f"| {label} | {w['delivered_rate']:,.0f} | {w['p50'] * 1e3:.1f} | "
                         f"{w['p99'] * 1e3:.1f} | {w['loss']} | {w['server_cpu']:.2f} | "
                         f"{w['cpu_us_per_msg']:.1f} | {split} | {w['client_cpu']:.0%} |")
        lines.append("")
        lines.append(f"CPU per delivery, two processes / one: "
                     f"{scale['efficiency_ratio']:.2f}× (target ≤ 1.15×).")
        lines.append("")

    lines.extend(_targets(results))
    notes = []
    for server in servers:
        fan = results["servers"][server].get("fanout", {})
        if isinstance(fan, dict) and fan.get("best_client_cpu", 0) > 0.9:
            notes.append(f"- {server}: the load generator used {fan['best_client_cpu']:.0%} of "
                         "a core at the best step: the figure may be bounded by the client.")
        rounds = results["servers"][server].get("fanout_rounds", [])
        if len(rounds) > 1:
            notes.append(f"- {server}: fan-out rounds held " + ", ".join(
                f"{r:,.0f}" if r else "nothing (failed at the first step)" for r in rounds)
                + " deliveries/s; the best is shown.")
        if isinstance(fan, dict) and fan.get("stopped_by") == "max steps":
            notes.append(f"- {server}: fan-out reached the last step without failing.")
    for skipped in results.get("skipped", []):
        notes.append(f"- skipped: {skipped}")
    if notes:
        lines.append("Notes:")
        lines.extend(notes)
        lines.append("")
    return "\n".join(lines)


def _targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, checked against this run."""
    servers = results.get("servers", {})
    if QC not in servers:
        return []
    out = ["Targets (issues 8 and 14) in this run:", "", "| target | measured | met |",
           "|---|---|---|"]

    def row(text: str, measured: float, goal: float, higher: bool, unit: str = "×") -> None:
        if math.isnan(measured):
            out.append(f"| {text} | – | – |")
            return
        met = measured >= goal if higher else measured <= goal
        out.append(f"| {text} | {measured:.2f}{unit} | {'yes' if met else 'no'} |")

    peers = [p for p in PEERS if p in servers]
    rate = _get(results, QC, "fanout", "best_rate")
    if THIN in servers:
        row(f"(a) plain fan-out ≥ 0.95× {THIN}",
            _div(rate, _get(results, THIN, "fanout", "best_rate")), 0.95, True)
    if peers:
        best_peer = max((_get(results, p, "fanout", "best_rate") for p in peers),
                        default=float("nan"))
        worst_needed = max((_get(results, p, "fanout", "best_rate") for p in peers
                            if p in ("socketio", "channels")), default=float("nan"))
        row("(a) plain fan-out ahead of python-socketio and Channels",
            _div(rate, worst_needed), 1.0, True)
        if QC_BATCH in servers:
            row("(a) fan-out with coalescing ≥ 1.5× the best peer",
                _div(_get(results, QC_BATCH, "fanout", "best_rate"), best_peer), 1.5, True)
        best_p99 = min((_get(results, p, "light", "p99") for p in peers), default=float("nan"))
        row("(b) light-load p99 ≤ the best peer's (ratio quart-chat / best)",
            _div(_get(results, QC, "light", "p99"), best_p99), 1.0, False)
        best_mem = min((_get(results, p, "memory", "per_conn") for p in peers),
                       default=float("nan"))
        row("(d) memory per idle connection ≤ the best peer's (ratio)",
            _div(_get(results, QC, "memory", "per_conn"), best_mem), 1.0, False)
        row("(d) memory per idle connection ≤ 30 KiB (2,000 clients)",
            _get(results, QC, "memory", "per_conn") / 1024, 30.0, False, " KiB")
        for n in ("2000", "10000"):
            best_storm = max((_get(results, p, "storm", n, "rate") for p in peers),
                             default=float("nan"))
            row(f"(g) storm of {int(n):,}: subscribed/s ≥ the best peer's (ratio)",
                _div(_get(results, QC, "storm", n, "rate"), best_storm), 1.0, True)
            row(f"(g) storm of {int(n):,}: failures = 0",
                _get(results, QC, "storm", n, "failures"), 0.0, False, "")
    scale = results.get("scale")
    if isinstance(scale, dict) and "efficiency_ratio" in scale:
        row("(f) CPU per delivery, 2 processes / 1 ≤ 1.15×", scale["efficiency_ratio"], 1.15,
            False)
    out.append("")
    return out


def chart(results: dict[str, Any], path: pathlib.Path) -> None:
    """p99 latency against delivered rate, one line per server (fan-out steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 6), dpi=100)
    for server, data in results.get("servers", {}).items():
        fan = data.get("fanout")
        if not isinstance(fan, dict) or not fan.get("steps"):
            continue
        steps = fan["steps"]
        xs = [s["delivered_rate"] for s in steps]
        ys = [max(s["p99"] * 1e3, 0.1) if s["p99"] == s["p99"] else None for s in steps]
        kind = SPECS[server].kind if server in SPECS else "peer"
        style = {"quart-chat": "-", "floor": ":", "thin-quart": "-.", "peer": "--"}[kind]
        width = 2.2 if kind == "quart-chat" else 1.4
        line, = ax.plot(xs, ys, style, marker="o", markersize=3, linewidth=width, label=server)
        for s, x, y in zip(steps, xs, ys, strict=False):
            if y is not None and not (s["loss"] == 0 and s["errors"] == 0
                                      and s["disconnected"] == 0):
                ax.plot([x], [y], "x", color=line.get_color(), markersize=9)
    ax.axhline(250, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.text(ax.get_xlim()[0], 265, " p99 limit 250 ms", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("delivered messages/s, log (500 subscribers of one channel, via Redis)")
    ax.set_ylabel("end-to-end p99 latency, ms (log)")
    meta = results.get("meta", {})
    ax.set_title(f"Fan-out: p99 latency vs delivered rate (x = a step with loss) — "
                 f"{meta.get('started', '')}", fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
