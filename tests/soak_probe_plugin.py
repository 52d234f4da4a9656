"""A plugin for the soak test: ``GET /_tasks`` answers the number of asyncio tasks of the
server process, so a test can watch a subprocess server for leaked tasks."""

from __future__ import annotations

import asyncio
from typing import Any

from quart_chat import hookimpl


@hookimpl
def startup(app: Any) -> None:
    async def tasks() -> dict[str, int]:
        return {"tasks": len(asyncio.all_tasks())}

    app.add_url_rule("/_tasks", "soak_tasks", tasks)
