"""The composition root: wires configuration, the upstream (given or embedded), the catalog and
the listener together. Nothing else constructs these."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import asyncpg

from catalog import Catalog
from engine.jobs import JobRegistry
from engine.placement import Placement
from engine.service import Engine, UpstreamConnector
from engine.pausepoints import parse_points
from engine.spec import EngineSettings

from .audit import AuditLog
from .commands.schedules import start_scheduler
from .config import WORKER_CONFIG_FD, Config, worker_config_bytes
from .limits import ConnectionSlots
from .listen import ListenError, check_listen, listen_error, lock_data_dir
from .pgcluster import PgCluster
from .server import Server
from .upstream import (UpstreamAddress, UpstreamTLSError, asyncpg_connector, parse_upstream,
                       session_ssl_context)

__all__ = ["App", "StartupError"]

_log = logging.getLogger("pgkeep")
_SLOTS_ENV = "PGKEEP_WORKER_SLOTS"  # the parent's connection slot file (proxy/limits.py)


PASSWORD_FILE = "postgres.password"   # the embedded superuser's, in DATA_DIR


class StartupError(Exception):
    """pgkeep cannot start; the message says why in one line (no secret in it)."""


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # the child died before reading: its exit status tells
    finally:
        os.close(fd)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.embedded: PgCluster | None = None
        self.upstream_dsn = config.upstream or ""
        self.upstream_address: UpstreamAddress | None = None   # pgkeep's own connections
        self.session_address: UpstreamAddress | None = None    # where client sessions go
        self.upstream_tls = None   # the client sessions' ssl.SSLContext (None: no TLS upstream)
        self.connection_slots: ConnectionSlots | None = None
        self.catalog: Catalog | None = None
        self.engine: Engine | None = None
        self.jobs: JobRegistry | None = None
        self.scheduler = None      # engine.scheduler.Scheduler
        self.server: Server | None = None
        self.audit = AuditLog(None)
        # --workers N: worker 0 is this process; it starts workers 1..N-1 as children that
        # share the listen port (SO_REUSEPORT) and the upstream, and stops them on exit.
        self.worker_index = int(os.environ.get("PGKEEP_WORKER_INDEX", "0"))
        self._children: list[asyncio.subprocess.Process] = []
        self._data_lock: int | None = None   # DATA_DIR/pgkeep.pid, held while we run

    async def start(self) -> None:
        cfg = self.config
        if self.worker_index == 0:  # before anything starts or says it is running
            try:
                check_listen(cfg.listen_host, cfg.listen_port, cfg.workers > 1)
            except ListenError as e:
                raise StartupError(str(e)) from None
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        if self.worker_index == 0:
            try:
                self._data_lock = lock_data_dir(cfg.data_path)
            except ListenError as e:
                raise StartupError(str(e)) from None
        cfg.nodelocal_path.mkdir(parents=True, exist_ok=True)
        session_dsn = cfg.session_upstream
        if not cfg.upstream:
            session_dsn = await self._start_embedded()
        connect = self._open_upstream(session_dsn)
        try:
            self.catalog = await Catalog.open(self.upstream_dsn, connect=connect,
                                              admin_role=cfg.admin_role)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StartupError(f"cannot connect to the upstream PostgreSQL at "
                               f"{self.upstream_address.describe()}: {e}") from None
        self.engine = Engine(UpstreamConnector(self.upstream_dsn, connect), cfg.nodelocal_path,
                             self._engine_settings, self._external_uri)
        self.jobs = JobRegistry(self.catalog.jobs, self.engine.job_runners(),
                                lease=cfg.job_lease, heartbeat=min(1.0, cfg.job_lease / 5),
                                max_jobs=cfg.max_jobs,
                                placement=Placement(cfg.nodelocal_path, self.engine.resolve))
        self.jobs.start()
        self.scheduler = start_scheduler(self)
        self.audit = AuditLog(cfg.audit_log)
        self.connection_slots = self._slots()
        self.server = Server(cfg, upstream=self.session_address, upstream_tls=self.upstream_tls,
                             slots=self.connection_slots, worker_index=self.worker_index,
                             commands=self)
        try:
            await self.server.start()
        except OSError as e:   # taken between the check and now
            raise StartupError(str(listen_error(cfg.listen_host, cfg.listen_port, e))) from None
        if self.worker_index == 0:
            for i in range(1, cfg.workers):
                self._children.append(await self._start_worker(i))

    async def _start_embedded(self) -> str:
        """Start the embedded PostgreSQL; returns where client sessions go. pgkeep itself uses
        the trusted Unix socket inside the data directory; clients go over TCP, where the
        superuser's generated password (DATA_DIR/postgres.password, 0600) and SCRAM are required,
        so no one gets in through pgkeep without it."""
        cfg = self.config
        self.embedded = PgCluster(cfg.data_path / "pg", port=cfg.embedded_port or None,
                                  password_file=cfg.data_path / PASSWORD_FILE)
        await asyncio.to_thread(self.embedded.start)
        self.upstream_dsn = self.embedded.socket_dsn()  # pgkeep owns it: the cheaper path
        _log.info("embedded PostgreSQL %s running in %s on port %d", self.embedded.version,
                  self.embedded.datadir, self.embedded.port)
        return f"postgresql://{self.embedded.superuser}@127.0.0.1:{self.embedded.port}/postgres"

    def _open_upstream(self, session_dsn: str | None):
        """Parse the upstream DSN and build its TLS contexts (upstream.ssl_context): the asyncpg
        connect function of the catalog and the engine; the sessions' context is kept."""
        try:
            self.upstream_address = parse_upstream(self.upstream_dsn)
            self.session_address = parse_upstream(session_dsn) if session_dsn else self.upstream_address
            self.upstream_tls = session_ssl_context(self.session_address)
            return asyncpg_connector(self.upstream_address)
        except UpstreamTLSError as e:
            raise StartupError(f"--upstream: {e}") from None

    def _slots(self) -> ConnectionSlots:
        """--max-connections for the whole pgkeep: the workers share one slot file."""
        if self.config.workers == 1:
            return ConnectionSlots(self.config.max_connections, None)
        path = os.environ.get(_SLOTS_ENV) if self.worker_index else None
        return ConnectionSlots(self.config.max_connections, Path(path) if path else
                               self.config.data_path / "run" / f"connections-{os.getpid()}.slots")

    async def _start_worker(self, index: int) -> asyncio.subprocess.Process:
        """Worker `index` runs with this process's whole resolved configuration, sent through an
        inherited pipe: nothing of it is in the child's argv, which every local user can read."""
        cfg = self.config
        payload = worker_config_bytes(cfg, listen=f"{cfg.listen_host}:{self.server.port}",
                                      upstream=self.upstream_dsn,
                                      session_upstream=self.session_address.dsn)
        r, w = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy", "serve", pass_fds=(r,),
                env={**os.environ, "PGKEEP_WORKER_INDEX": str(index), WORKER_CONFIG_FD: str(r),
                     _SLOTS_ENV: str(self.connection_slots.path)})
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        await asyncio.to_thread(_write_all, w, payload)
        return child

    async def _engine_settings(self) -> EngineSettings:
        get = self.catalog.settings.get
        return EngineSettings(file_size=await get("bulkio.backup.file_size"),
                              chunk_size=await get("pgkeep.backup.chunk_size"),
                              backup_parallelism=await get("pgkeep.backup.parallelism"),
                              restore_parallelism=await get("pgkeep.restore.parallelism"),
                              compression_level=await get("pgkeep.backup.compression_level"),
                              pausepoints=parse_points(await get("jobs.debug.pausepoints")))

    async def _external_uri(self, name: str) -> str:
        return (await self.catalog.connections.get(name)).uri

    def psql_command(self) -> str:
        a = self.upstream_address
        host = self.config.listen_host
        cmd = f'psql "postgresql://{a.user}@{host}:{self.server.port}/{a.database}"'
        if self.embedded is not None and self.embedded.password_file is not None:
            cmd = f'PGPASSWORD="$(cat {self.embedded.password_file})" ' + cmd
        return cmd

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        for child in self._children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        if self.server is not None:
            await self.server.shutdown(self.config.shutdown_timeout)
        for child in self._children:
            await child.wait()
        if self.catalog is not None:
            await self.catalog.close()
        self.audit.close()
        if self.connection_slots is not None:
            self.connection_slots.close(unlink=self.worker_index == 0)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        if self._data_lock is not None:
            os.close(self._data_lock)
            self._data_lock = None

    async def serve_forever(self) -> None:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if self.worker_index:
            _log.info("worker %d is serving", self.worker_index)
        else:
            print(f"pgkeep is listening on {self.config.listen_host}:{self.server.port}, "
                  f"in front of {self.upstream_address.describe()}", flush=True)
            print(f"connect with: {self.psql_command()}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            _log.info("shutting down")
        finally:
            await self.stop()
