#!/bin/sh
# Temporal's schema on Postgres, run by the `temporal-schema` job (image temporalio/admin-tools) before the
# server starts: the current upstream way now that the `auto-setup` image is no longer built.
#
# Idempotent and the upgrade path too: on a database that has the schema, `update-schema` applies only the
# versions newer than the one recorded (after bumping the server and admin-tools tags together); on a fresh
# Postgres it creates both databases and sets them up from scratch.
set -eu

: "${POSTGRES_SEEDS:?must name the Postgres host}"
: "${POSTGRES_USER:?must name the Postgres user}"
: "${POSTGRES_PWD:?must be the Postgres password}"
export SQL_PASSWORD="$POSTGRES_PWD" # read by temporal-sql-tool
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12 # shipped in the admin-tools image

sql() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" "$@"
}

for pair in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
    db="${pair%%:*}"
    versioned="$SCHEMA/${pair##*:}/versioned"
    if sql --db "$db" update-schema -d "$versioned" >/dev/null 2>&1; then
        echo "$db: schema up to date"
        continue
    fi
    echo "$db: no schema yet, creating it"
    sql --db "$db" create || echo "$db: database exists"
    sql --db "$db" setup-schema -v 0.0
    sql --db "$db" update-schema -d "$versioned"
    echo "$db: schema created"
done
