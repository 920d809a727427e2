"""The `pgkeep` command line: `pgkeep serve` runs the proxy, `pgkeep parse` checks SQL."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from urllib.parse import urlsplit

from .config import WORKER_CONFIG_FD, ConfigError, add_serve_arguments, load_config, read_worker_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgkeep", description=(
        "A PostgreSQL wire-protocol proxy that adds CockroachDB's BACKUP/RESTORE SQL to any PostgreSQL."))
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy", description=(
        "Run pgkeep. Every option can also be set with a PGKEEP_* environment variable or in a "
        "TOML file given with --config; flags win over the environment, which wins over the file."))
    add_serve_arguments(serve)
    parse = sub.add_parser("parse", help="parse SQL from stdin and print what pgkeep makes of it")
    parse.add_argument("--json", action="store_true", help="one JSON object per statement")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "parse":
        from .sql.cli import main as parse_main
        return parse_main(argv[1:], sys.stdin, sys.stdout)
    try:
        fd = os.environ.pop(WORKER_CONFIG_FD, None)
        config = read_worker_config(int(fd)) if fd else load_config(args)
    except ConfigError as e:
        print(f"pgkeep: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "upstream", None) and urlsplit(args.upstream).password:
        logging.getLogger("pgkeep").warning(
            "the --upstream password is on the command line, which every local user can read in "
            "/proc; give it with PGKEEP_UPSTREAM, the --config file or ~/.pgpass instead")
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        pass
    from .app import App, StartupError
    # What the imports made lives as long as the process: keep the collector from walking it
    # (~40,000 objects) in every full collection, which sessions opening and closing trigger.
    gc.freeze()
    try:
        asyncio.run(App(config).serve_forever())
    except StartupError as e:
        print(f"pgkeep: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
