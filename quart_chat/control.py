"""The control path: ask every server process to act, and gather their answers.

Some server API methods act on all processes (``disconnect``, ``subscribe``,
``unsubscribe``, ``channels``, ``info``). They travel over the broker, so they need
nothing the message path does not already have, on every backend:

- every process listens on two reserved channels, ``@control`` (requests, for all) and
  ``@control.<node_id>`` (answers, for the process that asked). The ``@`` breaks the
  channel-name rules, so no client can subscribe or publish to them, and the hub hands
  their payloads to this module instead of to sessions (:meth:`Hub.listen`);
- a request is ``{"op", "args", "rid", "reply"}``; each process, the asker included,
  runs its local action (:meth:`ChatService.act`) and publishes
  ``{"rid", "node", "result"}`` (or ``"error": [code, message]``) to the asker's channel;
- the asker knows how many answers to wait for from the publish itself: PUBLISH
  (SPUBLISH on a cluster) returns how many processes' pub/sub connections received the
  request. It waits for that many, at most ``CONTROL_TIMEOUT`` seconds; a process that
  dies in between is reported as missing rather than awaited for ever.

Anyone who can publish on the Redis can send requests; Redis access is full trust anyway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ChatError

if TYPE_CHECKING:
    from .service import ChatService

log = logging.getLogger("quart_chat.control")

#: The channel every process reads requests from (not a valid client channel name).
REQUESTS = "@control"
#: Seconds the asker waits for the answers of the other processes.
CONTROL_TIMEOUT = 2.0


class _Request(msgspec.Struct):
    op: str
    args: dict[str, Any]
    rid: str
    reply: str


class _Answer(msgspec.Struct, omit_defaults=True):
    rid: str
    node: str
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


@dataclass
class Answers:
    """What the processes answered to one request."""

    #: One result per process that answered, each with its ``node`` id.
    results: list[dict[str, Any]] = field(default_factory=list)
    #: Processes that received the request but did not answer in time.
    missing: int = 0


class _Waiting:
    def __init__(self) -> None:
        self.answers: list[_Answer] = []
        self.arrived = asyncio.Event()


class Control:
    """Requests to every process and their answers, for one server process."""

    def __init__(self, service: ChatService) -> None:
        self._service = service
        self._node = service.node_id
        self._replies = f"{REQUESTS}.{self._node}"
        self._waiting: dict[str, _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen for requests and answers; raises ``Unavailable`` if the broker is down."""
        hub = self._service.hub
        await hub.listen(self._replies, self._on_answer)
        await hub.listen(REQUESTS, self._on_request)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def ask(self, op: str, **args: Any) -> Answers:
        """Run ``op`` on every process (this one included) and gather the results.

        Raises the first error a process answered with, as its :class:`ChatError`.
        """
        rid = secrets.token_hex(8)
        waiting = self._waiting[rid] = _Waiting()
        request = _Request(op=op, args=args, rid=rid, reply=self._replies)
        loop = asyncio.get_running_loop()
        try:
            expected = await self._service.broker.publish(REQUESTS, msgspec.json.encode(request))
            deadline = loop.time() + CONTROL_TIMEOUT
            while len(waiting.answers) < expected and loop.time() < deadline:
                waiting.arrived.clear()
                try:
                    await asyncio.wait_for(waiting.arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
        finally:
            del self._waiting[rid]
        answers = Answers(missing=max(0, expected - len(waiting.answers)))
        if answers.missing:
            log.warning("control %s: %d of %d processes did not answer within %.1fs",
                        op, answers.missing, expected, CONTROL_TIMEOUT)
        for answer in waiting.answers:
            if answer.error is not None:
                raise ChatError.from_code(*answer.error)
            answers.results.append({**(answer.result or {}), "node": answer.node})
        return answers

    def _on_request(self, payload: bytes) -> None:
        try:
            request = msgspec.json.decode(payload, type=_Request)
        except msgspec.DecodeError:
            log.warning("control: ignored a malformed request")
            return
        task = asyncio.create_task(self._answer(request), name=f"control {request.op}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: _Request) -> None:
        answer = _Answer(rid=request.rid, node=self._node)
        try:
            answer.result = await self._service.act(request.op, request.args)
        except ChatError as exc:
            answer.error = (exc.code, exc.message)
        except Exception:
            log.exception("control %s failed on this process", request.op)
            answer.error = ("internal", f"{request.op} failed on process {self._node}")
        try:
            await self._service.broker.publish(request.reply, msgspec.json.encode(answer))
        except ChatError:
            log.warning("control %s: could not send the answer", request.op)

    def _on_answer(self, payload: bytes) -> None:
        try:
            answer = msgspec.json.decode(payload, type=_Answer)
        except msgspec.DecodeError:
            log.warning("control: ignored a malformed answer")
            return
        waiting = self._waiting.get(answer.rid)
        if waiting is not None:
            waiting.answers.append(answer)
            waiting.arrived.set()
