"""BACKUP / SHOW BACKUPS / RESTORE through pgkeep against real S3 (SeaweedFS), GCS
(fake-gcs-server) and Azure (Azurite) servers, external connections to them, and a sweep for
every secret the test URIs carry through pgkeep's log, its job rows and its SHOW output."""
from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support.datasets import load_chinook, row_hashes
from tests.support.objstores import azurite, fake_gcs, seaweedfs
from tests.support.pgkeep import PgkeepProcess

SERVERS = {"s3": seaweedfs, "gcs": fake_gcs, "azure": azurite}


@pytest.fixture(scope="module")
def servers():
    return {name: start() for name, start in SERVERS.items()}


@pytest.fixture(scope="module")
def cloud_pgkeep(workdir, pg18, servers):
    env = {}
    for server in servers.values():
        env.update(server.env())
    proc = PgkeepProcess(workdir / "cloud", pg18.dsn(), env=env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def chinook(pg18):
    if "chinook" not in pg18.psql("SELECT datname FROM pg_database").split():
        load_chinook(pg18, "chinook")
    return "chinook"


def run(proc, sql):
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


@pytest.mark.parametrize("store", list(SERVERS))
def test_round_trip_per_store(cloud_pgkeep, pg18, chinook, servers, store):
    server = servers[store]
    uri = server.collection_uri("backups/chinook")
    row = run(cloud_pgkeep, f"BACKUP DATABASE chinook INTO '{uri}'")[0]
    assert row[1] == "succeeded" and row[3] > 0
    paths = run(cloud_pgkeep, f"SHOW BACKUPS IN '{uri}'")
    assert len(paths) == 1
    checked = run(cloud_pgkeep, f"SHOW BACKUP FROM LATEST IN '{uri}' WITH check_files")
    assert any(r[2] == "artist" and r[-1] > 0 for r in checked)
    target = f"chinook_{store}"
    pg18.psql(f"DROP DATABASE IF EXISTS {target}")
    run(cloud_pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{uri}' WITH new_db_name = '{target}'")
    assert row_hashes(pg18, target) == row_hashes(pg18, "chinook")


def test_external_connection_to_s3_is_redacted(cloud_pgkeep, pg18, chinook, servers):
    server = servers["s3"]
    uri = server.collection_uri("via-connection")
    run(cloud_pgkeep, f"CREATE EXTERNAL CONNECTION cloud_s3 AS '{uri}'")
    try:
        shown = run(cloud_pgkeep, "SHOW EXTERNAL CONNECTION cloud_s3")[0][1]
        assert "redacted" in shown and not any(s in shown for s in server.secrets)
        created = run(cloud_pgkeep, "SHOW CREATE EXTERNAL CONNECTION cloud_s3")[0][1]
        assert uri in created  # unredacted for its owner
        run(cloud_pgkeep, "BACKUP DATABASE chinook INTO 'external://cloud_s3/nested'")
        assert len(run(cloud_pgkeep, "SHOW BACKUPS IN 'external://cloud_s3/nested'")) == 1
        checked = run(cloud_pgkeep, "CHECK EXTERNAL CONNECTION 'external://cloud_s3' WITH transfer = '1MiB'")
        assert checked[0][2] is True
    finally:
        run(cloud_pgkeep, "DROP EXTERNAL CONNECTION cloud_s3")


def test_no_secret_in_logs_job_rows_or_show_output(cloud_pgkeep, servers, chinook):
    # a failing backup puts its URI through the error path too
    good = servers["s3"].collection_uri("denied")
    bad = good.replace(f"s3://{urlsplit(good).netloc}/", "s3://pgkeep-no-such-bucket/")
    with pytest.raises(psycopg.Error) as e:
        run(cloud_pgkeep, f"BACKUP DATABASE chinook INTO '{bad}'")
    visible = [str(e.value), cloud_pgkeep.log(), repr(run(cloud_pgkeep, "SELECT * FROM pgkeep.jobs")),
               repr(run(cloud_pgkeep, "SHOW JOBS")), repr(run(cloud_pgkeep, "SHOW EXTERNAL CONNECTIONS"))]
    secrets = [s for server in servers.values() for s in server.secrets if len(s) >= 8]
    assert secrets
    for secret in secrets:
        assert not any(secret in text for text in visible), f"a secret leaked: {secret[:4]}..."
