"""Tests against three real libvirt hosts (see conftest.py and tests/infra/libvirt_hosts.py)."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

REQUIRE_ENV = "FERRY_REQUIRE_LIBVIRT"


def unavailable(reason: str) -> None:
    """Skip (the default) or, with FERRY_REQUIRE_LIBVIRT=1 as CI sets it, fail."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"real libvirt tests required ({REQUIRE_ENV}=1) but: {reason}", pytrace=False)
    pytest.skip(f"real libvirt hosts unavailable: {reason}", allow_module_level=True)


def import_libvirt() -> ModuleType:
    """``libvirt = import_libvirt()`` at the top of a test module, instead of importorskip:
    skips the module without libvirt-python, fails it under FERRY_REQUIRE_LIBVIRT=1."""
    try:
        import libvirt
    except ImportError as e:
        unavailable(
            f"libvirt-python is not installed ({e}; pip install 'ferry[libvirt]', which builds "
            "against libvirt-dev with pkg-config and gcc)"
        )
        raise  # not reached: unavailable() raises
    return libvirt
