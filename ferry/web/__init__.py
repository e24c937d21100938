"""``ferry web``: a small read-only web page on 127.0.0.1 listing migrations and showing, for one
migration, its live graph and progress (the page polls a JSON view of the run)."""

from ferry.web.app import create_app
from ferry.web.server import HOST, WebServer

__all__ = ["HOST", "WebServer", "create_app"]
