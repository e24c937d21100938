"""``ferry serve``: the web pages, an authenticated JSON API under ``/api/v1`` (with Server-Sent
Events and an OpenAPI document), and Prometheus metrics, from one server."""

from ferry.serve.app import create_service_app
from ferry.serve.server import ServiceServer, check_listen
from ferry.serve.tokens import Role, TokenStore

__all__ = ["Role", "ServiceServer", "TokenStore", "check_listen", "create_service_app"]
