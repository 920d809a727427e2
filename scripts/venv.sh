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

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        # Debian and Ubuntu ship venv's ensurepip in a package of its own.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "venv: installing Debian's python3-venv (python3 -m venv needs it)" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
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
