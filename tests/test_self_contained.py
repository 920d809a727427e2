"""The repository stands alone: nothing under tests/, bench/ or scripts/ (nor the Makefile and
.ci/) names a path outside the repository, so `make test` works on a clone anywhere."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ["tests", "bench", "scripts", ".ci", "Makefile", "docker"]
TEXT = {".py", ".sh", ".md", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".ini", ""}

# Home-like absolute directories (system paths such as /usr/lib/postgresql or /proc are fine),
# a step out of the repository into a sibling, and the old location of the sample data.
_OUTSIDE = re.compile(r"(?<![\w.~-])/(?:work|home|root|mnt|srv|opt|Users)/"
                      r"|\.\./(?:shared|\.library)\b|\bshared/data\b")
_PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")


def _ignored_dirs() -> tuple[set[str], set[str]]:
    """The directories .gitignore names (anchored ones as repo-relative paths, others as names):
    what running the tools generates there (bench/.cache's downloaded binaries, node_modules) is
    not the repository's own text."""
    anchored, anywhere = set(), set()
    for line in (REPO / ".gitignore").read_text().splitlines():
        line = line.strip()
        if line.endswith("/") and not line.startswith("#") and "*" not in line:
            (anchored if line.startswith("/") else anywhere).add(line.strip("/"))
    return anchored, anywhere


def _files():
    anchored, anywhere = _ignored_dirs()
    for root in ROOTS:
        path = REPO / root
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            rel = f.relative_to(REPO)
            if any(str(rel).startswith(d + "/") for d in anchored) or anywhere & set(rel.parts):
                continue
            if f.is_file() and f.suffix in TEXT and "__pycache__" not in f.parts \
                    and f != Path(__file__).resolve():
                yield f


def test_no_file_names_a_path_outside_the_repository():
    offenders = []
    for f in _files():
        text = f.read_text(errors="replace")
        depth = len(f.relative_to(REPO).parts) - 1          # parents[depth] is the repo
        for i, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
            for m in _PARENTS.finditer(line):
                if int(m.group(1)) > depth:
                    offenders.append(f"{f.relative_to(REPO)}:{i}: climbs out of the repo: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_the_check_catches_what_it_is_for(tmp_path):
    """The patterns above match the two forms that once broke clones elsewhere."""
    assert _OUTSIDE.search('DATA = Path("' + '/work' + '/shared/data")')
    assert _OUTSIDE.search("x = ROOT / '..' / '..' ; p = '../" + "shared/x'")
    assert not _OUTSIDE.search("/usr/lib/postgresql/15/bin/postgres /proc/self/cmdline /tmp/x")
    m = _PARENTS.search("Path(__file__).resolve().parents[3]")
    assert m and int(m.group(1)) > len(Path("tests/support/datasets.py").parts) - 1
