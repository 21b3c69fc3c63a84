#!/usr/bin/env bash
# Installs what the local stack needs: Mosquitto, PostgreSQL, TimescaleDB (Apache-2 edition), and Chromium
# for the dashboard's browser tests.
# Idempotent: each step is skipped when its result is already on the machine.
set -euo pipefail

log() { printf '[provision] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
WORK_DIR="${CXP_STACK_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.stack}/build"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { log "apt-get update"; $SUDO apt-get update -qq; apt_updated=1; }; }
apt_install() { apt_update; log "apt-get install $*"; $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

# `provision.sh ha`: only what `cxp stack up --ha` adds — Patroni and etcd, both Debian packages.
if [ "${1:-}" = "ha" ]; then
  need=()
  command -v patroni >/dev/null 2>&1 || need+=(patroni)
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  exit 0
fi

pg_major() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

# 1. Mosquitto and PostgreSQL server binaries.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -n "$(pg_major)" ] && [ -x "/usr/lib/postgresql/$(pg_major)/bin/initdb" ] || need+=(postgresql)
# Headless Chromium renders the dashboard in the browser tests.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
PG_MAJOR="$(pg_major)"
EXT_DIR="/usr/share/postgresql/$PG_MAJOR/extension"

# 2. TimescaleDB: the OS package when it exists, else built from Debian's trixie source package.
if ls "$EXT_DIR"/timescaledb.control >/dev/null 2>&1; then
  log "timescaledb already installed for PostgreSQL $PG_MAJOR"
  exit 0
fi
apt_update
if apt-cache show "postgresql-$PG_MAJOR-timescaledb" >/dev/null 2>&1; then
  apt_install "postgresql-$PG_MAJOR-timescaledb"
  exit 0
fi

log "building timescaledb from source for PostgreSQL $PG_MAJOR"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME}")"
# The Debian archive this machine already uses, read from apt's own configuration.
archive="$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' \
  | awk -v c="$codename" '$2 == c && $3 == "main" {print $1; exit}')"
[ -n "$archive" ] || { log "cannot find the Debian archive for $codename in apt's sources"; exit 1; }
mkdir -p "$WORK_DIR/lists/partial"
echo "deb-src $archive trixie main" >"$WORK_DIR/trixie-src.list"
APT_SRC=(-o "Dir::Etc::sourcelist=$WORK_DIR/trixie-src.list" -o Dir::Etc::sourceparts=/dev/null
         -o "Dir::State::Lists=$WORK_DIR/lists")
$SUDO apt-get "${APT_SRC[@]}" update -qq
apt_install "postgresql-server-dev-$PG_MAJOR" cmake make gcc libc6-dev libssl-dev
cd "$WORK_DIR"
export GIT_CEILING_DIRECTORIES="$WORK_DIR"  # keep the build from reading this repo's git state
rm -rf src && mkdir src && cd src
apt-get "${APT_SRC[@]}" source --download-only timescaledb >/dev/null
tar xf timescaledb_*.orig.tar.*
cd "$(find . -maxdepth 1 -mindepth 1 -type d | head -1)"
./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DLINTER=OFF -DPG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" >/dev/null
make -C build -j"$(nproc)" >/dev/null
$SUDO make -C build install >/dev/null
log "timescaledb installed into $EXT_DIR"
