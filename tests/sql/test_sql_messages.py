"""0A000 for a family pgkeep does not run yet names the statement in its own words (issue 13,
point 7): ALTER JOB ... OWNER TO as written, not the family's ALTER JOB; GRANT SYSTEM privileges,
GRANT RESTORE ON DATABASE, ... instead of a bare "GRANT". (The schedule statements, built by
issue 16, are tested in tests/e2e/test_schedules.py.)"""
from __future__ import annotations

import pytest

from proxy import errors, sql
from proxy.commands import command_for


@pytest.mark.parametrize("text, message", [
    ("ALTER JOB 1 OWNER TO u", "ALTER JOB ... OWNER TO is not supported by pgkeep yet"),
    ("ALTER BACKUP LATEST IN 's3://b?AWS_SECRET_ACCESS_KEY=leak' ADD NEW_KMS = 'aws:///k?REGION=r' "
     "WITH OLD_KMS = 'aws:///j?REGION=r'", "ALTER BACKUP ... ADD NEW_KMS is not supported by pgkeep yet"),
])
def test_not_built_message_uses_the_statements_words(text, message):
    stmt = sql.parse_statement(text)
    with pytest.raises(errors.FeatureNotSupported) as err:
        command_for(stmt)
    assert err.value.message == message
    assert err.value.sqlstate == "0A000"


@pytest.mark.parametrize("text, words", [
    ("SHOW JOBS FOR SCHEDULE 1", "SHOW JOBS FOR SCHEDULE"),
    ("SHOW JOBS FOR SCHEDULES SELECT 1", "SHOW JOBS FOR SCHEDULES <select>"),
    ("PAUSE JOBS FOR SCHEDULE 1", "PAUSE JOBS FOR SCHEDULE"),
    ("CANCEL JOBS FOR SCHEDULES SELECT 1", "CANCEL JOBS FOR SCHEDULES <select>"),
    ("RESUME JOB 1", "RESUME JOB"),
    ("PAUSE ALL BACKUP JOBS", "PAUSE ALL BACKUP JOBS"),
    ("CANCEL JOBS SELECT 1", "CANCEL JOBS <select>"),
    ("SHOW AUTOMATIC JOBS", "SHOW AUTOMATIC JOBS"),
])
def test_own_words_of_job_statements(text, words):
    assert sql.parse_statement(text).own_words() == words


def test_own_words_never_hold_a_value():
    """Messages built from own_words are safe: no literal of the statement appears in them."""
    stmt = sql.parse_statement("GRANT USAGE ON EXTERNAL CONNECTION leakname TO leakrole")
    assert "leak" not in sql.not_supported_message(stmt)
