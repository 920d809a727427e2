"""The reliability suite: each test reproduces a defect that lost data, restored wrong data
without a word or let someone in, through a real pgkeep, and names the engine's fault points
(engine/pausepoints.py) it drives. Session fixtures (clusters, the shared pgkeep) live in
tests/conftest.py."""
from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def pg18_admin(pg18):
    """A direct superuser connection to the upstream PostgreSQL 18 (not through pgkeep)."""
    with psycopg.connect(pg18.dsn(), autocommit=True, connect_timeout=10) as conn:
        yield conn
