"""TaskFlow's job board configuration for a parsed board URL (:mod:`ferry.board_url`)."""

from __future__ import annotations

from typing import Any

from ferry.board_url import BoardURL, host_text


def board_conf(
    url: BoardURL, *, namespace: str, timeout: float, session_timeout: float | None = None
) -> dict[str, Any]:
    """TaskFlow's board configuration for ``url`` (the password, if any, included).

    ``timeout``: Redis socket timeouts; ``session_timeout`` (default ``timeout``): ZooKeeper's
    session timeout, after which a dead client's ephemeral claims are gone."""
    if url.kind == "redis":
        host, port = url.hosts[0]
        conf: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": url.db,
            "namespace": namespace,
            "socket_timeout": timeout,
            "socket_connect_timeout": min(timeout, 5.0),
        }
        if url.username:
            conf["username"] = url.username
        if url.password:
            conf["password"] = url.password
        if url.tls:
            conf["ssl"] = True
        return conf
    return {
        "hosts": ",".join(f"{host_text(h)}:{p}" for h, p in url.hosts),
        "path": url.path,
        "timeout": session_timeout or timeout,
    }
