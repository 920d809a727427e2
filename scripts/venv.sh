#!/usr/bin/env bash
# Creates the project's virtual environment (.venv by default) with the machine's python3, and
# installs pgkeep into it (with the test extras when asked). Never touches the system Python, so
# it works where python3 refuses `pip install` (PEP 668, "externally-managed-environment").
# Usage: scripts/venv.sh VENV [test]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}
# The Makefile puts the venv's bin first in PATH: python3 must be the machine's, not the venv's
# (which may be the broken one about to be deleted).
venv_bin=$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")/bin
PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$venv_bin" | paste -sd: -)

command -v "$python" >/dev/null || {
    echo "venv: no $python on this machine; install Debian's python3 first: sudo apt-get install python3" >&2
    exit 1
}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "venv: pgkeep needs Python 3.11 or newer, $python is $("$python" -V 2>&1 | cut -d' ' -f2)" >&2
    exit 1
}

# Debian's apt-get install, as root: without `apt-get update` first when the lists already have
# the packages, and an update that fails for one unreachable source does not stop it.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    apt-get update -qq || echo "venv: apt-get update had errors; trying the install anyway" >&2
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A venv without a working pip (`python3 -m venv .venv` typed by hand before python3-venv was
# there, an interrupted first run) or whose interpreter is gone (the system Python upgraded) is
# made again.
if [ -e "$venv" ] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "venv: $venv has no working python and pip (made without python3-venv?); making it again" >&2
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        # Debian and Ubuntu ship venv's ensurepip in a package of its own.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "venv: installing Debian's python3-venv (python3 -m venv needs it)" >&2
            apt_install python3-venv
            "$python" -m venv "$venv"
        else
            echo "venv: '$python -m venv' failed; install Debian's python3-venv first:" >&2
            echo "      sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
fi
spec=.
[ "$extras" = test ] && spec='.[test]'
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
