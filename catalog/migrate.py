"""Versioned migrations of pgkeep's catalog schema.

Each file `migrations/NNNN_name.sql` is applied once, in order, inside one transaction holding an
advisory lock, so several pgkeep processes starting together migrate exactly once.
"""
from __future__ import annotations

from importlib import resources

__all__ = ["migrate", "SCHEMA"]

SCHEMA = "pgkeep"
_LOCK_KEY = 0x7067_6B65_6570  # "pgkeep"


def _migrations() -> list[tuple[int, str, str]]:
    files = []
    for entry in resources.files("catalog.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            files.append((int(name[:4]), name, entry.read_text()))
    return sorted(files)


async def migrate(conn) -> list[str]:
    """Apply pending migrations on an asyncpg connection; returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
            version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r[0] for r in await conn.fetch(f"SELECT version FROM {SCHEMA}.schema_migrations")}
        for version, name, text in _migrations():
            if version in done:
                continue
            await conn.execute(text)
            await conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations(version, name) VALUES ($1, $2)",
                               version, name)
            applied.append(name)
    return applied
