"""The floor: the ``websockets`` library (no ASGI) + one redis.asyncio pub/sub connection.

Same JSON protocol as quart-chat (and ``?batch=1``). Run: ``python -m bench.peers.floor PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve

from ._mini import Conn, MiniHub, redis_url, welcome


async def main(port: int) -> None:
    hub = MiniHub(redis_url(), prefix="floor:")
    await hub.start()

    async def handler(ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        client_id = query.get("client_id", ["anon"])[0]
        batch = query.get("batch", ["0"])[0] not in ("0", "")
        conn = Conn(client_id, ws.send, batch)
        conn.deliver(welcome(client_id, "floor", batch))
        sender = asyncio.create_task(conn.sender())
        try:
            async for data in ws:
                conn.deliver(await hub.handle(conn, data))
                if conn.closed or sender.done():
                    break
        finally:
            hub.leave(conn)
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20,
                     ping_interval=None, max_queue=None):
        await stop
    await hub.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
