"""Network faults between a server and Redis, which killing a process cannot play."""

from __future__ import annotations

import contextlib
import socket
import threading

from .loopback import LOOPBACK, free_port


class TcpProxy:
    """A loopback TCP proxy that can cut or stall every connection it carries.

    Put it between a server and Redis (``redis://127.0.0.1:<proxy.port>``) to simulate
    network faults that a killed or SIGSTOPped redis-server cannot: :meth:`cut` closes
    every connection and refuses new ones (a dropped link), :meth:`stall` keeps every
    socket open but forwards nothing (a black hole: no RST, no FIN, just silence), and
    :meth:`restore` goes back to forwarding. One background thread, bounded buffers.
    """

    CHUNK = 64 * 1024

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.mode = "forward"
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"tcp proxy :{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def cut(self) -> None:
        """Close every carried connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self.mode = "cut"
            self._close_all()

    def stall(self) -> None:
        """Forward nothing, in either direction, on old and new connections alike."""
        with self._lock:
            self.mode = "stall"

    def restore(self) -> None:
        with self._lock:
            self.mode = "forward"

    @property
    def connections(self) -> int:
        return len(self._pairs) // 2

    def _close_all(self) -> None:
        for sock in list(self._pairs):
            with contextlib.suppress(OSError):
                sock.close()
        self._pairs.clear()

    def _run(self) -> None:
        import selectors

        assert self._listener is not None
        while self._running:
            # A fresh selector per round: sockets closed by cut() never linger in it. They
            # are registered under the lock, so cut() cannot close one in between.
            with selectors.DefaultSelector() as selector:
                with self._lock:
                    selector.register(self._listener, selectors.EVENT_READ)
                    if self.mode == "forward":
                        for sock in self._pairs:
                            selector.register(sock, selectors.EVENT_READ)
                ready = selector.select(0.05)
            for key, _ in ready:
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._pump(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            if self.mode == "cut":
                client.close()
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), 2)
            except OSError:
                client.close()
                return
            client.settimeout(2.0)  # sendall() never hangs the proxy thread for long
            upstream.settimeout(2.0)
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
            if peer is None or self.mode != "forward":
                return
            try:
                data = sock.recv(self.CHUNK)
                if data:
                    peer.sendall(data)
                    return
            except OSError:
                pass
            for end in (sock, peer):
                self._pairs.pop(end, None)
                with contextlib.suppress(OSError):
                    end.close()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._close_all()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
