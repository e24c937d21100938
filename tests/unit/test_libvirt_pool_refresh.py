"""The libvirt driver's pool refresh waits out libvirt's "asynchronous jobs running" refusal (two
migrations into one host at once) and raises any other error at once."""

from __future__ import annotations

from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from ferry.drivers.libvirt import storage  # noqa: E402


class Pool:
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.calls = 0

    def refresh(self, _flags: int) -> None:
        self.calls += 1
        if self.errors:
            raise libvirt.libvirtError(self.errors.pop(0))


BUSY = "internal error: pool 'ferry-x' has asynchronous jobs running."


def test_refresh_waits_while_the_pool_is_busy() -> None:
    pauses: list[Any] = []
    pool = Pool([BUSY, BUSY])
    storage.refresh(pool, pause=pauses.append)
    assert pool.calls == 3 and pauses == [storage.REFRESH_PAUSE] * 2


def test_refresh_raises_other_errors_at_once() -> None:
    pool = Pool(["Storage pool not found"])
    with pytest.raises(libvirt.libvirtError):
        storage.refresh(pool, pause=lambda _s: None)
    assert pool.calls == 1


def test_refresh_gives_up_after_its_tries() -> None:
    pool = Pool([BUSY] * storage.REFRESH_TRIES)
    with pytest.raises(libvirt.libvirtError, match="asynchronous jobs"):
        storage.refresh(pool, pause=lambda _s: None)
    assert pool.calls == storage.REFRESH_TRIES
