"""The composition root: wires configuration, the upstream (given or embedded), the catalog and
the listener together. Nothing else constructs these."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from catalog import Catalog
from engine.jobs import JobRegistry
from engine.placement import Placement
from engine.service import Engine, UpstreamConnector
from engine.pausepoints import parse_points
from engine.spec import EngineSettings

from .config import Config
from .pgcluster import PgCluster
from .server import Server
from .upstream import UpstreamAddress, parse_upstream

__all__ = ["App"]

_log = logging.getLogger("pgkeep")


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.embedded: PgCluster | None = None
        self.upstream_dsn = config.upstream or ""
        self.upstream_address: UpstreamAddress | None = None
        self.catalog: Catalog | None = None
        self.engine: Engine | None = None
        self.jobs: JobRegistry | None = None
        self.server: Server | None = None
        # --workers N: worker 0 is this process; it starts workers 1..N-1 as children that
        # share the listen port (SO_REUSEPORT) and the upstream, and stops them on exit.
        self.worker_index = int(os.environ.get("PGKEEP_WORKER_INDEX", "0"))
        self._children: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        cfg = self.config
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        cfg.nodelocal_path.mkdir(parents=True, exist_ok=True)
        if not cfg.upstream:
            self.embedded = PgCluster(cfg.data_path / "pg", port=cfg.embedded_port or None)
            await asyncio.to_thread(self.embedded.start)
            self.upstream_dsn = self.embedded.socket_dsn()  # pgkeep owns it: the cheaper path
            _log.info("embedded PostgreSQL %s running in %s on port %d", self.embedded.version,
                      self.embedded.datadir, self.embedded.port)
        self.upstream_address = parse_upstream(self.upstream_dsn)
        self.catalog = await Catalog.open(self.upstream_dsn)
        self.engine = Engine(UpstreamConnector(self.upstream_dsn), cfg.nodelocal_path,
                             self._engine_settings, self._external_uri)
        self.jobs = JobRegistry(self.catalog.jobs, self.engine.job_runners(),
                                lease=cfg.job_lease, heartbeat=min(1.0, cfg.job_lease / 5),
                                max_jobs=cfg.max_jobs,
                                placement=Placement(cfg.nodelocal_path, self.engine.resolve))
        self.jobs.start()
        self.server = Server(self)
        await self.server.start()
        if self.worker_index == 0:
            for i in range(1, cfg.workers):
                self._children.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "proxy", "serve", "--upstream", self.upstream_dsn,
                    env={**os.environ, "PGKEEP_WORKER_INDEX": str(i),
                         "PGKEEP_LISTEN": f"{cfg.listen_host}:{self.server.port}",
                         "PGKEEP_WORKERS": str(cfg.workers), "PGKEEP_DATA_DIR": str(cfg.data_path)}))

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
        return f'psql "postgresql://{a.user}@{host}:{self.server.port}/{a.database}"'

    async def stop(self) -> None:
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
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    async def serve_forever(self) -> None:
        await self.start()
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
