"""TOML configuration -> typed, validated settings. Nothing reads configuration at import time.

Every section is optional. The file's shape, each setting and its range are documented (and
tested) in docs/operations.md, "Configuration"; the sections are the dataclasses below:
``[database]``, ``[migration]`` and ``[libvirt]`` (both :class:`MigrationSettings`: Nova's
live-migration options, and the transport of :mod:`ferry.transport`; also per run on the CLI and
the API), ``[simulated]``,
``[runner]``, ``[scheduler]`` (with ``[scheduler.groups]``), ``[jobboard]``, ``[conductor]``,
``[limits]`` and ``[[hosts]]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.board_url import parse_board_url
from ferry.errors import ConfigError
from ferry.plugins import driver_names
from ferry.secrets import SecretRef
from ferry.transport import TRANSPORT_KEYS, transport_checks

CONFIG_ENV = "FERRY_CONFIG"
TIMEOUT_ACTIONS = ("abort", "force_complete")
#: the shortest wait between two polls of a transfer or a board (shorter only spins a CPU)
MIN_POLL_INTERVAL = 0.01


def _check(where: str, checks: list[tuple[bool, str]]) -> None:
    """Raise one ConfigError naming every check that failed."""
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")


@dataclass(frozen=True)
class MigrationSettings:
    """Per-migration policy. Names and defaults follow Nova's ``[libvirt]`` options, except
    ``live_migration_permit_post_copy``: true here, so a transfer that stops converging switches
    to post-copy (after the second pass, each pass must shrink what is left by 10 %)
    instead of running into the completion timeout. Post-copy's price: if the network fails
    during that phase the guest is lost on both sides; set it false to never take that risk."""

    max_attempts: int = 0
    live_migration_downtime: int = 500
    live_migration_downtime_steps: int = 10
    live_migration_downtime_delay: int = 75
    live_migration_completion_timeout: int = 800
    live_migration_timeout_action: str = "abort"
    live_migration_permit_post_copy: bool = True
    live_migration_permit_auto_converge: bool = False
    # ferry's additions (libvirt's auto-converge parameters; Nova has no option for them)
    live_migration_auto_converge_initial: int = 0
    live_migration_auto_converge_increment: int = 0
    live_migration_bandwidth: int = 0
    poll_interval: float = 0.5
    post_retries: int = 3
    post_retry_delay: float = 1.0
    # the transport, configured in [libvirt] (see ferry.transport)
    tls: bool = False
    parallel_connections: int = 0
    compression: str = "none"
    compression_level: int = 0
    migration_network: str | None = None

    @classmethod
    def from_store(cls, data: dict[str, Any]) -> MigrationSettings:
        """The settings a run was started with (keys this version does not know are ignored,
        so a run persisted by another version still resumes)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_overrides(self, overrides: dict[str, Any] | None) -> MigrationSettings:
        if not overrides:
            return self
        return _build(
            MigrationSettings, {**dataclasses.asdict(self), **overrides}, "migration overrides"
        )

    def validate(self, where: str) -> None:
        checks = [
            (0 <= self.max_attempts <= 1000, "max_attempts must be 0 .. 1000"),
            (
                100 <= self.live_migration_downtime <= 600_000,
                "live_migration_downtime must be 100 .. 600000 (ms)",
            ),
            (
                3 <= self.live_migration_downtime_steps <= 1000,
                "live_migration_downtime_steps must be 3 .. 1000",
            ),
            (
                3 <= self.live_migration_downtime_delay <= 86_400,
                "live_migration_downtime_delay must be 3 .. 86400 (s/GiB)",
            ),
            (
                0 <= self.live_migration_completion_timeout <= 86_400,
                "live_migration_completion_timeout must be 0 (never) .. 86400 (s/GiB)",
            ),
            (
                self.live_migration_timeout_action in TIMEOUT_ACTIONS,
                f"live_migration_timeout_action must be one of {', '.join(TIMEOUT_ACTIONS)}",
            ),
            (
                0 <= self.live_migration_auto_converge_initial <= 99,
                "live_migration_auto_converge_initial must be 0 (hypervisor default) .. 99 (%)",
            ),
            (
                0 <= self.live_migration_auto_converge_increment <= 99,
                "live_migration_auto_converge_increment must be 0 (hypervisor default) .. 99 (%)",
            ),
            (
                0 <= self.live_migration_bandwidth <= 1_000_000,
                "live_migration_bandwidth must be 0 (unlimited) .. 1000000 (MiB/s)",
            ),
            (
                MIN_POLL_INTERVAL <= self.poll_interval <= 60,
                f"poll_interval must be {MIN_POLL_INTERVAL} .. 60 (s)",
            ),
            (1 <= self.post_retries <= 100, "post_retries must be 1 .. 100"),
            (0 <= self.post_retry_delay <= 3600, "post_retry_delay must be 0 .. 3600 (s)"),
            *transport_checks(self),
        ]
        _check(where, checks)


@dataclass(frozen=True)
class SimulatedSettings:
    cluster: str | None = None
    speed: float = 1.0

    def validate(self, where: str) -> None:
        _check(where, [(0 <= self.speed <= 1e6, "speed must be 0 (stepped) .. 1000000")])


@dataclass(frozen=True)
class SchedulerSettings:
    """How destinations are chosen (see ``ferry.scheduler``): the weighers' strategy and
    multipliers, how old the cached host states may get before scheduling refreshes them from
    the drivers, and host aggregates by name (hosts also join one with a ``group``/``groups``
    label)."""

    weigher: str = "spread"
    ram_weight_multiplier: float = 1.0
    in_flight_weight_multiplier: float = 1.0
    host_state_ttl: float = 60.0
    groups: dict[str, list[str]] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        checks = [
            (self.weigher in ("spread", "pack"), "weigher must be one of spread, pack"),
            *(
                (0 <= getattr(self, name) <= 1000, f"{name} must be 0 .. 1000")
                for name in ("ram_weight_multiplier", "in_flight_weight_multiplier")
            ),
            (0 <= self.host_state_ttl <= 86_400, "host_state_ttl must be 0 .. 86400 (s)"),
        ]
        if not isinstance(self.groups, dict):
            checks.append((False, "groups must be a table of host lists"))
        else:
            for group, hosts in self.groups.items():
                checks.append(
                    (
                        bool(group) and "," not in group,
                        f"group name {group!r} must be non-empty, without ','",
                    )
                )
                checks.append(
                    (
                        isinstance(hosts, list) and all(isinstance(h, str) for h in hosts),
                        f"groups.{group} must be a list of host names",
                    )
                )
        _check(where, checks)


@dataclass(frozen=True)
class RunnerSettings:
    lease_seconds: float = 30.0

    def validate(self, where: str) -> None:
        _check(where, [(1 <= self.lease_seconds <= 3600, "lease_seconds must be 1 .. 3600 (s)")])


@dataclass(frozen=True)
class JobBoardSettings:
    """Where ``ferry submit`` posts jobs and conductors claim them (``url`` None: no job store).

    The password of a board that needs one is read from ``password_env`` or ``password_file``;
    it is never accepted in the file or in the URL there."""

    url: str | None = None
    namespace: str = "ferry"
    password_env: str | None = None
    password_file: str | None = None

    @property
    def secret(self) -> SecretRef:
        return SecretRef(self.password_env, self.password_file)

    def validate(self, where: str) -> None:
        if self.url is not None:
            try:
                parsed = parse_board_url(self.url)
            except ConfigError as exc:
                raise ConfigError(f"{where}: url: {exc}") from None
            if parsed.password is not None:
                raise ConfigError(
                    f"{where}: put no password in the url; use password_env or password_file"
                )
        if not self.namespace or not self.namespace.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{where}: namespace must be letters, digits, '-' or '_'")
        self.secret.validate(where)

    def password(self) -> str | None:
        """The board password from the environment variable or file named in the config."""
        return self.secret.read("[jobboard]")


@dataclass(frozen=True)
class ConductorSettings:
    """A conductor: ``max_jobs`` migrations at once; its board claims and database leases last
    ``lease_seconds`` and are renewed every third of it (a dead conductor's migrations are taken
    over once that much time has passed)."""

    name: str | None = None
    max_jobs: int = 4
    lease_seconds: float = 30.0
    poll_interval: float = 0.5

    def validate(self, where: str) -> None:
        bad_name = self.name is not None and (
            not self.name or any(c in self.name for c in ": \t\n")
        )
        _check(
            where,
            [
                (not bad_name, "name must be non-empty, without ':' or blanks"),
                (1 <= self.max_jobs <= 16, "max_jobs must be between 1 and 16"),
                (1 <= self.lease_seconds <= 3600, "lease_seconds must be 1 .. 3600 (s)"),
                (
                    MIN_POLL_INTERVAL <= self.poll_interval <= 60,
                    f"poll_interval must be {MIN_POLL_INTERVAL} .. 60 (s)",
                ),
            ],
        )


@dataclass(frozen=True)
class LimitSettings:
    """Migrations in flight at once (Nova's max_concurrent_live_migrations, KubeVirt's per-node
    and per-cluster limits): out of one source host, into one destination host, in total.
    0 = no limit. Enforced by the job store's conductors."""

    per_source: int = 1
    per_destination: int = 2
    total: int = 0

    def validate(self, where: str) -> None:
        _check(
            where,
            [
                (0 <= getattr(self, name) <= 10_000, f"{name} must be 0 (no limit) .. 10000")
                for name in ("per_source", "per_destination", "total")
            ],
        )


@dataclass(frozen=True)
class HostConfig:
    """A real hypervisor host. Driver-specific keys stay in ``options`` (never secrets themselves:
    ``password_env`` / ``password_file`` name where a secret is read from)."""

    name: str
    driver: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    simulated: SimulatedSettings = field(default_factory=SimulatedSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    hosts: tuple[HostConfig, ...] = ()
    jobboard: JobBoardSettings = field(default_factory=JobBoardSettings)
    conductor: ConductorSettings = field(default_factory=ConductorSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    path: str | None = None


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    """``cls`` from a table; one ConfigError naming every problem of the table."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems: list[str] = []
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            continue
        try:
            kwargs[name] = _coerce(value, fields[name].type, name)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def _coerce(value: Any, expected: Any, where: str) -> Any:
    text = str(expected)
    if text == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if text == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return value
    if text == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, not {value!r}")
        return float(value)
    if text in ("str", "str | None"):
        if value is None and text == "str | None":
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    return value


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (or ``$FERRY_CONFIG``; no file = defaults). Raises :class:`ConfigError`."""
    chosen = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    where = "configuration"
    if chosen:
        p = Path(chosen).expanduser()
        where = str(p)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
        except IsADirectoryError:
            raise ConfigError(f"config file {p} is a directory") from None
        except OSError as exc:
            raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
    settings = parse_settings(
        data, where, base_dir=Path(chosen).expanduser().parent if chosen else None
    )
    if chosen:
        settings = dataclasses.replace(settings, path=str(Path(chosen).expanduser()))
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    return settings


def parse_settings(
    data: dict[str, Any], where: str = "configuration", base_dir: Path | None = None
) -> Settings:
    """Settings from a parsed file. Raises one :class:`ConfigError` naming every problem."""
    problems: list[str] = []

    def section(cls: Any, name: str) -> Any:
        try:
            return _build(cls, _table(data, name, where), f"{where} [{name}]")
        except ConfigError as exc:
            problems.append(str(exc))
            return cls()

    known = {"database", "migration", "simulated", "runner", "hosts"}
    known |= {"jobboard", "conductor", "limits", "scheduler", "libvirt"}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        problems.append(f"{where}: unknown section(s) {', '.join(unknown)}")
    db = data.get("database", {})
    url = None
    if not isinstance(db, dict) or set(db) - {"url"}:
        problems.append(f"{where}: [database] takes only 'url'")
    else:
        url = db.get("url")
        if url is not None and not isinstance(url, str):
            problems.append(f"{where}: [database] url must be a string")
            url = None
    migration = _migration(data, where, problems)
    simulated = section(SimulatedSettings, "simulated")
    if simulated.cluster and base_dir is not None and not Path(simulated.cluster).is_absolute():
        simulated = dataclasses.replace(simulated, cluster=str(base_dir / simulated.cluster))
    runner = section(RunnerSettings, "runner")
    scheduler = section(SchedulerSettings, "scheduler")
    jobboard = section(JobBoardSettings, "jobboard")
    if jobboard.password_file and base_dir is not None:
        pw_file = Path(jobboard.password_file).expanduser()
        if not pw_file.is_absolute():
            jobboard = dataclasses.replace(jobboard, password_file=str(base_dir / pw_file))
    conductor = section(ConductorSettings, "conductor")
    limits = section(LimitSettings, "limits")
    hosts = _hosts(data.get("hosts", []), where, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(
        database_url=url,
        migration=migration,
        simulated=simulated,
        runner=runner,
        scheduler=scheduler,
        hosts=tuple(hosts),
        jobboard=jobboard,
        conductor=conductor,
        limits=limits,
    )


def _migration(data: dict[str, Any], where: str, problems: list[str]) -> MigrationSettings:
    """[migration] with [libvirt]'s transport keys (migration settings too: one table, one
    list of problems)."""
    libvirt = data.get("libvirt", {})
    if not isinstance(libvirt, dict) or set(libvirt) - set(TRANSPORT_KEYS):
        problems.append(f"{where}: [libvirt] takes only {', '.join(TRANSPORT_KEYS)}")
        libvirt = {}
    try:
        table = {**_table(data, "migration", where), **libvirt}
        return _build(
            MigrationSettings, table, f"{where} [migration{'/libvirt' if libvirt else ''}]"
        )
    except ConfigError as exc:
        problems.append(str(exc))
        return MigrationSettings()


def _hosts(raw_hosts: Any, where: str, problems: list[str]) -> list[HostConfig]:
    """The ``[[hosts]]`` entries; what is wrong with them goes to ``problems``."""
    if not isinstance(raw_hosts, list):
        problems.append(f"{where}: [[hosts]] must be an array of tables")
        return []
    hosts = []
    seen: set[str] = set()
    installed = driver_names() if raw_hosts else []
    for i, h in enumerate(raw_hosts):
        if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not h.get("name"):
            problems.append(f"{where}: hosts[{i}] needs a name")
            continue
        name = h["name"]
        driver = h.get("driver")
        if driver not in installed:
            problems.append(
                f"{where}: host {name!r}: driver must be one of {', '.join(installed)} "
                "(the installed drivers)"
            )
        if name in seen:
            problems.append(f"{where}: host {name!r} is listed twice")
        seen.add(name)
        if "password" in h:
            problems.append(
                f"{where}: host {name!r}: put no password in the config; "
                "use password_env or password_file"
            )
        options = {k: v for k, v in h.items() if k not in ("name", "driver")}
        hosts.append(HostConfig(name=name, driver=str(driver), options=options))
    return hosts


def _table(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return value
