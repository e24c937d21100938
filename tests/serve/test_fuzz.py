"""API body fuzzing (issue 17 §4): arbitrary JSON values and bytes posted to every POST route
never reach a 500 or a traceback; each reply is a JSON error (400/404/413/415) and nothing is
created or changed (no migration, drain, token or disabled host).

Through Flask's test client (the same app ``ferry serve`` serves, without sockets), so a few
hundred bodies take seconds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from ferry import Orchestrator
from ferry.persistence.drains import DrainRepository
from tests.serve.conftest import Service

#: POST routes, with ids and names nothing has, so that a body that happens to be valid is
#: refused too (404, or 400 for a request of an unknown instance/host)
ROUTES = (
    "/api/v1/migrations",
    "/api/v1/migrations/nope/abort",
    "/api/v1/migrations/nope/force-complete",
    "/api/v1/hosts/nope/disable",
    "/api/v1/hosts/nope/enable",
    "/api/v1/drains",
    "/api/v1/drains/nope/abort",
)
ALLOWED = {400, 404, 413, 415}
_FIELDS = (
    "instance",
    "destination",
    "host",
    "max_attempts",
    "max_parallel",
    "overrides",
    "not_with",
    "to",
    "to_group",
    "order",
    "reason",
    "dry_run",
    "block_migration",
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
#: objects with the routes' own field names (wrong types, unknown instances) and anything else
bodies = values | st.dictionaries(st.sampled_from(_FIELDS), values, min_size=1)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x"]
)


def _state(orch: Orchestrator) -> tuple[Any, ...]:
    return (
        [m.id for m in orch.migrations.list()],
        [d.id for d in orch.drains()],
        DrainRepository(orch.db).maintenance(),
    )


@pytest.fixture
def client(service: Service) -> Any:
    return service.server.app.test_client()


def _check(reply: Any) -> None:
    assert reply.status_code in ALLOWED, (reply.status_code, reply.data[:300])
    text = reply.get_data(as_text=True)
    assert "Traceback" not in text
    error = json.loads(text)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(route=st.sampled_from(ROUTES), body=bodies)
@example(route="/api/v1/migrations", body={"instance": "nope", "not_with": [1]})
@example(route="/api/v1/drains", body={"host": "nope", "max_parallel": 1.5, "order": None})
@example(route="/api/v1/hosts/nope/disable", body={"reason": "x" * 2000})
def test_arbitrary_json(
    client: Any, service: Service, orch: Orchestrator, route: str, body: Any
) -> None:
    before = _state(orch)
    reply = client.post(
        route,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {service.operator}"},
    )
    _check(reply)
    assert _state(orch) == before


@_SETTINGS
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=200), ctype=content_types)
@example(route="/api/v1/migrations", raw=b"[" * 100_000, ctype="application/json")
@example(route="/api/v1/drains", raw=b"{" * 30_000, ctype="application/json")
@example(route="/api/v1/drains", raw=b"\xff\xfe{}", ctype="application/json")
@example(route="/api/v1/migrations", raw=b" " * 70_000, ctype="application/json")
def test_arbitrary_bytes(
    client: Any, service: Service, orch: Orchestrator, route: str, raw: bytes, ctype: str
) -> None:
    before = _state(orch)
    headers = {"Authorization": f"Bearer {service.operator}"}
    if ctype:
        headers["Content-Type"] = ctype
    reply = client.post(route, data=raw, headers=headers)
    _check(reply)
    assert _state(orch) == before
