"""Bearer tokens of ``ferry serve``: roles, creation, revocation and the constant-time check.

A token reads ``ferry_<id>_<secret>``: the id (public, 12 hex digits) finds the row, the secret
(32 random bytes, URL-safe) is checked against a salted SHA-256 kept in the row. The token is
returned once by :meth:`TokenStore.create` and stored nowhere; comparisons go through
:func:`hmac.compare_digest` on the hashes. A token never appears in a log line, a record or an
error message: only its id and name do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa

from ferry import errors
from ferry.persistence.db import Database
from ferry.persistence.models import API_TOKENS as T

PREFIX = "ferry_"
_TOKEN = re.compile(r"^ferry_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")


class Role(StrEnum):
    """``reader``: every GET; ``operator``: GETs and writes."""

    READER = "reader"
    OPERATOR = "operator"

    def allows(self, needed: Role) -> bool:
        return self is Role.OPERATOR or needed is Role.READER


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret or hash."""

    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class TokenStore:
    """The ``ferry_api_tokens`` table."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = now

    def create(self, name: str, role: str) -> tuple[TokenInfo, str]:
        """A new token: its info and the token itself (show it once; it is not kept)."""
        try:
            role_ = Role(role)
        except ValueError:
            raise errors.ConfigError(
                f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
            ) from None
        if not name.strip():
            raise errors.ConfigError("a token needs a name")
        token_id, secret, salt = (
            secrets.token_hex(6),
            secrets.token_urlsafe(32),
            secrets.token_hex(16),
        )
        info = TokenInfo(token_id, name.strip(), role_, self.now())
        try:
            with self.db.connect() as conn:
                conn.execute(
                    T.insert().values(
                        id=info.id,
                        name=info.name,
                        role=info.role.value,
                        salt=salt,
                        hash=_digest(salt, secret),
                        created_at=info.created_at,
                    )
                )
        except sa.exc.IntegrityError:
            raise errors.ConfigError(f"a token named {info.name!r} exists already") from None
        return info, f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[TokenInfo]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(T).order_by(T.c.created_at)).mappings().all()
        return [_info(r) for r in rows]

    def any_active(self) -> bool:
        with self.db.connect() as conn:
            return (
                conn.execute(sa.select(T.c.id).where(T.c.revoked_at.is_(None))).first() is not None
            )

    def revoke(self, name_or_id: str) -> TokenInfo:
        """Revoke the token with this name or id (ConfigError when there is none)."""
        with self.db.connect() as conn:
            where = sa.or_(T.c.name == name_or_id, T.c.id == name_or_id)
            row = conn.execute(sa.select(T).where(where)).mappings().first()
            if row is None:
                raise errors.ConfigError(f"no token named {name_or_id!r}")
            if row["revoked_at"] is None:
                conn.execute(T.update().where(T.c.id == row["id"]).values(revoked_at=self.now()))
            row = conn.execute(sa.select(T).where(T.c.id == row["id"])).mappings().one()
        return _info(row)

    def authenticate(self, token: str) -> TokenInfo | None:
        """The active token's info, or None. The hash comparison takes constant time."""
        match = _TOKEN.match(token)
        # an unknown id still costs one digest and one comparison: timing tells nothing
        token_id, secret = match.groups() if match else ("", token)
        with self.db.connect() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == token_id)).mappings().first()
        salt, stored = (row["salt"], row["hash"]) if row is not None else ("0" * 32, "0" * 64)
        ok = hmac.compare_digest(_digest(salt, secret).encode(), stored.encode())
        if not ok or row is None or row["revoked_at"] is not None:
            return None
        return _info(row)


def _info(row: sa.RowMapping) -> TokenInfo:
    return TokenInfo(
        row["id"], row["name"], Role(row["role"]), row["created_at"], row["revoked_at"]
    )
