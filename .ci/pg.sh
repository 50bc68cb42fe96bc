#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests.
#
#   .ci/pg.sh start DIR   install PostgreSQL from Debian's packages if needed, create a
#                         cluster in DIR (reused if DIR already holds one), start it on
#                         127.0.0.1 on a free port and print ONE line on stdout: the
#                         maintenance URL postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
#   .ci/pg.sh stop DIR    stop that cluster (pg_ctl stop -m fast); nothing else is touched
#
# Layout of DIR: data/ (the cluster), server.log, the Unix socket (.s.PGSQL.PORT) and
# initdb.log / apt.log. Trust authentication, fsync off: for tests only, never for data
# that matters. Everything but the URL goes to stderr or to those logs.
set -euo pipefail
export LC_ALL=C

die() { echo "pg.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Run a command as the postgres OS user when we are root (initdb and postgres refuse
# root); as ourselves otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The bin directory of the newest installed PostgreSQL major version that has initdb,
# pg_ctl and postgres (Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin).
find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5nr); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and we are not root to install it"
    echo "pg.sh: installing PostgreSQL from Debian's packages..." >&2
    # Don't let the package create (and possibly start) the default 'main' cluster on
    # port 5432: we only ever use our own throwaway clusters.
    if [ ! -e /etc/postgresql-common/createcluster.d/no-main-cluster.conf ]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf
    fi
    local log="$dir/apt.log"
    if ! { apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               -o DPkg::Lock::Timeout=120 --no-install-recommends postgresql; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get install postgresql failed (log: $log)"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    local data="$dir/data" log="$dir/server.log"

    local bindir
    if ! bindir=$(find_bindir); then
        install_postgres
        bindir=$(find_bindir) || die "no initdb under /usr/lib/postgresql/*/bin after installing postgresql"
    fi

    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' OS user to run the cluster as"
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    # The server's working directory and every parent of DIR must be reachable by postgres.
    cd "$dir"
    as_pg test -w "$dir" || die "$dir is not writable by the postgres user (is a parent directory private?)"

    # Already running (start called twice on the same DIR): print its URL again.
    if [ -f "$data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        echo "postgresql+asyncpg://postgres@127.0.0.1:$(sed -n 4p "$data/postmaster.pid")/postgres"
        return 0
    fi

    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"  # a half-made cluster from an interrupted run
        if ! as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
                --no-sync >"$dir/initdb.log" 2>&1; then
            cat "$dir/initdb.log" >&2
            die "initdb failed"
        fi
        # trust (above) covers local and 127.0.0.1 / ::1; listen on 127.0.0.1 only.
        cat >>"$data/postgresql.conf" <<EOF

# --- throwaway test cluster (.ci/pg.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
include_if_exists = 'port.conf'
EOF
    fi

    # A free port, picked afresh on every start; retried if someone takes it meanwhile.
    local attempt port
    for attempt in 1 2 3; do
        port=$(free_port)
        as_pg sh -c "echo 'port = $port' > '$data/port.conf'"
        if as_pg "$bindir/pg_ctl" start -w -t 60 -s -D "$data" -l "$log" >&2; then
            echo "postgresql+asyncpg://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
        if ! tail -n 20 "$log" | grep -q "could not bind\|Address already in use"; then
            break
        fi
        echo "pg.sh: port $port was taken, trying another" >&2
    done
    tail -n 20 "$log" >&2
    die "PostgreSQL did not start (log: $log)"
}

stop() {
    local data="$dir/data"
    if [ ! -f "$data/postmaster.pid" ]; then
        echo "pg.sh: no cluster running in $dir" >&2
        return 0
    fi
    local bindir
    bindir=$(find_bindir) || die "no pg_ctl under /usr/lib/postgresql/*/bin"
    cd "$dir"
    as_pg "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 60 -s
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
