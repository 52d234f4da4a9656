"""``serve --reload``: an edited plugin is swapped in place in a real server process."""

from __future__ import annotations

import time
from pathlib import Path

from quart_chat import ChatClient
from quart_chat.testing import ServerProcess

from .kit import REPO, WAIT

BOT = '''
from quart_chat import hookimpl

@hookimpl
async def message_published(message, bot):
    if message.text == "ping":
        await bot.reply(message, "{answer}")

@hookimpl
def shutdown():
    print("stopped {answer}", flush=True)
'''

OTHER = '''
from quart_chat import hookimpl

STARTS = 0

@hookimpl
def startup():
    global STARTS
    STARTS += 1
    print(f"other started {STARTS}", flush=True)
'''


def _wait_for(server: ServerProcess, text: str, count: int = 1) -> None:
    """Until ``text`` appears ``count`` times in the server's log (bounded)."""
    deadline = time.monotonic() + WAIT
    while server.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.02)


def _ask(alice: ChatClient) -> str:
    alice.publish("lobby", "ping")
    assert alice.receive(WAIT).text == "ping"
    return alice.receive(WAIT).text


def test_reload_swaps_an_edited_bot_while_the_client_stays_connected(tmp_path: Path):
    """An edited bot answers with its new text on the same connection; a broken edit
    keeps the running version with one clear line; other plugins are not restarted."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    bot = folder / "echo.py"
    bot.write_text(BOT.format(answer="v1"))
    (folder / "other.py").write_text(OTHER)
    env = {"QUART_CHAT_PLUGINS_DIR": str(folder), "PYTHONPATH": str(REPO)}
    with ServerProcess(env, "--reload") as server:
        _wait_for(server, "--reload: watching")
        alice = ChatClient(server.ws_url, "alice", reconnect=False)
        session = alice.welcome["session"]
        alice.subscribe("lobby")
        assert _ask(alice) == "v1"

        bot.write_text(BOT.format(answer="v2"))
        _wait_for(server, "reload: plugin echo")
        assert "stopped v1" in server.log()  # the old version's shutdown ran
        assert _ask(alice) == "v2"

        bot.write_text("from quart_chat import hookimpl\n\ndef oops(:\n")
        _wait_for(server, "the running version stays")
        failure = [line for line in server.log().splitlines() if "running version" in line]
        assert len(failure) == 1 and f"plugin file {bot}" in failure[0]
        assert "SyntaxError" in failure[0]
        assert _ask(alice) == "v2"

        assert alice.welcome["session"] == session and alice.reconnects == 0
        assert server.log().count("other started") == 1
        alice.close()
