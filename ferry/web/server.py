"""Serving the web app on the loopback interface only (never another address)."""

from __future__ import annotations

import select
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import make_server

from ferry.viz.run import RunStore
from ferry.web.app import create_app

#: the only address ``ferry web`` binds: the page is for the operator on this machine
HOST = "127.0.0.1"
#: seconds between the serving loop's looks at a shutdown request: how long shutdown() waits
POLL_SECONDS = 0.1
#: the signals that stop ``ferry web``: Ctrl-C, and a service manager's stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
            self._server.serve_forever(poll_interval=POLL_SECONDS)
        finally:
            self._serving = False

    def start(self) -> WebServer:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="ferry-web", daemon=True)
        self._thread.start()
        return self

    def serve_until_signalled(
        self,
        ready: Callable[[], None] | None = None,
        signals: Iterable[signal.Signals] = STOP_SIGNALS,
    ) -> signal.Signals:
        """Serve until one of ``signals`` arrives, then shut down; return that signal. Call it
        from the main thread; ``ready`` runs once the signals are caught and the server runs.

        The signals' handlers do nothing: Python writes each signal's number to a wakeup
        socket, which this thread waits on, and then stops the server itself. So no exception
        is raised in whatever frame the signal interrupts, whichever thread receives it.
        """
        wanted = {signal.Signals(s) for s in signals}
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        previous = {s: signal.signal(s, _ignore) for s in wanted}
        try:
            self.start()
            if ready is not None:
                ready()
            while True:
                select.select([wake_r], [], [])
                for number in wake_r.recv(64):
                    if number in wanted:
                        return signal.Signals(number)
        finally:
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(previous_fd)
            wake_r.close()
            wake_w.close()

    def shutdown(self) -> None:
        """Stop serving (within POLL_SECONDS) and close the listening socket."""
        if self._serving or self._thread is not None:  # shutdown() waits for the loop to end
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _ignore(signum: int, frame: object) -> None:
    """A signal handler that does nothing: the wakeup socket carries the signal."""
