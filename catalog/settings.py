"""pgkeep's cluster settings: their definitions, parsing and display, and storage in the catalog.

Only values set with SET CLUSTER SETTING are stored (pgkeep.cluster_settings); every read goes to
the catalog, so all pgkeep processes in front of one database see the same value at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import InvalidSettingValue, UnknownSetting

__all__ = ["Setting", "SETTINGS", "lookup", "parse_value", "format_value", "SettingsStore"]

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _parse_bytes(text: str) -> int:
    s = text.strip().lower().replace(" ", "")
    i = len(s)
    while i and not s[i - 1].isdigit():
        i -= 1
    number, unit = s[:i], s[i:]
    try:
        value = float(number) * _UNITS[unit or "b"]
    except (ValueError, KeyError):
        raise InvalidSettingValue(f"invalid byte size {text!r}",
                                  hint="use a size such as '64 MiB', '1GiB' or a number of bytes") from None
    if value != int(value) or value < 0:
        raise InvalidSettingValue(f"invalid byte size {text!r}")
    return int(value)


def _format_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Setting:
    name: str
    type_code: str           # CockroachDB's setting_type letters: z byte size, i int, b bool, s string
    default: Any
    description: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str]
    minimum: int | None = None


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidSettingValue(f"invalid integer {text!r}") from None


def _parse_seconds(text: str) -> float:
    """A duration: '30s', '500ms', '1m', '1h' or a number of seconds."""
    t = text.strip().lower()
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("", 1.0)):
        if t.endswith(unit) and t[:len(t) - len(unit)].strip():
            try:
                return float(t[:len(t) - len(unit)]) * scale
            except ValueError:
                break
    raise InvalidSettingValue(f"invalid duration {text!r}", hint="e.g. '1m', '30s' or '500ms'")


def _format_seconds(v: float) -> str:
    return f"{v * 1000:g}ms" if v < 1 else f"{v:g}s"


def _parse_instant(text: str) -> str:
    import datetime as dt
    t = text.strip()
    if t:
        try:
            parsed = dt.datetime.fromisoformat(t)
        except ValueError:
            raise InvalidSettingValue(f"invalid timestamp {text!r}",
                                      hint="e.g. '2026-01-01 00:00:00+00', or '' for the real clock") from None
        if parsed.tzinfo is None:
            raise InvalidSettingValue(f"timestamp {text!r} needs a time zone")
    return t


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("bulkio.backup.file_size", "z", 128 << 20,
            "target size for individual data files produced during BACKUP",
            _parse_bytes, _format_bytes, minimum=1 << 20),
    Setting("pgkeep.backup.chunk_size", "z", 8 << 20,
            "heap bytes of a table read as one chunk during BACKUP: larger tables are split so "
            "several connections read them at once", _parse_bytes, _format_bytes, minimum=8 << 10),
    Setting("pgkeep.backup.parallelism", "i", 3,
            "connections that read tables in parallel during BACKUP (one snapshot shared by all)",
            _parse_int, str, minimum=1),
    Setting("pgkeep.restore.parallelism", "i", 3,
            "connections that load tables and build indexes in parallel during a database RESTORE",
            _parse_int, str, minimum=1),
    Setting("pgkeep.backup.compression_level", "i", 1,
            "zstd level of backup files (1 fastest .. 19 smallest)", _parse_int, str, minimum=1),
    Setting("jobs.debug.pausepoints", "s", "",
            "comma-separated engine points at which jobs pause, for tests and debugging "
            "(engine/pausepoints.py lists them)", str.strip, str),
    Setting("jobs.scheduler.pace", "d", 60.0,
            "how often each pgkeep process looks for due schedules", _parse_seconds, _format_seconds),
    Setting("pgkeep.scheduler.debug_now", "s", "",
            "tests and debugging: the time the scheduler sees (a timestamptz); '' is the real clock",
            _parse_instant, str),
)}


def lookup(name: str) -> Setting:
    setting = SETTINGS.get(name.lower())
    if setting is None:
        raise UnknownSetting(f"unknown cluster setting {name!r}",
                             hint="SHOW CLUSTER SETTINGS lists pgkeep's settings")
    return setting


def parse_value(setting: Setting, text: str) -> Any:
    value = setting.parse(text)
    if setting.minimum is not None and value < setting.minimum:
        raise InvalidSettingValue(f"{setting.name} must be at least {setting.format(setting.minimum)}")
    return value


def format_value(setting: Setting, value: Any) -> str:
    return setting.format(value)


class SettingsStore:
    """Reads and writes setting values in the catalog (an asyncpg pool)."""

    def __init__(self, pool) -> None:
        self._pool = pool

    async def get(self, name: str) -> Any:
        setting = lookup(name)
        raw = await self._pool.fetchval("SELECT value FROM pgkeep.cluster_settings WHERE name = $1",
                                        setting.name)
        return setting.default if raw is None else setting.parse(raw)

    async def all(self) -> list[tuple[Setting, Any, bool]]:
        """(setting, value, is_default) for every setting, by name."""
        rows = dict(await self._pool.fetch("SELECT name, value FROM pgkeep.cluster_settings"))
        out = []
        for name in sorted(SETTINGS):
            s = SETTINGS[name]
            out.append((s, s.parse(rows[name]) if name in rows else s.default, name not in rows))
        return out

    async def set(self, name: str, text: str | None) -> None:
        """Store a value given as text; None resets to the default."""
        setting = lookup(name)
        if text is None:
            await self._pool.execute("DELETE FROM pgkeep.cluster_settings WHERE name = $1", setting.name)
            return
        value = parse_value(setting, text)
        await self._pool.execute(
            """INSERT INTO pgkeep.cluster_settings(name, value) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()""",
            setting.name, setting.format(value))
