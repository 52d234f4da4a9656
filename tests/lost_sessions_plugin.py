"""A plugin for crash tests: appends each best-effort ``client_disconnected`` of a lost
session (one that lived on a dead process) to the file ``QUART_CHAT_TEST_EVENTS``."""

from __future__ import annotations

import json
import os
from typing import Any

from quart_chat import hookimpl


@hookimpl
def client_disconnected(session: Any) -> None:
    path = os.environ.get("QUART_CHAT_TEST_EVENTS")
    if path and getattr(session, "lost", False):
        with open(path, "a") as events:
            events.write(json.dumps({
                "client_id": session.client_id, "session": session.id,
                "node": session.node_id, "channels": sorted(session.channels),
                "close_code": session.close_code, "pid": os.getpid(),
            }) + "\n")
