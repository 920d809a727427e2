"""`pgkeep parse [--json]`."""
from __future__ import annotations

import io
import json

from proxy.sql.cli import main

SCRIPT = """BACKUP INTO 's3://b?AWS_SECRET_ACCESS_KEY=sk' WITH encryption_passphrase = 'pw';
SELECT 1;
SHOW JOBS bogus;
"""


def run(argv, text):
    out = io.StringIO()
    code = main(argv, io.StringIO(text), out)
    return code, out.getvalue()


def test_json_output():
    code, out = run(["--json"], SCRIPT)
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in lines] == ["BACKUP", "forward", "error"]
    assert lines[0]["ast"]["node"] == "Backup"
    assert lines[0]["normalized"].startswith("BACKUP INTO 's3://b?AWS_SECRET_ACCESS_KEY=sk'")
    assert "sk'" not in lines[0]["redacted"] and "'*****'" in lines[0]["redacted"]
    assert lines[2]["error"] == {**lines[2]["error"], "sqlstate": "42601", "position": 11}


def test_text_output_and_exit_codes():
    code, out = run(["parse"], "SHOW CLUSTER SETTING bulkio.backup.file_size; SELECT 1")
    assert code == 0
    assert "kind: SHOW CLUSTER SETTING" in out and "kind: forward" in out
    assert "normalized: SHOW CLUSTER SETTING bulkio.backup.file_size" in out
    assert run(["--bogus"], "")[0] == 2
