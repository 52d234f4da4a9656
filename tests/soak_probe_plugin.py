"""A plugin for the soak test: ``GET /_tasks`` answers the number of asyncio tasks of the
server process, so a test can watch a subprocess server for leaked tasks. It first runs
a full garbage collection and glibc's ``malloc_trim`` so that the RSS the test reads
next counts memory in use, not freed memory the allocator has kept."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
from typing import Any

from quart_chat import hookimpl


@hookimpl
def startup(app: Any) -> None:
    async def tasks() -> dict[str, int]:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return {"tasks": len(asyncio.all_tasks())}

    app.add_url_rule("/_tasks", "soak_tasks", tasks)
