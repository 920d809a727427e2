"""pgkeep as a real subprocess (`python -m proxy serve`), its log captured to a file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import reserve_port

__all__ = ["PgkeepProcess"]

REPO = Path(__file__).resolve().parents[2]


class PgkeepProcess:
    def __init__(self, workdir: Path, upstream: str | None, *, args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.port = port or reserve_port()
        self.args = args or []
        self.env = env or {}
        self.logfile = self.workdir / "pgkeep.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{self.port}",
               "--data-dir", str(self.workdir / "data"), *self.args]
        if self.upstream:
            cmd += ["--upstream", self.upstream]
        return cmd

    def start(self, timeout: float = 60) -> "PgkeepProcess":
        offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        log = open(self.logfile, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgkeep exited with {self.proc.returncode}:\n{self.log()}")
            if "pgkeep is listening" in self.log()[offset:]:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgkeep did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def dsn(self, database: str = "postgres", user: str = "postgres", password: str | None = None,
            **params: str) -> str:
        from urllib.parse import quote
        auth = f"{quote(user)}:{quote(password)}" if password else quote(user)
        q = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}" + (f"?{q}" if q else "")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def connect_raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)
