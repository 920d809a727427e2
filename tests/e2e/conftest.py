"""Fixtures shared by the end-to-end tests (the session fixtures live in tests/conftest.py)."""
from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def pg18_admin(pg18):
    """A direct superuser connection to the upstream PostgreSQL 18 (not through pgkeep)."""
    with psycopg.connect(pg18.dsn(), autocommit=True, connect_timeout=10) as conn:
        yield conn
