"""A cluster description (:class:`.cluster.ClusterSpec`) written into the database: the meta row
that names it, the hosts, the instances with what they have on their hosts, and the faults."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .cluster import DEMO_CLUSTER, ClusterSpec
from .faults import fault_values
from .rows import LIVE, Row
from .tables import ARTIFACTS, CLUSTER_TABLES, FAULTS, HOSTS, INSTANCES, META, insert_ignore

#: the driver's logger (its records keep the name they had before the driver was split)
log = logging.getLogger("ferry.drivers.simulated.driver")


def meta(conn: sa.Connection) -> Row | None:
    """The meta row (None: the database holds no cluster yet)."""
    return conn.execute(sa.select(META)).first()


def claim(conn: sa.Connection, spec: ClusterSpec) -> bool:
    """Write the meta row of ``spec`` unless another process did already (its primary key
    picks the winner); returns whether this call won (and is to :func:`seed`)."""
    return insert_ignore(conn, META, [meta_values(spec)]) == 1


def replace(conn: sa.Connection, spec: ClusterSpec) -> None:
    """Wipe every table of the cluster and write the meta row of ``spec`` (to :func:`seed`)."""
    for table in CLUSTER_TABLES:
        conn.execute(table.delete())
    conn.execute(META.insert().values(**meta_values(spec)))


def info(conn: sa.Connection) -> dict[str, Any]:
    """``name``, ``file``, ``builtin``, ``seeded_at`` of the cluster the database holds."""
    row = conn.execute(sa.select(META)).one()
    return {
        "name": row.cluster_name,
        "file": row.cluster_file,
        "builtin": bool(row.builtin),
        "seeded_at": row.seeded_at,
    }


def meta_values(spec: ClusterSpec) -> dict[str, Any]:
    builtin = Path(spec.path) == DEMO_CLUSTER.resolve()
    return {
        "id": 1,
        "cluster_name": spec.name,
        "cluster_file": spec.path,
        "builtin": builtin,
        "seeded_at": time.time(),
    }


def warn_if_other_cluster(row: Row, cluster_file: Path | None) -> None:
    """Log that ``cluster_file`` is ignored when the database holds another cluster."""
    if cluster_file is not None and row.cluster_file != str(cluster_file):
        log.warning(
            "the database already holds the simulated cluster %r seeded from %s; ignoring %s "
            "(reset the simulated cluster to load it)",
            row.cluster_name,
            row.cluster_file,
            cluster_file,
        )


def seed(conn: sa.Connection, spec: ClusterSpec, now: float) -> None:
    """Insert the hosts, instances (with their live artifacts) and faults of ``spec``."""
    conn.execute(
        HOSTS.insert(),
        [
            {
                "name": h.name,
                "hypervisor_type": h.hypervisor_type,
                "hypervisor_version": h.hypervisor_version,
                "vcpus": h.vcpus,
                "memory_mb": h.memory_mb,
                "disk_gb": h.disk_gb,
                "bandwidth_mbps": h.bandwidth_mbps,
                "up": h.up,
                "enabled": h.enabled,
                "storage_group": h.storage_group,
                "labels": dict(h.labels),
                "numa_cells": h.numa_cells,
            }
            for h in spec.hosts
        ],
    )
    groups = {h.name: h.storage_group for h in spec.hosts}
    if spec.instances:
        conn.execute(INSTANCES.insert(), [dataclasses.asdict(i) for i in spec.instances])
        artifacts = []
        for i in spec.instances:
            states = {"guest": "persistent"}
            if not groups[i.host]:
                states["instance_dir"] = "present"
            states.update({f"volume:{v['id']}": "connected" for v in i.volumes})
            states.update({f"vif:{v['id']}": "plugged" for v in i.vifs})
            artifacts += [
                {
                    "host": i.host,
                    "instance_uuid": i.uuid,
                    "name": name,
                    "origin": LIVE,
                    "state": state,
                    "created_at": now,
                }
                for name, state in states.items()
            ]
        conn.execute(ARTIFACTS.insert(), artifacts)
    if spec.faults:
        conn.execute(
            FAULTS.insert(),
            [fault_values(f.host, f.phase, f.times, f.at, f.message) for f in spec.faults],
        )
