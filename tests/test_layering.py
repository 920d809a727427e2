"""The dependency direction between pgkeep's packages, read from the source with `ast`:
proxy -> engine -> catalog, never backwards; and every other import is the standard library or
a third-party package declared in pyproject.toml (so a fresh install has it)."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("proxy", "engine", "catalog")
# package -> the first-party packages its modules may import
ALLOWED = {
    "catalog": {"catalog"},
    "engine": {"engine", "catalog"},
    "proxy": {"proxy", "engine", "catalog"},
}


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str  # absolute dotted name; "" when a relative import escapes the top package

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted module name, is_package) of a .py file under root."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports_of(source: str, module: str, is_package: bool, file: str = "<src>") -> list[Import]:
    """Every import in the source, absolute or relative, at any depth (functions, TYPE_CHECKING)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [Import(file, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append(Import(file, node.lineno, node.module or ""))
                continue
            if node.level - 1 >= len(package):
                out.append(Import(file, node.lineno, ""))  # beyond the top-level package
                continue
            base = package[:len(package) - (node.level - 1)]
            if node.module:
                out.append(Import(file, node.lineno, ".".join(base + node.module.split("."))))
            else:  # from . import a, b: each name may be a submodule
                out += [Import(file, node.lineno, ".".join(base + [alias.name])) for alias in node.names]
    return out


def all_imports() -> dict[str, list[Import]]:
    result: dict[str, list[Import]] = {}
    for pkg in PACKAGES:
        files = sorted((REPO / pkg).rglob("*.py"))
        assert files, f"no Python files under {pkg}/"
        found: list[Import] = []
        for f in files:
            name, is_pkg = module_name(f, REPO)
            found += imports_of(f.read_text(encoding="utf-8"), name, is_pkg,
                                str(f.relative_to(REPO)))
        result[pkg] = found
    return result


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared_dependencies() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_norm(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]) for req in project["dependencies"]}


def violations(imports: dict[str, list[Import]], declared: set[str]) -> list[str]:
    dists = importlib.metadata.packages_distributions()
    bad = []
    for pkg, found in imports.items():
        for imp in found:
            where = f"{imp.file}:{imp.line}"
            if not imp.module:
                bad.append(f"{where}: relative import beyond the top-level package")
            elif imp.top in PACKAGES:
                if imp.top not in ALLOWED[pkg]:
                    bad.append(f"{where}: {pkg} must not import {imp.module}")
            elif imp.top in sys.stdlib_module_names:
                continue
            else:
                owners = {_norm(d) for d in dists.get(imp.top, [])}
                if not owners:
                    bad.append(f"{where}: {imp.module} is neither stdlib, installed third-party, "
                               "nor an allowed pgkeep package")
                elif not owners & declared:
                    bad.append(f"{where}: {imp.module} (distribution {sorted(owners)}) is not a "
                               "dependency in pyproject.toml")
    return bad


# ---- the checks --------------------------------------------------------------------------------

def test_catalog_imports_neither_engine_nor_proxy():
    found = all_imports()["catalog"]
    assert [f"{i.file}:{i.line} {i.module}" for i in found if i.top in ("engine", "proxy")] == []


def test_engine_does_not_import_proxy():
    found = all_imports()["engine"]
    assert [f"{i.file}:{i.line} {i.module}" for i in found if i.top == "proxy"] == []


def test_only_stdlib_declared_third_party_or_allowed_first_party():
    assert violations(all_imports(), declared_dependencies()) == []


def test_the_walk_sees_the_known_edges():
    """Guard against a checker that silently sees nothing."""
    imports = all_imports()
    proxy_tops = {i.top for i in imports["proxy"]}
    assert {"proxy", "catalog", "asyncio"} <= proxy_tops
    # relative imports are resolved: proxy/session.py's `from .wire import messages`
    assert any(i.file == "proxy/session.py" and i.module == "proxy.wire" for i in imports["proxy"])


# The proxy's serving modules in one direction: the app builds the server, the server builds
# sessions (handing each a SessionHost), a session builds its interceptor (which sees it only as
# an intercept.Channel). None imports one above it, not even for type checking, so each reads on
# its own.
PROXY_ORDER = ("proxy.app", "proxy.server", "proxy.session", "proxy.intercept")


def proxy_upward_imports(imports: list[Import]) -> list[str]:
    """Edges from a serving module to one at or above it, and from any other proxy module
    (commands, wire, sql, config, ...: they sit below them all) to a serving module; only
    proxy/__main__.py starts the app."""
    bad = []
    for imp in imports:
        name = module_name(REPO / imp.file, REPO)[0]
        target = next((m for m in PROXY_ORDER if imp.module == m or imp.module.startswith(m + ".")),
                      None)
        if target is None or target == name or name == "proxy.__main__":
            continue
        if name in PROXY_ORDER and PROXY_ORDER.index(target) > PROXY_ORDER.index(name):
            continue  # downward
        bad.append(f"{imp.file}:{imp.line}: {name} must not import {target}")
    return bad


def test_proxy_serving_modules_import_one_way():
    assert proxy_upward_imports(all_imports()["proxy"]) == []


def test_proxy_one_way_rule_catches_a_cycle():
    fake = (imports_of("from .server import Server\n", "proxy.session", False, "proxy/session.py")
            + imports_of("if TYPE_CHECKING:\n    from .session import Session\n", "proxy.intercept",
                         False, "proxy/intercept.py")
            + imports_of("from ..session import State\n", "proxy.commands.x", False,
                         "proxy/commands/x.py")
            + imports_of("from .app import App\n", "proxy.limits", False, "proxy/limits.py")
            + imports_of("from .intercept import Interceptor\n", "proxy.session", False,
                         "proxy/session.py"))
    found = proxy_upward_imports(fake)
    assert len(found) == 4, found
    assert any("proxy.session must not import proxy.server" in f for f in found)
    assert any("proxy.intercept must not import proxy.session" in f for f in found)
    assert any("proxy.commands.x must not import proxy.session" in f for f in found)
    assert any("proxy.limits must not import proxy.app" in f for f in found)


# ---- the checker itself --------------------------------------------------------------------------

@pytest.mark.parametrize("module,is_pkg,source,expected", [
    ("catalog.db", False, "from . import errors", ["catalog.errors"]),
    ("catalog.db", False, "from .errors import X", ["catalog.errors"]),
    ("proxy.sql.parser", False, "from ..wire.messages import frame", ["proxy.wire.messages"]),
    ("proxy.sql", True, "from .lexer import lex", ["proxy.sql.lexer"]),
    ("proxy.sql", True, "from .. import errors", ["proxy.errors"]),
    ("engine.x", False, "def f():\n    import proxy.server\n", ["proxy.server"]),
    ("engine.x", False, "from ... import nothing", [""]),
    ("catalog.x", False, "import os, asyncpg.pool", ["os", "asyncpg.pool"]),
])
def test_imports_of_resolves(module, is_pkg, source, expected):
    assert [i.module for i in imports_of(source, module, is_pkg)] == expected


def test_violations_are_caught():
    fake = {
        "catalog": imports_of("from proxy.errors import PgError\nimport engine\n", "catalog.bad", False,
                              "catalog/bad.py"),
        "engine": imports_of("import proxy.session\nimport tests.support\n"
                             "import no_such_pkg_xyz\nimport pytest\n", "engine.bad", False,
                             "engine/bad.py"),
        "proxy": imports_of("import json, asyncpg\nfrom engine import spec\n", "proxy.ok", False,
                            "proxy/ok.py"),
    }
    found = violations(fake, {"asyncpg"})
    assert len(found) == 6, found
    assert any("catalog must not import proxy.errors" in v for v in found)
    assert any("catalog must not import engine" in v for v in found)
    assert any("engine must not import proxy.session" in v for v in found)
    assert any("tests.support" in v for v in found)
    assert any("no_such_pkg_xyz" in v for v in found)
    assert any("pytest" in v and "not a dependency" in v for v in found)
