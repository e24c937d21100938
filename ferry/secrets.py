"""Where a secret is read from: an environment variable (``password_env``) or a file
(``password_file``, its first line), never the configuration itself.

One reader for every secret ferry needs (the job board's, a libvirt host's SASL password, a XenAPI
pool's): it is read when needed, never stored by ferry, and no error message carries the value --
only where ferry looked. Relative file paths are resolved by whoever parses the configuration
(against the config file's directory), before a :class:`SecretRef` is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferry.errors import ConfigError


@dataclass(frozen=True)
class SecretRef:
    """The environment variable ``env`` or the file ``file`` holding a secret (at most one set).

    ``name`` is the option prefix shown in messages: ``password`` -> ``password_env`` /
    ``password_file``."""

    env: str | None = None
    file: str | None = None
    name: str = "password"

    @property
    def given(self) -> bool:
        return self.env is not None or self.file is not None

    def validate(self, where: str, *, required: bool = False) -> None:
        """Raise :class:`ConfigError` when both sources are set, or (``required``: exactly one
        must be) neither."""
        env_key, file_key = f"{self.name}_env", f"{self.name}_file"
        both = self.env is not None and self.file is not None
        if both and not required:
            raise ConfigError(f"{where}: give {env_key} or {file_key}, not both")
        if required and (both or not self.given):
            raise ConfigError(
                f"{where}: set exactly one of {env_key} (an environment variable) or "
                f"{file_key} (a file holding the {self.name})"
            )

    def describe(self) -> str:
        """Where the secret is read from, for messages (never the secret)."""
        if self.env is not None:
            return f"environment variable {self.env} ({self.name}_env)"
        if self.file is not None:
            return f"file {self.file} ({self.name}_file)"
        return f"nowhere (no {self.name}_env or {self.name}_file)"

    def read(self, where: str) -> str | None:
        """The secret, read now: the variable's value, or the file's first line (stripped).
        None when no source is set.

        :raises ConfigError: the variable is unset or empty; the file is missing, unreadable,
            not UTF-8 or its first line is empty. The message starts with ``where`` and names
            where the secret should be, never its value.
        """
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(
                    f"{where}: the environment variable {self.env} named by {self.name}_env "
                    "is not set or empty"
                )
            return value
        if self.file is None:
            return None
        key = f"{self.name}_file"
        path = Path(self.file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: {key} {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{where}: {key} {path} cannot be read: {why}") from None
        lines = text.splitlines()
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"{where}: {key} {path} is empty")
        return value
