import itertools

from ferry.config import MigrationSettings
from ferry.policy import completion_timeout, data_gb, downtime_steps


def test_nova_downtime_steps_for_4_gib() -> None:
    steps = list(downtime_steps(MigrationSettings(), data_gb(4096)))
    assert len(steps) == 11
    assert steps[0] == (0.0, 50)
    assert steps[1] == (300.0, 95)  # 75 s/GiB * 4 GiB between steps
    assert steps[-1] == (3000.0, 500)
    assert all(a[1] < b[1] and a[0] < b[0] for a, b in itertools.pairwise(steps))


def test_small_guests_count_as_two_gib_and_block_adds_disk() -> None:
    assert data_gb(512) == 2.0
    assert data_gb(4096, disk_gb=10, block_migration=True) == 14.0
    assert data_gb(4096, disk_gb=10, block_migration=False) == 4.0


def test_completion_timeout() -> None:
    assert completion_timeout(MigrationSettings(), 4.0) == 3200.0
    assert completion_timeout(MigrationSettings(live_migration_completion_timeout=0), 4.0) is None
