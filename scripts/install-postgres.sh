#!/usr/bin/env bash
# Install the PostgreSQL server binaries (initdb, pg_ctl, postgres) that the
# audit store's contract tests start in a temporary folder. Does nothing when
# they are already installed. Needs root and Debian's apt.
set -euo pipefail

have_server() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_server; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-postgres: initdb not found; run as root to install the" \
        "postgresql package, or the PostgreSQL contract tests are skipped" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# The package's post-install step creates and starts a cluster on port 5432;
# the tests use their own, so stop it again if it was started.
apt-get install -y -q --no-install-recommends postgresql
if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in /etc/postgresql/*/main; do
        [ -d "$cluster" ] || continue
        version=$(basename "$(dirname "$cluster")")
        pg_ctlcluster "$version" main stop 2>/dev/null || true
    done
fi
have_server
