#!/bin/sh
# Starts Clawrden with docker-compose.yml: a prisoner and its warden.
#
#   scripts/up.sh           build the static binaries and the images, start, wait for /readyz
#   scripts/up.sh --down    stop and remove the containers (the volumes are kept)
#
# Builds clawrden-warden and clawrden-shim for x86_64-unknown-linux-musl, stages them (and
# install-clawrden.sh) in docker/bin/, then runs `docker compose up -d --build` (or
# docker-compose v1, whichever is installed). The prisoner is built from
# CLAWRDEN_BASE_IMAGE; when that is unset and debian:bookworm-slim is not a local image,
# the locally built clawrden-test/bookworm (scripts/images/build.sh, no registry) is used.
# Other docker-compose.yml variables (CLAWRDEN_API_PORT, ...) pass through.
set -eu

PROG=up.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=x86_64-unknown-linux-musl
PORT=${CLAWRDEN_API_PORT:-8080}

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

if docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=docker-compose
else
    die "neither the docker compose plugin nor docker-compose is installed"
fi
compose() { $COMPOSE -f "$ROOT/docker-compose.yml" "$@"; }

case ${1:-} in
--down)
    compose down
    exit 0
    ;;
'') ;;
*)
    echo "usage: $PROG [--down]" >&2
    exit 2
    ;;
esac

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup) and the $TARGET target"
say "building the static binaries ($TARGET)"
# rusqlite's bundled SQLite is C: compile it with musl-gcc unless told otherwise.
if command -v musl-gcc >/dev/null 2>&1; then
    export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
fi
(cd "$ROOT" && cargo build --release --target "$TARGET" -p clawrden-warden -p clawrden-shim) ||
    die "cargo build failed (missing target? rustup target add $TARGET; missing C compiler? apt-get install musl-tools)"
mkdir -p "$ROOT/docker/bin"
for bin in clawrden-warden clawrden-shim; do
    cp "$ROOT/target/$TARGET/release/$bin" "$ROOT/docker/bin/$bin.tmp"
    mv -f "$ROOT/docker/bin/$bin.tmp" "$ROOT/docker/bin/$bin"
done
cp "$ROOT/install-clawrden.sh" "$ROOT/docker/bin/install-clawrden.sh"

if [ -z "${CLAWRDEN_BASE_IMAGE:-}" ]; then
    if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
        CLAWRDEN_BASE_IMAGE=debian:bookworm-slim
    else
        say "debian:bookworm-slim is not a local image: using clawrden-test/bookworm (set CLAWRDEN_BASE_IMAGE to choose)"
        "$ROOT/scripts/images/build.sh" bookworm >&2 || die "scripts/images/build.sh bookworm failed"
        CLAWRDEN_BASE_IMAGE=clawrden-test/bookworm:latest
    fi
fi
export CLAWRDEN_BASE_IMAGE

say "starting (prisoner from $CLAWRDEN_BASE_IMAGE)"
compose up -d --build || die "docker compose up failed (see above)"

say "waiting for http://127.0.0.1:$PORT/readyz"
i=0
until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 120 ]; then
        compose logs --tail 50 warden >&2 || true
        die "the warden is not ready after 60 s; its log is above (compose logs warden)"
    fi
    sleep 0.5
done

warden=$(compose ps -q warden)
cat <<EOF
Clawrden is up.
  Dashboard and API: http://127.0.0.1:$PORT/
  Admin token (written on first start; the warden image has no shell, so copy it out):
    docker cp $warden:/var/lib/clawrden/admin.token - | tar -xO
  Or create a named token:
    $COMPOSE exec warden clawrden-warden token create --state-dir /var/lib/clawrden --name \$USER --scope admin
  Run as the agent:  docker exec -it ${CLAWRDEN_PRISONER_CONTAINER:-clawrden-prisoner} sh
  Stop:              scripts/up.sh --down
EOF
