"""API publishes per second: two `quart-chat serve` on one private Redis, loopback, bounded.

Run: ``PYTHONPATH=$PWD python -m bench.api_publish [COUNT]`` (default 2000 requests, 8
client threads; urllib opens one connection per request, as a simple backend would).
"""

from __future__ import annotations

import concurrent.futures
import sys
import time

from quart_chat.server_api import ServerAPI
from quart_chat.testing import RedisServer, ServerProcess

THREADS = 8


def main(total: int) -> None:
    with RedisServer() as redis:
        env = {"QUART_CHAT_REDIS_URL": redis.url, "QUART_CHAT_API_KEY": "k",
               "QUART_CHAT_LOG_LEVEL": "warning"}
        with ServerProcess(env) as first, ServerProcess(env) as second:
            apis = [ServerAPI(first.url, "k"), ServerAPI(second.url, "k")]
            for api in apis:
                api.publish("bench", "warm-up")
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
                mids = list(pool.map(lambda n: apis[n % 2].publish("bench", f"message {n}"),
                                     range(total), timeout=120))
            elapsed = time.perf_counter() - start
            assert len(set(mids)) == total
            print(f"{total} API publishes over 2 processes, {THREADS} client threads: "
                  f"{elapsed:.2f}s, {total / elapsed:.0f}/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
