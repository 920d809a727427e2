"""The embedded server's account must reach the PostgreSQL binaries and its data directory,
which may sit under a private home directory (root's pyenv, a project under it): pgkeep opens the
way with search permission only, so the home directory stays unlistable to other users (the
fresh-machine check found root's home turned 0705)."""
from __future__ import annotations

import stat

from proxy.pgcluster import _ensure_traversable


def test_parents_get_search_permission_only(tmp_path):
    home = tmp_path / "home"
    bin_dir = home / ".pyenv" / "pginstall" / "bin"
    bin_dir.mkdir(parents=True)
    for d in (home, home / ".pyenv", home / ".pyenv" / "pginstall", bin_dir):
        d.chmod(0o700)
    _ensure_traversable(bin_dir)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(bin_dir) == 0o705                      # its files are listed and run
    assert mode(home) == 0o701 and mode(home / ".pyenv") == 0o701
    _ensure_traversable(bin_dir)                       # idempotent
    assert mode(home) == 0o701
