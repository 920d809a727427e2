"""External connections through pgkeep: definition, validation, use in BACKUP/RESTORE, redaction
and privileges. (Cloud-store round trips are in the store tests.)"""
from __future__ import annotations

import psycopg
import pytest

from tests.support.datasets import load_chinook, row_hashes


def run(pgkeep, sql, user="postgres", password=None):
    with psycopg.connect(pgkeep.dsn(user=user, password=password), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def chinook(pg18):
    if "chinook" not in pg18.psql("SELECT datname FROM pg_database").split():
        load_chinook(pg18, "chinook")
    return "chinook"


def test_lifecycle_and_backup_through_a_connection(pgkeep, pg18, chinook):
    run(pgkeep, "CREATE EXTERNAL CONNECTION ext_local AS 'nodelocal://self/ext-conn-test'")
    assert run(pgkeep, "SHOW EXTERNAL CONNECTIONS") == [
        ("ext_local", "nodelocal://self/ext-conn-test", "STORAGE")]
    assert run(pgkeep, "SHOW EXTERNAL CONNECTION ext_local")[0][0] == "ext_local"
    with pytest.raises(psycopg.errors.DuplicateObject):
        run(pgkeep, "CREATE EXTERNAL CONNECTION ext_local AS 'nodelocal://self/other'")
    run(pgkeep, "CREATE EXTERNAL CONNECTION IF NOT EXISTS ext_local AS 'nodelocal://self/other'")
    # the probe object of the validation is gone again
    root = pgkeep.workdir / "data" / "external" / "ext-conn-test"
    assert root.is_dir() and list(root.iterdir()) == []
    run(pgkeep, "BACKUP DATABASE chinook INTO 'external://ext_local'")
    run(pgkeep, "BACKUP DATABASE chinook INTO 'external://ext_local/nested/dir'")
    assert len(run(pgkeep, "SHOW BACKUPS IN 'external://ext_local'")) == 1
    assert len(run(pgkeep, "SHOW BACKUPS IN 'external://ext_local/nested/dir'")) == 1
    run(pgkeep, "RESTORE DATABASE chinook FROM LATEST IN 'external://ext_local/nested/dir' "
                "WITH new_db_name = 'chinook_ext'")
    assert row_hashes(pg18, "chinook_ext") == row_hashes(pg18, "chinook")
    run(pgkeep, "ALTER EXTERNAL CONNECTION ext_local AS 'nodelocal://self/ext-conn-moved'")
    assert run(pgkeep, "SHOW BACKUPS IN 'external://ext_local'") == []
    assert run(pgkeep, "SHOW CREATE EXTERNAL CONNECTION ext_local") == [
        ("ext_local", "CREATE EXTERNAL CONNECTION 'ext_local' AS 'nodelocal://self/ext-conn-moved'")]
    run(pgkeep, "DROP EXTERNAL CONNECTION ext_local")
    with pytest.raises(psycopg.errors.UndefinedObject):
        run(pgkeep, "DROP EXTERNAL CONNECTION ext_local")
    with pytest.raises(psycopg.errors.UndefinedObject):
        run(pgkeep, "SHOW BACKUPS IN 'external://ext_local'")


def test_invalid_uris_and_kinds(pgkeep):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run(pgkeep, "CREATE EXTERNAL CONNECTION bad AS 'nodelocal://host.example/x'")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run(pgkeep, "CREATE EXTERNAL CONNECTION bad AS 'http://example.com/x'")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        run(pgkeep, "CREATE EXTERNAL CONNECTION kms AS 'aws:///arn:aws:kms:us-east-1:1:key/k?AUTH=implicit'")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run(pgkeep, "SHOW BACKUPS IN 'external://x?AWS_SECRET_ACCESS_KEY=s'")
    assert all(r[0] != "bad" for r in run(pgkeep, "SHOW EXTERNAL CONNECTIONS"))


def test_check_external_connection(pgkeep):
    rows = run(pgkeep, "CHECK EXTERNAL CONNECTION 'nodelocal://self/checking' "
                       "WITH transfer = '2MiB', concurrently = 2, time = '20s'")
    node, locality, ok, error, transferred, read_speed, write_speed, can_delete = rows[0]
    assert ok and error is None and can_delete
    assert transferred == "4 MiB" and read_speed.endswith("/s") and write_speed.endswith("/s")
    assert list((pgkeep.workdir / "data" / "external" / "checking").iterdir()) == []


def test_privileges(pgkeep):
    run(pgkeep, "CREATE EXTERNAL CONNECTION IF NOT EXISTS ext_priv AS 'nodelocal://self/ext-priv'")
    try:
        with pytest.raises(psycopg.errors.UndefinedObject):  # as an unknown one (issue 12)
            run(pgkeep, "SHOW CREATE EXTERNAL CONNECTION ext_priv", user="md5user", password="md5 secret")
        assert run(pgkeep, "SHOW CREATE ALL EXTERNAL CONNECTIONS", user="md5user", password="md5 secret") == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run(pgkeep, "CREATE EXTERNAL CONNECTION mine AS 'nodelocal://self/mine'",
                user="md5user", password="md5 secret")
        with pytest.raises(psycopg.errors.UndefinedObject):  # unseen: as an unknown one (issue 17)
            run(pgkeep, "DROP EXTERNAL CONNECTION ext_priv", user="md5user", password="md5 secret")
    finally:
        run(pgkeep, "DROP EXTERNAL CONNECTION ext_priv")
