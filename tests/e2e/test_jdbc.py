"""JDBC smoke test: pgjdbc through pgkeep, including its switch to named server-side statements
after prepareThreshold (5) executions, for forwarded and intercepted statements alike."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

from .helpers import not_built_statement

pytestmark = pytest.mark.timeout(120)

JAVA_MAIN = r"""
import java.sql.*;

public class Main {
    static void out(String s) { System.out.println(s); }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, "postgres", "")) {
            // forwarded, 10 executions: named server-side statement from the 5th on
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2, pg_backend_pid()")) {
                StringBuilder sb = new StringBuilder("doubled");
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sb.append(' ').append(rs.getInt(1));
                    }
                }
                out(sb.toString());
            }
            // intercepted, through a plain Statement
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SHOW CLUSTER SETTING bulkio.backup.file_size")) {
                rs.next();
                out("statement " + rs.getMetaData().getColumnName(1) + "=" + rs.getString(1));
            }
            // intercepted, through a PreparedStatement executed past prepareThreshold
            try (PreparedStatement ps = c.prepareStatement("SHOW CLUSTER SETTING bulkio.backup.file_size")) {
                StringBuilder sb = new StringBuilder("prepared");
                for (int i = 0; i < 8; i++) {
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sb.append(' ').append(rs.getString(1).replace(" ", ""));
                    }
                }
                out(sb.toString());
            }
            // intercepted with a bound parameter
            try (PreparedStatement ps = c.prepareStatement(
                    "SET CLUSTER SETTING bulkio.backup.file_size = ?")) {
                ps.setString(1, "64 MiB");
                ps.executeUpdate();
            } catch (SQLException e) {  // reported, and the rest still runs
                out("set failed " + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
            }
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SHOW CLUSTER SETTING bulkio.backup.file_size")) {
                rs.next();
                out("after set " + rs.getString(1));
                st.execute("RESET CLUSTER SETTING bulkio.backup.file_size");
            }
            // an intercepted family that is not built: 0A000, and the session goes on
            try (Statement st = c.createStatement()) {
                st.executeQuery(args[1]);
                out("no error");
            } catch (SQLException e) {
                out("sqlstate " + e.getSQLState());
            }
            // a syntax error in intercepted SQL: 42601
            try (Statement st = c.createStatement()) {
                st.execute("BACKUP DATABASE INTO");
                out("no error");
            } catch (SQLException e) {
                out("sqlstate " + e.getSQLState());
            }
            // a transaction around an intercepted statement
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TEMP TABLE jdbc_t(a int)");
                try (ResultSet rs = st.executeQuery("SHOW CLUSTER SETTING bulkio.backup.file_size")) {
                    rs.next();
                    out("in txn " + rs.getString(1));
                }
                st.execute("INSERT INTO jdbc_t VALUES (1)");
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 'usable'")) {
                rs.next();
                out("end " + rs.getString(1));
            }
        }
    }
}
"""


def _pgjdbc_jar() -> str:
    jars = sorted(glob.glob(os.path.expanduser(
        "~/.m2/repository/org/postgresql/postgresql/*/postgresql-*.jar")))
    jars = [j for j in jars if not j.endswith(("-sources.jar", "-javadoc.jar"))]
    if jars:
        return jars[-1]
    if os.path.exists("/usr/share/java/postgresql.jar"):
        return "/usr/share/java/postgresql.jar"
    pytest.fail("the pgjdbc jar is missing: expected ~/.m2/repository/org/postgresql/postgresql/"
                "*/postgresql-*.jar or /usr/share/java/postgresql.jar (apt-get install libpostgresql-jdbc-java)")


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is not installed (apt-get install default-jdk-headless)")
    return java


@pytest.mark.parametrize("mode", ["extended", "simple"])
def test_jdbc_smoke(pgkeep, tmp_path, mode):
    src = tmp_path / "Main.java"
    src.write_text(JAVA_MAIN)
    url = f"jdbc:postgresql://127.0.0.1:{pgkeep.port}/postgres?sslmode=disable&prepareThreshold=5"
    if mode == "simple":
        url += "&preferQueryMode=simple"
    r = subprocess.run([_java(), "-cp", _pgjdbc_jar(), str(src), url, not_built_statement()[0]],
                       capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "doubled 0 2 4 6 8 10 12 14 16 18",
        "statement bulkio.backup.file_size=128 MiB",
        "prepared " + " ".join(["128MiB"] * 8),
        "after set 64 MiB",
        "sqlstate 0A000",
        "sqlstate 42601",
        "in txn 128 MiB",
        "end usable",
    ]
