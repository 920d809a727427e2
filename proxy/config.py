"""pgkeep's configuration: the only module that reads flags, PGKEEP_* environment variables and
the TOML file.

Precedence, highest first: command-line flag, environment variable, TOML file (`--config` or
PGKEEP_CONFIG), built-in default. Every option has all three spellings: `--max-connections`,
PGKEEP_MAX_CONNECTIONS, `max_connections = ...` in the file.
"""
from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Config", "OPTIONS", "add_serve_arguments", "load_config", "ConfigError",
           "WORKER_CONFIG_FD", "worker_config_bytes", "read_worker_config"]

# A child worker's whole resolved configuration arrives on this inherited pipe (see
# worker_config_bytes): never in argv, which any local user reads in /proc/<pid>/cmdline.
WORKER_CONFIG_FD = "PGKEEP_WORKER_CONFIG_FD"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class _Opt:
    name: str            # attribute / TOML key
    type: type
    default: Any
    help: str
    metavar: str | None = None


OPTIONS: tuple[_Opt, ...] = (
    _Opt("listen", str, "127.0.0.1:26257", "address to accept PostgreSQL clients on "
         "(CockroachDB's port by default)", "HOST:PORT"),
    _Opt("upstream", str, None, "the PostgreSQL to front, as a postgresql:// URI; its user is the one "
         "pgkeep itself uses for backups and its catalog. Without it pgkeep runs its own embedded "
         "PostgreSQL 18 in DATA_DIR/pg", "DSN"),
    _Opt("data_dir", str, ".pgkeep", "pgkeep's own state: the embedded PostgreSQL, logs, the default "
         "nodelocal root", "DIR"),
    _Opt("nodelocal_root", str, None, "where nodelocal:// URIs land (default DATA_DIR/external)", "DIR"),
    _Opt("tls_cert", str, None, "PEM certificate; with --tls-key, clients may use TLS", "FILE"),
    _Opt("tls_key", str, None, "PEM private key for --tls-cert", "FILE"),
    _Opt("require_tls", bool, False, "refuse clients that do not use TLS (SQLSTATE 28000); needs "
         "--tls-cert and --tls-key"),
    _Opt("max_connections", int, 100, "client connections accepted at once; beyond it clients get "
         "SQLSTATE 53300", "N"),
    _Opt("workers", int, 1, "serving processes sharing the listen port (SO_REUSEPORT)", "N"),
    _Opt("max_message_size", int, 1 << 30, "largest protocol message accepted from a client, in "
         "bytes (08P01 beyond it)", "BYTES"),
    _Opt("startup_timeout", float, 15.0, "seconds a new client has to send its startup packet", "SEC"),
    _Opt("client_login_timeout", float, 15.0, "seconds a new client has to complete authentication; "
         "then it is closed and its --max-connections slot freed (PgBouncer's client_login_timeout)",
         "SEC"),
    _Opt("shutdown_timeout", float, 30.0, "seconds SIGTERM waits for running statements", "SEC"),
    _Opt("embedded_port", int, 0, "TCP port of the embedded PostgreSQL (0: pick a free one)", "PORT"),
    _Opt("job_lease", float, 10.0, "seconds a pgkeep process holds a job without renewing it; "
         "after that another pgkeep in front of the same database adopts the job", "SEC"),
    _Opt("max_jobs", int, 4, "BACKUP/RESTORE jobs this process runs at once; more wait as pending "
         "for any pgkeep in front of the same database", "N"),
    _Opt("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR", "LEVEL"),
    _Opt("admin_role", str, "admin", "members of this upstream role (and upstream superusers) are "
         "pgkeep admins: they hold every BACKUP/RESTORE privilege (CockroachDB's admin)", "ROLE"),
    _Opt("audit_log", str, None, "append one JSON line per BACKUP, RESTORE, grant, external "
         "connection, job control and cluster setting statement to FILE (fsynced); '-' is stderr",
         "FILE"),
)


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:26257"
    upstream: str | None = None
    data_dir: str = ".pgkeep"
    nodelocal_root: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    max_connections: int = 100
    workers: int = 1
    max_message_size: int = 1 << 30
    startup_timeout: float = 15.0
    client_login_timeout: float = 15.0
    shutdown_timeout: float = 30.0
    embedded_port: int = 0
    job_lease: float = 10.0
    max_jobs: int = 4
    log_level: str = "INFO"
    admin_role: str = "admin"
    audit_log: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Not an option: where client sessions go when it differs from --upstream (the embedded
    # server: pgkeep uses its Unix socket, clients its password-protected TCP port). Workers get
    # it from their parent.
    session_upstream: str | None = None

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def nodelocal_path(self) -> Path:
        return Path(self.nodelocal_root).resolve() if self.nodelocal_root else self.data_path / "external"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with any of the options below (env: PGKEEP_CONFIG)")
    for opt in OPTIONS:
        flag = "--" + opt.name.replace("_", "-")
        env = "PGKEEP_" + opt.name.upper()
        if opt.type is bool:  # a switch: the flag alone turns it on
            parser.add_argument(flag, dest=opt.name, default=None, action="store_const", const=True,
                                help=f"{opt.help} [env {env}=1; default off]")
            continue
        parser.add_argument(flag, dest=opt.name, default=None, metavar=opt.metavar,
                            help=f"{opt.help} [env {env}; default {opt.default}]")


def _coerce(opt: _Opt, value: Any, source: str) -> Any:
    if value is None:
        return None
    if opt.type is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: invalid value {value!r} for {opt.name} (true or false)")
    try:
        if opt.type is int and isinstance(value, str):
            return int(value, 0)
        return opt.type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {opt.name}") from None


def load_config(args: argparse.Namespace | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    path = getattr(args, "config", None) or environ.get("PGKEEP_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                file_values = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        known = {o.name for o in OPTIONS}
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        env = "PGKEEP_" + opt.name.upper()
        for source, raw in (("flag", getattr(args, opt.name, None) if args else None),
                            (env, environ.get(env)),
                            (str(path), file_values.get(opt.name))):
            if raw is not None and raw != "":
                values[opt.name] = _coerce(opt, raw, source)
                break
    cfg = Config(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    host, sep, port = cfg.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen must be HOST:PORT, got {cfg.listen!r}")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if cfg.require_tls and not cfg.tls_cert:
        raise ConfigError("--require-tls needs --tls-cert and --tls-key")
    if cfg.max_connections < 1 or cfg.workers < 1:
        raise ConfigError("--max-connections and --workers must be at least 1")
    for name in ("startup_timeout", "client_login_timeout", "job_lease"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if cfg.upstream and not cfg.upstream.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--upstream must be a postgresql:// URI")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {cfg.log_level!r}")
    assert {f.name for f in fields(Config)} - {"extra", "session_upstream"} == {o.name for o in OPTIONS}


def worker_config_bytes(cfg: Config, *, listen: str, upstream: str,
                        session_upstream: str | None = None) -> bytes:
    """The configuration a child worker runs with: the parent's, resolved (absolute paths, the
    bound port, the upstream actually used), so flags, environment and file all reach it."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None
    child = replace(cfg, listen=listen, upstream=upstream, session_upstream=session_upstream,
                    data_dir=str(cfg.data_path),
                    nodelocal_root=str(cfg.nodelocal_path), tls_cert=absolute(cfg.tls_cert),
                    tls_key=absolute(cfg.tls_key))
    values = asdict(child)
    values["extra"] = dict(child.extra)
    return json.dumps(values).encode()


def read_worker_config(fd: int) -> Config:
    """Read (to EOF) and close the pipe a parent wrote worker_config_bytes to."""
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    try:
        cfg = Config(**json.loads(data))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"unreadable worker configuration: {type(e).__name__}") from None
    _validate(cfg)
    return cfg
