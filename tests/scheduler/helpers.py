"""Simulated clusters with NUMA hosts and pinned guests, and the checks every scheduler test
makes of them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferry import Orchestrator
from ferry.config import SchedulerSettings, Settings
from ferry.drivers.simulated import SimulatedDriver
from tests.conftest import fast_settings


def host(
    name: str,
    *,
    cells: int | list[dict[str, Any]] | None = None,
    vcpus: int = 16,
    memory_mb: int = 65_536,
    group: str | None = None,
    version: int = 9,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "hypervisor_type": "qemu",
        "hypervisor_version": version,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
        "disk_gb": 1000,
        "bandwidth_mbps": 1000,
        "storage_group": "shared",
        **extra,
    }
    if cells is not None:
        out["numa_cells"] = cells
    if group is not None:
        out["labels"] = {"group": group}
    return out


def vm(
    name: str, on: str, *, vcpus: int = 2, memory_mb: int = 1024, pinned: bool = True, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "name": name,
        "host": on,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
        "disk_gb": 0,
        "dirty_rate_mbps": 10,
        **extra,
    }
    if pinned:
        out["cpu_policy"] = "dedicated"
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_cluster(
    path: Path,
    hosts: list[dict[str, Any]],
    instances: list[dict[str, Any]],
    faults: Sequence[dict[str, Any]] = (),
) -> Path:
    lines = [f'name = "{path.stem}"']
    for kind, items in (("hosts", hosts), ("instances", instances), ("faults", list(faults))):
        for item in items:
            lines.append(f"\n[[{kind}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def settings_for(cluster: Path, **scheduler: Any) -> Settings:
    base = fast_settings()
    return dataclasses.replace(
        base,
        simulated=dataclasses.replace(base.simulated, cluster=str(cluster)),
        scheduler=SchedulerSettings(**scheduler),
    )


def orchestrator(url: str, cluster: Path, **scheduler: Any) -> tuple[Orchestrator, SimulatedDriver]:
    orch = Orchestrator(url, settings=settings_for(cluster, **scheduler))
    sim = orch.drivers.drivers[0]
    assert isinstance(sim, SimulatedDriver)
    sim.ensure_seeded()
    return orch, sim


def room_for_ten(directory: Path, *, pinned: bool = True) -> Path:
    """20 guests of 2 vCPUs / 1 GiB on ``src``; ``dst-1`` and ``dst-2`` have room for 10 of
    them together.

    Pinned: dst-1 has 2 NUMA cells of 5 pCPUs (two guests per cell, 4 in all), dst-2 3 cells of
    5 (6 in all): 10 fit although the hosts' 25 vCPUs would take 12 unpinned guests, and the
    pCPU left in each cell can never host half a guest. Unpinned: RAM for 4 and 6 guests.
    """
    cells_src = [{"cpus": list(range(k * 10, k * 10 + 10)), "memory_mb": 16_384} for k in range(4)]
    if pinned:
        hosts = [
            host("src", cells=cells_src, vcpus=40),
            host("dst-1", cells=2, vcpus=10, memory_mb=16_384),
            host("dst-2", cells=3, vcpus=15, memory_mb=24_576),
        ]
    else:
        hosts = [
            host("src", vcpus=40),
            host("dst-1", vcpus=64, memory_mb=4 * 1024 + 512),
            host("dst-2", vcpus=64, memory_mb=6 * 1024 + 512),
        ]
    guests = [vm(f"vm-{i:02d}", "src", pinned=pinned) for i in range(20)]
    return write_cluster(
        directory / f"room10-{'pinned' if pinned else 'plain'}.toml", hosts, guests
    )


def assert_no_overcommit(sim: SimulatedDriver) -> None:
    """Every host's guests fit its capacity; pinned guests sit on distinct pCPUs of one cell
    each, with the cell's memory (the driver's truth, not ferry's accounting)."""
    for name in sim.hosts():
        info = sim.host_info(name)
        assert info.vcpus_used <= info.vcpus, name
        assert info.memory_mb_used <= info.memory_mb, name
        pinnings = sim.pinnings(name)
        seen: set[int] = set()
        for guest, p in pinnings.items():
            assert not (p.pcpus & seen), f"{guest} shares pCPUs on {name}"
            seen |= p.pcpus
        cells = {c["id"]: c for c in sim_cells(sim, name)}
        per_cell: dict[int, int] = {}
        for p in pinnings.values():
            assert p.pcpus <= set(cells[p.cell]["cpus"]), "a pinning spans NUMA cells"
            per_cell[p.cell] = per_cell.get(p.cell, 0) + p.memory_mb
        for cell, used in per_cell.items():
            assert used <= cells[cell]["memory_mb"]


def sim_cells(sim: SimulatedDriver, host_name: str) -> list[dict[str, Any]]:
    state = sim.host_info(host_name).numa
    return state.to_dict()["topology"]["cells"] if state is not None else []


def assert_cache_matches_drivers(orch: Orchestrator) -> None:
    """Nothing claimed or held, and ferry's accounting equals what the drivers report: a fresh
    refresh changes no host's usage or pinned pCPUs."""
    assert orch.claims.list() == []
    before = {s.host.name: _usage(s) for s in orch.claims.host_states()}
    orch.refresh_host_states()
    after = {s.host.name: _usage(s) for s in orch.claims.host_states()}
    assert before == after


def _usage(state: Any) -> tuple[Any, ...]:
    h = state.host
    cells = tuple((c.cell, tuple(sorted(c.pinned)), c.used_mb, c.claimed_mb) for c in state.cells)
    return (h.vcpus_used, h.memory_mb_used, h.disk_gb_used, state.claimed, cells)


def text_table(output: str, title: str | None = None) -> list[dict[str, str]]:
    """The rows of a table the CLI printed with rich (``┃`` between header cells, ``│`` between
    body cells; a row whose first cell is empty continues the row above it). With ``title``,
    the table printed under that title line."""
    lines = output.splitlines()
    if title is not None:
        starts = [i for i, line in enumerate(lines) if line.strip() == title]
        assert starts, f"no table titled {title!r} in:\n{output}"
        lines = lines[starts[0] + 1 :]
    head = next(i for i, line in enumerate(lines) if "┃" in line)
    columns = [c.strip() for c in lines[head].split("┃")]
    rows: list[dict[str, str]] = []
    for line in lines[head + 2 :]:  # past the header's rule
        if "│" not in line:
            break
        cells = [c.strip() for c in line.split("│")]
        assert len(cells) == len(columns), line
        if cells[0]:
            rows.append(dict(zip(columns, cells, strict=True)))
        else:
            for col, cell in zip(columns, cells, strict=True):
                if cell:
                    rows[-1][col] += "\n" + cell
    return rows
