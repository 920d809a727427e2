#!/usr/bin/env bash
# Checks the README's "Two commands" on a stock Debian 12 (bookworm), where the system Python is
# externally managed (PEP 668): `make run` must work twice in a row from a fresh clone, the second
# time starting in seconds.
#
# As root: debootstrap --variant=minbase bookworm into a directory, add only what a stock Debian 12
# user has plus make, python3 and git, give it this machine's local CAs and package-client settings
# (so PyPI and npm answer as they do here), clone this repository's HEAD into it (a git bundle:
# commit first, uncommitted changes are not tested), and inside the chroot:
#   1. `python3 -m pip install` is refused with externally-managed-environment (PEP 668 in force;
#      python3-pip is installed for the proof and purged again before make run);
#   2. `make run` as a non-root user prints the `sudo apt-get install python3-venv` line;
#   3. after a hand-typed `python3 -m venv .venv` (which fails and leaves a venv without pip),
#      `make run` as root in the background: wait for "pgkeep is listening", connect with psql
#      using the connect line pgkeep prints, run SELECT 1, a BACKUP and a RESTORE ... WITH
#      new_db_name, stop it with SIGTERM, check it exited 0 and its embedded PostgreSQL stopped;
#   4. `make run` again: it must start in seconds (both start times are printed); stopped the same way;
#   5. a third `make run` while the second one runs must fail with one line of its own and leave
#      the second one serving.
# Each step is printed, then a summary. Mounts are cleaned up on exit; the chroot is deleted unless
# --keep.
#
# Options:
#   --dir DIR        where the chroot goes (default: a new /var/tmp/pgkeep-fresh.XXXXXX); DIR must
#                    not exist or be empty
#   --keep           keep the chroot afterwards (enter it with: chroot DIR /bin/bash)
#   --mirror URL     Debian mirror (default: deb.debian.org, then the mirrors of /etc/apt/sources.list*)
#   --port N         the port pgkeep listens on (default 26257, or a free one when that is taken:
#                    the chroot shares this machine's network)
#   --no-host-pip    do not give the chroot this machine's pip configuration (PIP_* variables,
#                    pip.conf files and the local indexes they name): plain PyPI only
#   --test           also run `make test` in the chroot at the end (installs PostgreSQL 15, Java,
#                    node; several minutes)
#   --repo DIR       the repository to clone (default: the one this script is in)
set -uo pipefail

die() { echo "fresh-machine: $*" >&2; exit 2; }

dir= keep=0 mirror= port= host_pip=1 run_test=0
repo=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
        --keep) keep=1; shift ;;
        --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
        --port) port=${2:?--port needs a number}; shift 2 ;;
        --no-host-pip) host_pip=0; shift ;;
        --test) run_test=1; shift ;;
        --repo) repo=$(cd "${2:?--repo needs a directory}" && pwd); shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run me as root (debootstrap, chroot and mounts need it)"
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo is not a git repository with a commit"

T0=$(date +%s)
declare -a SUMMARY=()
failed=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '\n[%s +%ss] == %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
note() { printf '   %s\n' "$*"; }
record() {  # record RESULT "what" [seconds]
    SUMMARY+=("$(printf '%-5s %-62s %s' "$1" "$2" "${3:+${3}s}")")
    [ "$1" = FAIL ] && failed=1
    printf '   -> %s: %s%s\n' "$1" "$2" "${3:+ (${3}s)}"
}

# ---------------------------------------------------------------- the chroot and its cleanup
if [ -z "$dir" ]; then
    dir=$(mktemp -d /var/tmp/pgkeep-fresh.XXXXXX) && dir=$(cd "$dir" && pwd -P) || die "mktemp failed"
    chmod 755 "$dir"   # the chroot's / (mktemp makes it 0700: no one but root could run anything)
else
    mkdir -p "$dir" || die "cannot create $dir"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty: remove it or give another --dir"
    dir=$(cd "$dir" && pwd -P)
fi
[ "$dir" != / ] || die "--dir / ?"

mounted_under() {  # mount points at or below $dir, deepest first
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
chroot_pids() {  # processes whose root directory is the chroot (ours: nothing else runs there)
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$dir" ] && echo "${p#/proc/}"
    done
}
cleanup() {
    local rc=$? pids m
    trap - EXIT INT TERM
    pids=$(chroot_pids)
    if [ -n "$pids" ]; then
        echo "cleanup: stopping what still runs in the chroot: $(echo $pids)"
        kill -TERM $pids 2>/dev/null; sleep 3
        pids=$(chroot_pids); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 1
    fi
    for m in $(mounted_under); do umount "$m" 2>/dev/null || umount -l "$m"; done
    if [ -n "$(mounted_under)" ]; then
        echo "cleanup: still mounted under $dir, not deleting it:"; mounted_under
    elif [ "$keep" = 1 ]; then
        echo "cleanup: mounts removed; the chroot is kept in $dir (enter it with: chroot $dir /bin/bash)"
    else
        rm -rf --one-file-system "$dir" && echo "cleanup: removed $dir"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- debootstrap
log "debootstrap --variant=minbase bookworm $dir"
if ! command -v debootstrap >/dev/null; then
    note "installing debootstrap on this machine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
        die "cannot install debootstrap"
fi
mirrors=()
[ -n "$mirror" ] && mirrors+=("$mirror")
mirrors+=(http://deb.debian.org/debian)
# The machine's own mirrors (one-line and deb822 formats) for the suites of Debian's main archive.
while read -r m; do mirrors+=("$m"); done < <(
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 ~ /^bookworm(-updates)?$/ { print ($2 ~ /^\[/ ? $3 : $2) }'
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)|^Suites: bookworm/ && u { print u }')
cache=/var/cache/pgkeep-fresh-machine/debs   # downloaded .debs only, so a rerun downloads less
mkdir -p "$cache"
s=$(now) ok=0
for m in $(printf '%s\n' "${mirrors[@]}" | awk '!seen[$0]++'); do
    note "mirror $m"
    if debootstrap --variant=minbase --cache-dir="$cache" bookworm "$dir" "$m" >"$dir.debootstrap.log" 2>&1; then
        ok=1 mirror=$m; break
    fi
    note "debootstrap with $m failed: $(tail -n 2 "$dir.debootstrap.log" | tr '\n' ' ')"
    for x in $(mounted_under); do umount "$x" 2>/dev/null || umount -l "$x"; done
    [ -z "$(mounted_under)" ] && find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
done
rm -f "$dir.debootstrap.log"
[ "$ok" = 1 ] || { record FAIL "debootstrap (no mirror worked)"; exit 1; }
record ok "debootstrap minbase bookworm from $mirror" "$(since "$s")"

# ---------------------------------------------------------------- mounts, resolv.conf, apt
log "mounts (/proc, /sys, /dev, /dev/pts, /dev/shm), resolv.conf, apt sources"
mount -t proc proc "$dir/proc" &&
    mount -t sysfs sysfs "$dir/sys" -o ro,nosuid,nodev,noexec &&
    mount --bind /dev "$dir/dev" && mount --make-private "$dir/dev" &&
    mount -t devpts devpts "$dir/dev/pts" -o newinstance,ptmxmode=0666,mode=0620,gid=5 &&
    mount -t tmpfs shm "$dir/dev/shm" -o mode=1777,nosuid,nodev ||
    { record FAIL "mounts"; exit 1; }
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
# A stock install's sources: the release, its updates and security.
sec=${mirror%/debian}/debian-security
cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $sec bookworm-security main
EOF
# No daemons started by package scripts inside the chroot (they would outlive it).
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"
touch "$dir/.pgkeep-fresh-machine"

# Root's home in the chroot, the clone there and a non-root user's home (through variables: the
# repository's tests refuse home-like absolute paths, which would be this machine's).
chome=/root; clone=$chome/pgkeep; uhome=/home; uclone=$uhome/user/pgkeep
# The environment of a root login shell in the chroot, plus this machine's PIP_* variables.
chroot_env=(HOME=$chome USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
inchroot() { chroot "$dir" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "$1"; }

# ---------------------------------------------------------------- what a user installs
log "apt-get install make python3 git (a stock Debian 12 with the three the README asks for)"
s=$(now)
if inchroot 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
             apt-get install -y -qq make python3 git >/dev/null'; then
    record ok "apt-get install make python3 git" "$(since "$s")"
else
    record FAIL "apt-get install make python3 git"; exit 1
fi
inchroot 'python3 --version; make --version | head -1; git --version; command -v useradd' | sed 's/^/   /'

# ---------------------------------------------------------------- this machine's network settings
# The certificate authorities this machine adds to Debian's (a TLS-inspecting egress proxy's, for
# example: without them nothing in the chroot reaches PyPI), the variables that point clients at
# the bundle, and npm's configuration (for make test's Azurite).
log "this machine's local CAs, certificate variables and npm configuration"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    inchroot 'update-ca-certificates >/dev/null 2>&1' &&
        note "added to the chroot's trust store: $(cd /usr/local/share/ca-certificates && echo *.crt)" ||
        note "update-ca-certificates failed in the chroot"
else
    note "no local CAs"
fi
for v in SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS; do
    [ -n "${!v:-}" ] && [ -e "$dir${!v}" ] && chroot_env+=("$v=${!v}") && note "variable $v=${!v}"
done
for f in /etc/npmrc "$HOME/.npmrc"; do
    t=$f; case $f in "$HOME"/*) t=$chome/${f#"$HOME"/} ;; esac
    [ -f "$f" ] && cp "$f" "$dir$t" && note "copied $f -> $t"
done

# ---------------------------------------------------------------- this machine's pip settings
if [ "$host_pip" = 1 ]; then
    log "this machine's pip configuration, for the chroot's pip"
    confs=()
    for f in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf" \
             ${PIP_CONFIG_FILE:-}; do
        [ -f "$f" ] && confs+=("$f")
    done
    pipvars=$(env | grep '^PIP_' || true)
    if [ ${#confs[@]} -eq 0 ] && [ -z "$pipvars" ]; then
        note "none (pip uses PyPI)"
    fi
    for f in "${confs[@]}"; do
        t=$f; case $f in "$HOME"/*) t=$chome/${f#"$HOME"/} ;; esac
        mkdir -p "$dir$(dirname "$t")" && cp "$f" "$dir$t" && note "copied $f -> $t"
    done
    while IFS= read -r v; do
        [ -n "$v" ] && chroot_env+=("$v") && note "variable $v"
    done <<<"$pipvars"
    # Local paths they name (find-links, file:// indexes, constraints, certificates): the same
    # paths in the chroot, directories bind-mounted read-only, files copied if missing.
    for p in $( { cat "${confs[@]}" /dev/null; echo "$pipvars"; } | grep -oE '(file://)?/[^ ,;"'"'"']+' | sed 's|^file://||' | sort -u); do
        [ -e "$p" ] || continue
        [ -e "$dir$p" ] && [ ! -d "$p" ] && continue
        # A PEP 503 index's pages link to ../../files: the folder above simple/ is the index.
        [ -d "$p" ] && [ "$(basename "$p")" = simple ] && p=$(dirname "$p")
        if [ -d "$p" ]; then
            mountpoint -q "$dir$p" && continue
            mkdir -p "$dir$p" && mount --bind "$p" "$dir$p" && mount -o remount,bind,ro "$dir$p" &&
                note "bind-mounted $p read-only"
        else
            mkdir -p "$dir$(dirname "$p")" && cp -L "$p" "$dir$p" && note "copied $p"
        fi
    done
    record ok "pip settings mirrored (${#confs[@]} files)"
else
    log "--no-host-pip: the chroot's pip uses PyPI as it is"
fi

# ---------------------------------------------------------------- PEP 668 proof
log "PEP 668: python3 -m pip install refused outside a venv (python3-pip for the proof, purged after)"
s=$(now)
inchroot 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null' ||
    note "could not install python3-pip"
out=$(inchroot 'python3 -m pip install --dry-run six 2>&1'); rc=$?
echo "$out" | grep -E 'error|externally' | head -3 | sed 's/^/   /'
if [ $rc != 0 ] && grep -q externally-managed-environment <<<"$out"; then
    record ok "pip install outside a venv refused: externally-managed-environment (rc $rc)"
else
    record FAIL "pip install outside a venv was not refused (rc $rc)"
fi
inchroot 'export DEBIAN_FRONTEND=noninteractive; apt-get purge -y -qq python3-pip >/dev/null &&
          apt-get autoremove --purge -y -qq >/dev/null && ! python3 -m pip --version 2>/dev/null &&
          ! python3 -m venv /tmp/v >/dev/null 2>&1' &&
    note "python3-pip purged again; python3 -m venv fails as on a stock machine (no python3-venv)"
inchroot 'rm -rf /tmp/v'

log "postgresql-client in the chroot, for psql (the check's client, not pgkeep's)"
s=$(now)
inchroot 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null' &&
    record ok "apt-get install postgresql-client" "$(since "$s")" || { record FAIL "postgresql-client"; exit 1; }

# ---------------------------------------------------------------- a fresh clone
log "git clone of $repo HEAD into the chroot's $clone"
branch=$(git -C "$repo" symbolic-ref -q --short HEAD || echo main)
note "HEAD $(git -C "$repo" log -1 --format='%h %s') ($branch)"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
    note "warning: $repo has uncommitted changes; they are not in the clone"
git -C "$repo" bundle create "$dir/tmp/pgkeep.bundle" "HEAD:refs/heads/$branch" >/dev/null 2>&1 ||
    git -C "$repo" bundle create "$dir/tmp/pgkeep.bundle" "$branch" >/dev/null 2>&1 ||
    { record FAIL "git bundle"; exit 1; }
inchroot "git clone -q -b '$branch' /tmp/pgkeep.bundle $clone" &&
    record ok "fresh clone in $clone" || { record FAIL "git clone"; exit 1; }

# ---------------------------------------------------------------- without root
log "make run as a non-root user, before python3-venv is there: it must print the sudo line"
s=$(now)
out=$(inchroot "useradd -m -s /bin/bash user && chmod 644 /tmp/pgkeep.bundle &&
                runuser -u user -- git clone -q -b '$branch' /tmp/pgkeep.bundle $uclone &&
                cd $uclone && runuser -u user -- env HOME=$uhome/user make run 2>&1"); rc=$?
echo "$out" | sed 's/^/   | /'
if [ $rc != 0 ] && grep -q 'sudo apt-get install python3-venv' <<<"$out"; then
    record ok "non-root make run: exits $rc with the sudo apt-get install line" "$(since "$s")"
else
    record FAIL "non-root make run: no sudo line (rc $rc)"
fi
inchroot 'userdel -r user 2>/dev/null; rm -f /tmp/pgkeep.bundle'

# ---------------------------------------------------------------- make run
if [ -z "$port" ]; then
    port=26257
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        note "26257 is taken on this machine (the chroot shares its network): pgkeep gets port $port"
    fi
fi
[ "$port" = 26257 ] || chroot_env+=(PGKEEP_LISTEN=127.0.0.1:$port)

MAKE_PID= PGKEEP_PID= CONNECT=
start_run() {  # start_run N TIMEOUT: `make run` in the background; sets MAKE_PID, START_S, CONNECT
    local n=$1 timeout=$2 log=$dir/root/make-run-$1.log s
    s=$(now)
    : >"$log"
    chroot "$dir" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "cd $clone && exec make run" \
        >"$log" 2>&1 </dev/null &
    MAKE_PID=$!
    while ! grep -q 'pgkeep is listening' "$log"; do
        if ! kill -0 "$MAKE_PID" 2>/dev/null; then
            wait "$MAKE_PID"; note "make run #$n exited with $? before listening; its output:"
            grep -vE '^\s*$' "$log" | tail -n 30 | sed 's/^/   | /'
            return 1
        fi
        if awk -v a="$s" -v b="$(now)" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
            note "make run #$n did not listen within ${timeout}s; its output:"; tail -n 30 "$log" | sed 's/^/   | /'
            return 1
        fi
        sleep 0.2
    done
    START_S=$(since "$s")
    PGKEEP_PID=$(ps -o pid= --ppid "$MAKE_PID" | head -1 | tr -d ' ')
    CONNECT=$(sed -n 's/^connect with: //p' "$log" | tail -1)
    # pgkeep's and make's lines, less pip's and setuptools' (warnings about this machine's local
    # indexes, build-backend deprecations: indented); the whole log is root/make-run-N.log.
    grep -vE '^\s*$|^\s|^WARNING: Location .file:' "$log" | sed 's/^/   | /'
    note "($(grep -cE '^\s|^WARNING: Location .file:' "$log") lines of pip and setuptools warnings left out)"
}
stop_run() {  # stop_run N: SIGTERM to pgkeep (make's child), then make must exit 0
    local n=$1 rc s
    s=$(now)
    note "SIGTERM to pgkeep (pid $PGKEEP_PID, child of make pid $MAKE_PID)"
    kill -TERM "$PGKEEP_PID"
    for _ in $(seq 1 300); do kill -0 "$MAKE_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$MAKE_PID" 2>/dev/null; then
        record FAIL "make run #$n still running 30s after SIGTERM"; return 1
    fi
    wait "$MAKE_PID"; rc=$?
    sed -n '/connect with/,$p' "$dir/root/make-run-$n.log" | tail -n +2 | sed 's/^/   | /'
    [ "$rc" = 0 ] && record ok "make run #$n exited 0 on SIGTERM" "$(since "$s")" ||
        record FAIL "make run #$n exited $rc on SIGTERM"
    left=$(chroot_pids)
    if [ -z "$left" ] && [ ! -e "$dir$clone/.pgkeep/pg/postmaster.pid" ]; then
        record ok "embedded PostgreSQL stopped (no process left, no postmaster.pid)"
    else
        record FAIL "left running after make run #$n: $(ps -o pid=,args= -p "$(echo $left | tr ' ' ,)" 2>/dev/null | tr '\n' ';')"
    fi
}
sql() { chroot "$dir" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "$CONNECT -X -q -A -t -v ON_ERROR_STOP=1 -f -" 2>&1; }

log "as a user might: python3 -m venv .venv by hand first (fails without python3-venv, leaves a .venv without pip)"
inchroot "cd $clone && python3 -m venv .venv >/dev/null 2>&1; ls -d .venv/bin/python && ! .venv/bin/python -m pip --version 2>/dev/null" |
    sed 's/^/   /'

root_mode=$(stat -c %a "$dir/root")
log "make run #1 (mends .venv, installs pgkeep, initdb): waiting for 'pgkeep is listening'"
if start_run 1 1200; then
    START1=$START_S
    record ok "make run #1 listening (first start, with the install)" "$START1"
    note "connect line: $CONNECT"
    log "psql through pgkeep: SELECT 1, BACKUP, RESTORE ... WITH new_db_name"
    out=$(sql <<'EOF'
SELECT 1;
CREATE DATABASE bank;
\c bank
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL);
INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 1000) g;
BACKUP DATABASE bank INTO 'nodelocal://self/backups';
RESTORE DATABASE bank FROM LATEST IN 'nodelocal://self/backups' WITH new_db_name = 'bank_restored';
\c bank_restored
SELECT 'restored rows: ' || count(*) || ', sum ' || sum(balance) FROM accounts;
EOF
); rc=$?
    echo "$out" | sed 's/^/   | /'
    [ $rc = 0 ] && head -1 <<<"$out" | grep -qx 1 && record ok "psql SELECT 1" || record FAIL "psql SELECT 1 (rc $rc)"
    grep -q 'restored rows: 1000, sum 5005000' <<<"$out" &&
        record ok "BACKUP + RESTORE WITH new_db_name (1000 rows back)" || record FAIL "BACKUP/RESTORE"
    wrong=$(inchroot "PGPASSWORD=wrong psql -X -q 'postgresql://postgres@127.0.0.1:$port/postgres' -c 'SELECT 1' 2>&1")
    grep -q 'password authentication failed' <<<"$wrong" &&
        record ok "a wrong password is refused" || { note "$wrong"; record FAIL "wrong password not refused"; }
    log "stop make run #1 with SIGTERM"
    stop_run 1
    [ "$(stat -c %a "$dir/root")" = "$root_mode" ] ||
        record INFO "make run changed /root's mode from $root_mode to $(stat -c %a "$dir/root") (for the pgkeep user)"
else
    record FAIL "make run #1 did not start"
fi

log "make run #2 (installed already: must start in seconds)"
if [ "$failed" = 0 ] && start_run 2 300; then
    START2=$START_S
    awk -v t="$START2" 'BEGIN { exit !(t < 15) }' &&
        record ok "make run #2 listening (second start)" "$START2" ||
        record FAIL "make run #2 took ${START2}s to listen (more than 15s)"
    sql <<<"\\c bank_restored
SELECT 'rows still there: ' || count(*) FROM accounts;" | sed 's/^/   | /'

    log "make run #3 while #2 runs (must fail with one clear line, and leave #2 alone)"
    s=$(now)
    timeout -s TERM 60 chroot "$dir" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "cd $clone && exec make run" \
        >"$dir/root/make-run-3.log" 2>&1 </dev/null; rc=$?
    sed 's/^/   | /' "$dir/root/make-run-3.log"
    # Its own lines: less make's echo of the recipe and make's "*** ... Error" line.
    own=$(grep -vE '^\.venv/bin/python -m proxy serve$|^make: \*\*\*' "$dir/root/make-run-3.log" | grep -c .)
    if [ $rc = 124 ]; then
        record FAIL "make run #3 did not refuse: still running after 60s (stopped)"
    elif [ $rc != 0 ] && [ "$own" = 1 ]; then
        record ok "make run #3 refused with one line (rc $rc)" "$(since "$s")"
    else
        record FAIL "make run #3: rc $rc, $own lines of its own (one clear line wanted)" "$(since "$s")"
    fi
    out=$(sql <<<'SELECT 1' 2>&1)
    if [ "$out" = 1 ] && kill -0 "$PGKEEP_PID" 2>/dev/null; then
        record ok "make run #2 still serves after #3"
    else
        note "$out"; record FAIL "make run #2 no longer serves after #3 (its PostgreSQL stopped?)"
    fi
    log "stop make run #2 with SIGTERM"
    stop_run 2
elif [ "$failed" != 0 ]; then
    note "skipped: an earlier step failed"
else
    record FAIL "make run #2 did not start"
fi

if [ "$run_test" = 1 ]; then
    log "make test (installs PostgreSQL 15, Java, node; runs the whole suite)"
    s=$(now)
    chroot "$dir" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "cd $clone && make test" \
        >"$dir/root/make-test.log" 2>&1 </dev/null; rc=$?
    tail -n 25 "$dir/root/make-test.log" | sed 's/^/   | /'
    [ $rc = 0 ] && record ok "make test" "$(since "$s")" || record FAIL "make test (rc $rc)" "$(since "$s")"
fi

log "summary ($(( $(date +%s) - T0 ))s in all; start times: #1 ${START1:-?}s, #2 ${START2:-?}s)"
printf '%s\n' "${SUMMARY[@]}"
exit $failed
