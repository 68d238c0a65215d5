#!/bin/sh
# Entrypoint of the gradebook-postgres image (dash; no other tools but rm
# and mv). On the first start, when $PGDATA has no PG_VERSION, it creates the
# cluster: initdb (no locale, UTF8, scram-sha-256 for TCP, trust only on the
# container's own Unix socket), a login role $POSTGRES_USER with
# $POSTGRES_PASSWORD that owns the database $POSTGRES_DB, and a pg_hba.conf
# line that lets that role in, with its password, from the container's own
# networks (samenet: the compose network). The cluster is built in a
# scratch directory and moved into place only once complete, so a start
# interrupted half-way starts over. Then it execs postgres, which handles
# SIGINT (fast shutdown) and SIGTERM (smart shutdown) itself.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-gradebook}
POSTGRES_DB=${POSTGRES_DB:-gradebook}

die() {
    echo "postgres-entrypoint: $*" >&2
    exit 1
}

# Identifiers go into SQL unquoted, the password into a string literal.
for name in "$POSTGRES_USER" "$POSTGRES_DB"; do
    case $name in
    '' | [!a-z_]* | *[!a-z0-9_]*) die "POSTGRES_USER and POSTGRES_DB must match [a-z_][a-z0-9_]*, got \"$name\"" ;;
    esac
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password=${POSTGRES_PASSWORD:-}
    [ -n "$password" ] || die "POSTGRES_PASSWORD must be set to create the database"
    case $password in
    *"'"*) die "POSTGRES_PASSWORD must not contain '" ;;
    esac
    scratch=$PGDATA.initializing
    rm -rf "$scratch"
    echo "postgres-entrypoint: creating the cluster in $PGDATA (database $POSTGRES_DB, role $POSTGRES_USER)"
    initdb -D "$scratch" -U postgres --no-locale -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-instructions
    # initdb lets TCP in only from loopback; the other containers come from
    # the compose network.
    printf 'host\t%s\t%s\tsamenet\tscram-sha-256\n' "$POSTGRES_DB" "$POSTGRES_USER" >>"$scratch/pg_hba.conf"
    # Single-user mode: one statement a line, each its own transaction;
    # exit_on_error makes a failed statement fail the start.
    postgres --single -D "$scratch" -c exit_on_error=on -c jit=off template1 >/dev/null <<SQL
CREATE ROLE $POSTGRES_USER LOGIN PASSWORD '$password'
CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_USER
SQL
    mv "$scratch" "$PGDATA"
    echo "postgres-entrypoint: cluster created"
fi
unset POSTGRES_PASSWORD password

exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off "$@"
