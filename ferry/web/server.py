"""Serving the web app on the loopback interface only (never another address)."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import make_server

from ferry.viz.run import RunStore
from ferry.web.app import create_app

#: the only address ``ferry web`` binds: the page is for the operator on this machine
HOST = "127.0.0.1"


class WebServer:
    """The app on ``127.0.0.1:port`` (0 picks a free port), served by threads."""

    def __init__(self, store: RunStore, port: int = 8080, *, refresh_seconds: float = 1.0) -> None:
        self.app = create_app(store, refresh_seconds=refresh_seconds)
        self._server: Any = make_server(HOST, port, self.app, threaded=True)
        self.port: int = self._server.server_port
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.serve_forever()
        finally:
            self._serving = False

    def start(self) -> WebServer:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="ferry-web", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._serving or self._thread is not None:  # shutdown() waits for the loop to end
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
