#!/usr/bin/env bash
# PostgreSQL for the datastore tests: the Debian `postgresql` package, its
# cluster running on 127.0.0.1:5432, and a role `hallmark` (password
# `hallmark`, CREATEDB) that the tests use to create a database per test.
#
# Idempotent and fast when everything is in place: it only installs, creates
# or starts a cluster, or changes the role when that is missing or
# different. Runs as root. Prints one line per thing it did or found; exits
# non-zero with the reason on the first failure.
set -euo pipefail

ROLE=hallmark
PASSWORD=hallmark
HOST=127.0.0.1

say() { echo "20-postgres: $*"; }
fail() {
    echo "20-postgres: error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs packages and starts PostgreSQL)"

# Test binaries run this concurrently; one at a time may install or start.
LOCK=/run/lock/hallmark-20-postgres.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || fail "another run of this script held $LOCK for 5 minutes"

# --- package ----------------------------------------------------------------
if command -v pg_lsclusters >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    say "package present (postgresql)"
else
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y postgresql >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update >/dev/null || fail "apt-get update failed"
        apt-get install -y postgresql >/dev/null || fail "apt-get install -y postgresql failed"
    fi
fi

# --- cluster ----------------------------------------------------------------
# The packaging usually creates `main` for the installed major version; a
# machine where it was dropped gets a fresh one.
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1) || true
if [[ -z ${VERSION:-} ]]; then
    VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
    [[ -n $VERSION ]] || fail "no PostgreSQL server under /usr/lib/postgresql although the package is installed"
    say "creating cluster $VERSION/main"
    pg_createcluster "$VERSION" main >/dev/null || fail "pg_createcluster $VERSION main failed"
    read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1)
fi
if [[ $STATUS == online* ]]; then
    say "cluster $VERSION/$CLUSTER running on port $PORT"
else
    say "starting cluster $VERSION/$CLUSTER (port $PORT)"
    # Without the lock descriptor: the server would hold the lock for life.
    pg_ctlcluster "$VERSION" "$CLUSTER" start 9>&- ||
        fail "pg_ctlcluster $VERSION $CLUSTER start failed; see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
fi

# The cluster may need a moment after start before it accepts connections.
as_postgres() { runuser -u postgres -- psql --port "$PORT" -X -q -v ON_ERROR_STOP=1 -tA "$@"; }
deadline=$((SECONDS + 30))
until as_postgres -c 'SELECT 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "cluster $VERSION/$CLUSTER does not accept connections on port $PORT after 30 s"
    sleep 0.2
done

# --- role -------------------------------------------------------------------
# Checked by logging in over TCP with the password, exactly as the tests do,
# so a changed password or a pg_hba.conf without password logins shows here.
role=$(as_postgres -c "SELECT rolcanlogin::text || ' ' || rolcreatedb::text FROM pg_roles WHERE rolname = '$ROLE'")
password_works() {
    PGPASSWORD=$PASSWORD psql -X -q -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres -tA -c 'SELECT 1' >/dev/null 2>&1
}
if [[ -z $role ]]; then
    as_postgres -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null ||
        fail "CREATE ROLE $ROLE failed"
    say "created role $ROLE (LOGIN CREATEDB)"
elif [[ $role != "true true" ]] || ! password_works; then
    as_postgres -c "ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null ||
        fail "ALTER ROLE $ROLE failed"
    say "reset role $ROLE (LOGIN CREATEDB, password)"
else
    say "role $ROLE present"
fi
# DROP DATABASE ... WITH (FORCE) ends the sessions still on a test's database;
# an autovacuum worker there has no role of its own, and ending it needs
# pg_signal_backend.
as_postgres -c "GRANT pg_signal_backend TO $ROLE" >/dev/null ||
    fail "GRANT pg_signal_backend TO $ROLE failed"
password_works ||
    fail "role $ROLE cannot log in with its password on $HOST:$PORT; check pg_hba.conf of cluster $VERSION/$CLUSTER"
say "ready: postgres://$ROLE:***@$HOST:$PORT/"
