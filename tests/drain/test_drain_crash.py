"""The drain's process SIGKILLed at random moments, each followed by a resume (see
:mod:`tests.drain.scenario`): every guest on exactly one host, no claim, lock or lease left, no
limit ever exceeded (from the records' status histories), the report matching the cluster. CI
runs a few kills; ``python tests/drain/soak.py 20`` runs twenty."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.drain import scenario

pytestmark = pytest.mark.crash


def test_drain_killed_at_random_moments_then_resumed(tmp_path: Path) -> None:
    seed = int(os.environ.get("FERRY_DRAIN_SEED", time.time()))
    kills: list[scenario.Kill] = []
    d = scenario.run(tmp_path, kills=3, seed=seed, report=kills.append)
    assert kills and kills[0].killed, (seed, kills)
    assert sum(1 for g in d.guests if g.state == "completed") == 47, seed
