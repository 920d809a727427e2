"""The scheduler's time arithmetic (engine/scheduler.py) as data: tests/engine/testdata/cron.txt
(cron slots, the default full cadence, the slot a due schedule runs for, refused expressions).
Its passes over the catalog are tested through pgkeep: tests/e2e/test_schedules.py and
tests/reliability/test_schedules_exactly_once.py."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.errors import EngineError
from engine.scheduler import check_cron, full_cadence, next_after, run_slot
from catalog.schedules import Schedule
from tests.sql.sql_datadriven import read_blocks

CRON = Path(__file__).parent / "testdata" / "cron.txt"
UTC = dt.timezone.utc


def render(directive: str, expr: str) -> str:
    word, *args = directive.split()
    try:
        if word == "next":
            t, out = dt.datetime.fromisoformat(args[0]), []
            for _ in range(int(args[1])):
                t = next_after(expr, t)
                out.append(t.isoformat())
            return "\n".join(out)
        if word == "cadence":
            return full_cadence(expr, dt.datetime.fromisoformat(args[0])) or "always"
        if word == "slot":
            s = Schedule(1, "l", "o", "d", dt.datetime.now(UTC), expr, dt.datetime.fromisoformat(args[0]),
                         None, "FULL", "BACKUP")
            return run_slot(s, dt.datetime.fromisoformat(args[1])).isoformat()
        if word == "check":
            return check_cron(expr)
    except EngineError as e:
        return f"error: {e.sqlstate}: {e.message}"
    raise AssertionError(f"unknown directive {word}")


BLOCKS = read_blocks(CRON)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_cron(block):
    assert render(block.directive, block.sql) == block.expected
