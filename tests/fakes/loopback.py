"""What the fake HTTP services share: their server on a free loopback port, served from a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackService:
    """Mixed into a fake service: ``start()``/``stop()`` (or ``with``), ``root`` once started. The fake's handlers
    find it as ``server.fake``; ``_stopping`` wakes handlers that sleep on purpose."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event

    def _serve_in_thread(self, server_class: type[ThreadingHTTPServer], handler: type[BaseHTTPRequestHandler],
               name: str) -> None:
        server: Any = server_class(("127.0.0.1", 0), handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=name,
                                        daemon=True)
        self._thread.start()

    def _drop_connections(self) -> None:
        """After the server closed, before its thread is joined: cut connections still open (if the fake keeps
        them)."""

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
