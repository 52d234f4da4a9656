"""Run every notebook in place, so the saved outputs (what GitHub and nbviewer show) are
fresh, and draw chat-widgets.png from the windows notebook 01 leaves open.

    python notebooks/refresh.py            # all notebooks and the picture
    python notebooks/refresh.py 03         # notebooks whose name starts with 03

Cells tagged ``nbval-skip`` are skipped here as under nbval. The widgets' state is saved
with the notebook, so nbviewer shows the windows as the run left them: open.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
PICTURE = HERE / "chat-widgets.png"
# Run in the kernel after 01: what the two windows show, as JSON for draw().
SNAPSHOT = """
import json as _json, time as _time
from pathlib import Path as _Path
from quart_chat.widgets import sender_color as _color
_Path({path!r}).write_text(_json.dumps([dict(
    me=w.me, channel=w.channel, state=w.client.state, error=w.error, color=_color(w.me),
    members=[(m, _color(m)) for m in w.members()],
    log=[(_time.strftime("%H:%M", _time.localtime(m.ts)), m.sender, _color(m.sender), m.bot,
          m.text) for m in w.messages()[-9:]],
) for w in (alice, bob)]))
"""


def run(path: Path) -> None:
    """Execute ``path`` in place; for 01, also draw the picture before the kernel ends."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=600, kernel_name="python3",
                            skip_cells_with_tag="nbval-skip", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    with client.setup_kernel():
        for index, cell in enumerate(book.cells):
            client.execute_cell(cell, index)
        if path.name.startswith("01"):
            with tempfile.TemporaryDirectory() as folder:
                data = Path(folder, "windows.json")
                book.cells.append(nbformat.v4.new_code_cell(SNAPSHOT.format(path=str(data))))
                client.execute_cell(book.cells[-1], len(book.cells) - 1)
                book.cells.pop()  # a step of this script, not of the notebook
                draw(json.loads(data.read_text()))
        client.set_widgets_metadata()
    nbformat.write(book, path)
    print(f"ran {path.name}")


def draw(windows: list[dict[str, Any]]) -> None:
    """The windows as the widget draws them (header, log, members, error), with matplotlib:
    no browser needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig = plt.figure(figsize=(11, 4.6), dpi=150)
    for n, window in enumerate(windows):
        ax = fig.add_axes((0.01 + n * 0.5, 0.02, 0.48, 0.96))
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.axis("off")
        ax.add_patch(FancyBboxPatch((0.5, 0.5), 99, 99, boxstyle="round,pad=0,rounding_size=1",
                                    fc="white", ec="#d0d7de"))
        ax.add_patch(plt.Circle((5, 93), 2.6, color=window["color"]))
        ax.text(5, 93, window["me"][:1].upper(), color="white", weight="bold", ha="center",
                va="center", fontsize=9)
        ax.text(9.5, 93, f"{window['me']} in #{window['channel']}", va="center", fontsize=11,
                weight="bold")
        state = {"connected": "#2ca02c", "reconnecting": "#ff9f1c"}.get(window["state"], "#999")
        ax.text(98, 93, f"● {window['state']}", color=state, ha="right", va="center", fontsize=8)
        ax.add_patch(FancyBboxPatch((2, 17), 72, 70, boxstyle="round,pad=0,rounding_size=1",
                                    fc="white", ec="#eaeef2"))
        y = 83.0
        for clock, sender, color, bot, text in window["log"]:
            if bot:
                ax.add_patch(FancyBboxPatch((2.5, y - 3.6), 71, 7, fc="#f1ecfb", ec="none",
                                            boxstyle="round,pad=0,rounding_size=1"))
            ax.text(4, y, clock, color="#999", fontsize=6.5, va="center")
            label = ("BOT " if bot else "") + sender
            ax.text(12, y, label, color=color, weight="bold", fontsize=8, va="center")
            shown = text if len(text) <= 44 - len(label) else text[: 41 - len(label)] + "…"
            ax.text(13 + 1.35 * len(label), y, shown, fontsize=8, va="center",
                    color="#4a3a73" if bot else "#222")
            y -= 7.4
        ax.add_patch(FancyBboxPatch((76, 17), 22, 70, boxstyle="round,pad=0,rounding_size=1",
                                    fc="#f6f8fa", ec="none"))
        ax.text(78, 83, f"MEMBERS · {len(window['members'])}", color="#666", fontsize=6.5)
        for row, (member, color) in enumerate(window["members"]):
            ax.text(78, 77 - row * 5.5, f"● {member}", color=color, fontsize=8)
        ax.add_patch(FancyBboxPatch((2, 8), 84, 7, boxstyle="round,pad=0,rounding_size=1",
                                    fc="white", ec="#d0d7de"))
        ax.text(4, 11.5, f"Message #{window['channel']} — Enter sends", color="#999",
                fontsize=8, va="center")
        ax.add_patch(FancyBboxPatch((87, 8), 11, 7, boxstyle="round,pad=0,rounding_size=1",
                                    fc="#2196f3", ec="none"))
        ax.text(92.5, 11.5, "Send", color="white", fontsize=8, ha="center", va="center")
        if window["error"]:
            ax.text(3, 3.5, f"⚠ {window['error']}", color="#b3261e", fontsize=7.5, va="center")
    fig.savefig(PICTURE, facecolor="white")
    plt.close(fig)
    print(f"wrote {PICTURE.name}")


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for notebook in sorted(HERE.glob("*.ipynb")):
        if not wanted or any(notebook.name.startswith(w) for w in wanted):
            run(notebook)
