"""Static checks of docker/: there is no Docker engine here, so parse the Dockerfile, its ignore
file and compose.yaml, and check that what they name exists and agrees with the project (console
script, options, port)."""
from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML, in the test extras

from proxy.config import OPTIONS

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
PORT = 26257
OPTION_ENV = {"PGKEEP_" + o.name.upper() for o in OPTIONS} | {"PGKEEP_CONFIG"}


# -- tiny parsers ---------------------------------------------------------------------------------

def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):     # comment lines inside a continuation are skipped
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return out


def split_args(rest: str) -> tuple[list[str], list[str]]:
    """(--flags, words) of an instruction, in JSON (exec) or shell form."""
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    flags = [w for w in words if w.startswith("--")]
    return flags, [w for w in words if not w.startswith("--")]


def parse_env(rest: str) -> dict[str, str]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:           # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def substitute(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} interpolation, with the defaults."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            j = pattern.index("]", i)
            out, i = out + pattern[i:j + 1], j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(rules: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _ignore_regex(rule.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            verdict = not negate
    return verdict


def read_ignore_rules(dockerfile: Path, context: Path) -> list[str]:
    # BuildKit: <Dockerfile>.dockerignore next to the Dockerfile wins over <context>/.dockerignore.
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.exists():
            return [ln.strip() for ln in candidate.read_text().splitlines()
                    if ln.strip() and not ln.strip().startswith("#")]
    return []


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _final_stage(instructions):
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1]:]


def _dockerfile_env(instructions) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage(instructions):
        if word == "ENV":
            env.update(parse_env(rest))
    return env


# -- the parsers themselves -----------------------------------------------------------------------

def test_ignore_matcher_follows_docker_semantics():
    rules = ["*", "!proxy/", "**/__pycache__"]
    assert ignored(rules, "tests/test_x.py")
    assert not ignored(rules, "proxy/server.py")
    assert ignored(rules, "proxy/__pycache__/server.cpython-311.pyc")
    assert not ignored([], "anything")


def test_dockerfile_parser_joins_continuations():
    parsed = parse_dockerfile("FROM a\n# c\nRUN x \\\n  # inner\n  && y\nENV A=1 B=2\n")
    assert parsed == [("FROM", "a"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]
    assert parse_env(parsed[2][1]) == {"A": "1", "B": "2"}
    assert substitute("postgresql://u:${PW:-pgkeep}@db/x") == "postgresql://u:pgkeep@db/x"


# -- compose.yaml ---------------------------------------------------------------------------------

def test_compose_has_the_three_services(compose):
    services = compose["services"]
    assert set(services) == {"pgkeep", "postgres", "seaweedfs"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert services["postgres"]["image"].split(":")[1].startswith("18")
    assert services["seaweedfs"]["image"].split(":")[0] == "chrislusf/seaweedfs"
    assert "server" in services["seaweedfs"]["command"] and "-s3" in services["seaweedfs"]["command"]


def test_compose_build_context_and_dockerfile_exist(compose):
    builds = {n: s["build"] for n, s in compose["services"].items() if "build" in s}
    assert set(builds) == {"pgkeep"}
    for name, build in builds.items():
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: the build context must be the repository root"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert dockerfile.resolve() == DOCKERFILE


def test_compose_healthchecks_and_depends_on(compose):
    services = compose["services"]
    for name in ("postgres", "seaweedfs"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    depends = services["pgkeep"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    for dep, spec in depends.items():
        assert dep in services
        if spec.get("condition") == "service_healthy":
            assert "healthcheck" in services[dep], f"{dep} is waited on but has no healthcheck"


def test_compose_volumes_are_declared(compose, instructions):
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: named volume {source} is not declared"
    pgkeep_mounts = {v.split(":")[1] for v in compose["services"]["pgkeep"]["volumes"]}
    data_dir = compose["services"]["pgkeep"]["environment"].get(
        "PGKEEP_DATA_DIR", _dockerfile_env(instructions)["PGKEEP_DATA_DIR"])
    assert data_dir in pgkeep_mounts, "pgkeep's data dir must be on a named volume"


def test_compose_pgkeep_env_are_real_options_and_upstream_is_the_postgres_service(compose):
    services = compose["services"]
    env = services["pgkeep"]["environment"]
    assert isinstance(env, dict)
    for svc in services.values():
        raw = svc.get("environment") or {}
        names = raw if isinstance(raw, dict) else [e.split("=", 1)[0] for e in raw]
        unknown = {n for n in names if n.startswith("PGKEEP_")} - OPTION_ENV
        assert not unknown, f"not pgkeep options: {unknown}"
    upstream = urlsplit(substitute(env["PGKEEP_UPSTREAM"]))
    assert upstream.scheme in ("postgresql", "postgres")
    assert upstream.hostname == "postgres" and upstream.hostname in services
    assert (upstream.port or 5432) == 5432
    pg_env = services["postgres"]["environment"]
    assert upstream.username == pg_env.get("POSTGRES_USER", "postgres")
    assert upstream.password == substitute(pg_env["POSTGRES_PASSWORD"])


def test_compose_ports_agree_with_the_listen_address(compose, instructions):
    pgkeep = compose["services"]["pgkeep"]
    listen = pgkeep["environment"].get("PGKEEP_LISTEN", _dockerfile_env(instructions)["PGKEEP_LISTEN"])
    assert listen == f"0.0.0.0:{PORT}"
    container_ports = {int(str(p).split(":")[-1].split("/")[0]) for p in pgkeep["ports"]}
    assert container_ports == {PORT}
    shutdown = next(o.default for o in OPTIONS if o.name == "shutdown_timeout")
    grace = pgkeep.get("stop_grace_period", "10s")
    assert grace.endswith("s") and float(grace[:-1]) > shutdown, \
        "stop_grace_period must outlast pgkeep's shutdown timeout"


# -- Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_base_user_and_volume(instructions):
    froms = [rest for word, rest in instructions if word == "FROM"]
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0]) for f in froms]
    assert all(b == "python:3.11-slim" for b in bases), bases
    final = _final_stage(instructions)
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = [v for word, rest in final if word == "VOLUME" for v in split_args(rest)[1]]
    assert _dockerfile_env(instructions)["PGKEEP_DATA_DIR"] in volumes


def test_dockerfile_copies_exist_and_are_in_the_context(instructions):
    context = REPO
    rules = read_ignore_rules(DOCKERFILE, context)
    sources = []
    for word, rest in instructions:
        if word not in ("COPY", "ADD"):
            continue
        flags, words = split_args(rest)
        if any(f.startswith("--from=") for f in flags):
            continue                      # copied from another stage, not from the context
        assert len(words) >= 2, f"{word} {rest}: needs a source and a destination"
        sources += words[:-1]
    assert sources, "the Dockerfile copies nothing from the context"
    for src in sources:
        assert not re.match(r"[a-z]+://", src), f"{src}: remote sources are not reproducible"
        path = context / src
        assert path.exists(), f"{src} is copied by the Dockerfile but does not exist in the repo"
        assert not ignored(rules, src), f"{src} is filtered out by the build's ignore file"
        if path.is_dir():
            assert any(p.suffix == ".py" and not ignored(rules, str(p.relative_to(context)))
                       for p in path.rglob("*.py")), f"{src}: no source file survives the ignore file"


def test_dockerfile_copies_what_pip_install_needs(instructions, pyproject):
    copied = {w.rstrip("/") for word, rest in instructions if word in ("COPY", "ADD")
              for w in split_args(rest)[1][:-1] if not any(f.startswith("--from=")
                                                          for f in split_args(rest)[0])}
    assert "pyproject.toml" in copied
    readme = pyproject["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        assert readme in copied, f"setuptools reads {readme} at build time; the Dockerfile must copy it"
    top_level = {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    missing = top_level - copied
    assert not missing, f"packages not copied into the image: {missing}"
    assert any("pip" in rest and "install" in rest for word, rest in instructions if word == "RUN")


def test_dockerfile_env_are_real_pgkeep_options(instructions):
    names = set()
    for word, rest in instructions:
        if word == "ENV":
            names |= set(parse_env(rest))
        elif word == "ARG":
            names.add(rest.split("=", 1)[0])
    pgkeep_names = {n for n in names if n.startswith("PGKEEP_")}
    assert {"PGKEEP_LISTEN", "PGKEEP_DATA_DIR"} <= pgkeep_names
    assert not pgkeep_names - OPTION_ENV, f"not pgkeep options: {pgkeep_names - OPTION_ENV}"
    env = _dockerfile_env(instructions)
    assert env["PGKEEP_LISTEN"] == f"0.0.0.0:{PORT}"


def test_dockerfile_entrypoint_is_the_console_script(instructions, pyproject):
    entrypoints = [rest for word, rest in _final_stage(instructions) if word == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert entrypoints[-1].startswith("["), "use the exec form so pgkeep gets SIGTERM directly"
    argv = json.loads(entrypoints[-1])
    assert argv == ["pgkeep", "serve"]
    scripts = pyproject["project"]["scripts"]
    assert argv[0] in scripts
    module, _, func = scripts[argv[0]].partition(":")
    source = REPO / (module.replace(".", "/") + ".py")
    assert source.is_file() and re.search(rf"^def {func}\(", source.read_text(), re.M)


def test_dockerfile_exposes_the_listen_port(instructions):
    exposed = {int(p.split("/")[0]) for word, rest in _final_stage(instructions) if word == "EXPOSE"
               for p in rest.split()}
    assert exposed == {PORT}
    env = _dockerfile_env(instructions)
    assert int(env["PGKEEP_LISTEN"].rpartition(":")[2]) in exposed


def test_every_source_package_is_installed_into_the_image(pyproject):
    """The image gets what a non-editable `pip install` packages: every directory of Python
    modules under the top-level packages must be listed in [tool.setuptools] packages."""
    from setuptools import find_packages
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    listed = set(find_packages(where=str(REPO), include=include))
    top_level = {p.split(".")[0] for p in include}
    assert top_level == {"proxy", "engine", "catalog"}
    on_disk = {str(d.relative_to(REPO)).replace("/", ".")
               for top in top_level for d in [REPO / top, *(REPO / top).rglob("*")]
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    missing = sorted(on_disk - listed)
    assert not missing, f"packages on disk but not in pyproject.toml (the image would lack them): {missing}"
