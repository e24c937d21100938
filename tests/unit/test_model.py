import json

from ferry.model import (
    Attempt,
    Instance,
    MigrateData,
    Migration,
    MigrationStatus,
    StatusChange,
    TransferProgress,
)


def test_round_trip_through_json() -> None:
    m = Migration(
        id="m1",
        instance="u1",
        instance_name="web-1",
        source="a",
        destination="b",
        status="running",
        history=[StatusChange("accepted", 1.0)],
        attempts=[Attempt("c", "rejected", "full", 2.0)],
    )
    again = Migration.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    d = MigrateData("u1", "a", "b", block_migration=True, driver_data={"k": [1, 2]})
    assert MigrateData.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    i = Instance("u1", "web-1", "a", vifs=[{"id": "v", "network": "n"}])
    assert Instance.from_dict(i.to_dict()) == i


def test_unknown_keys_ignored_for_forward_compatibility() -> None:
    assert (
        MigrateData.from_dict(
            {"instance_uuid": "u", "source": "a", "destination": "b", "new": 1}
        ).source
        == "a"
    )


def test_statuses() -> None:
    assert {s.value for s in MigrationStatus} == {
        "accepted",
        "queued",
        "preparing",
        "running",
        "post-migrating",
        "completed",
        "failed",
        "cancelled",
        "error",
    }
    assert MigrationStatus.COMPLETED.terminal and not MigrationStatus.RUNNING.terminal


def test_progress_fraction() -> None:
    assert TransferProgress("running", memory_total_mb=100, memory_remaining_mb=25).fraction == 0.75
    assert TransferProgress("completed").fraction == 1.0
    assert TransferProgress("running", memory_total_mb=100, memory_remaining_mb=0).fraction == 0.99
