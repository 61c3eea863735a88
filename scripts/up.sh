#!/bin/sh
# Starts Clawrden with docker-compose.yml (a prisoner and its warden) on a machine that has
# rustup and Docker with compose (the v2 plugin `docker compose` or v1 `docker-compose`),
# and sets up everything else itself:
#
#   scripts/up.sh             set up, build, start, wait for /readyz, print the login
#   scripts/up.sh --metrics   the same, plus Prometheus with docker/prometheus/alerts.yml
#   scripts/up.sh --down      stop and remove the containers (the volumes are kept)
#
# Set-up, each step only when needed:
#   1. system packages: curl and musl-tools (musl-gcc compiles the bundled SQLite), and
#      debootstrap when a base image has to be built locally. As root it installs them
#      with apt-get; otherwise it prints the exact command and stops;
#   2. the Rust target x86_64-unknown-linux-musl (rustup target add);
#   3. base images: it tries `docker pull debian:bookworm-slim` (and prom/prometheus with
#      --metrics). When no registry answers it uses a local copy of that image, or builds
#      one with scripts/images/build.sh (debootstrap, as root; cached in
#      /var/cache/clawrden-test).
# Then it builds the static binaries (warden, shim, clawctl), stages them in docker/bin/,
# runs `compose up -d --build`, waits for /readyz and copies the admin token into a file
# that only you can read. The token itself is never printed.
#
# Environment: docker-compose.yml's variables pass through (CLAWRDEN_BASE_IMAGE,
# CLAWRDEN_API_PORT, CLAWRDEN_PRISONER_CONTAINER, ...; COMPOSE_PROJECT_NAME), and
#   CLAWRDEN_TOKEN_DIR      where the admin token is copied (~/.config/clawrden)
#   CLAWRDEN_PULL_TIMEOUT   seconds one `docker pull` may take (300)
set -eu

PROG=up.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=x86_64-unknown-linux-musl
PORT=${CLAWRDEN_API_PORT:-8080}
PROM_PORT=${CLAWRDEN_PROMETHEUS_PORT:-9090}
PULL_TIMEOUT=${CLAWRDEN_PULL_TIMEOUT:-300}
# debootstrap and other administration tools live in the sbin directories.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

usage() {
    echo "usage: scripts/up.sh [--metrics | --down]" >&2
    exit 2
}

METRICS=0
DOWN=0
case $# in
0) ;;
1)
    case $1 in
    --metrics) METRICS=1 ;;
    --down) DOWN=1 ;;
    *) usage ;;
    esac
    ;;
*) usage ;;
esac

# Installs the packages that provide missing commands: `need_packages CMD:PACKAGE...`.
# As root with apt-get, it installs them; otherwise it prints the exact command and stops.
need_packages() {
    missing=""
    for pair in "$@"; do
        have "${pair%%:*}" || missing="$missing ${pair#*:}"
    done
    missing=${missing# }
    [ -n "$missing" ] || return 0
    if ! have apt-get; then
        die "missing packages: $missing; install them with your system's package manager, then run scripts/up.sh again"
    fi
    if ! is_root; then
        say "missing packages: $missing; install them as root, then run scripts/up.sh again:"
        printf '    apt-get update && apt-get install -y %s\n' "$missing" >&2
        exit 1
    fi
    say "installing $missing (apt-get)"
    # shellcheck disable=SC2086 # one word per package
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing; } </dev/null >&2 ||
        die "apt-get install $missing failed (see above)"
}

# --- 1. system packages --------------------------------------------------------------
if [ "$DOWN" = 0 ]; then
    need_packages curl:curl musl-gcc:musl-tools
fi

# --- 2. Docker and compose -------------------------------------------------------------
have docker || die "docker not found: install Docker Engine and compose (Debian: apt-get install docker.io docker-compose), then run scripts/up.sh again"
if ! err=$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
    die "the Docker engine does not answer ($(printf '%s' "$err" | tail -n 1)): is it running, and may you use it (root or the docker group)?"
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
elif have docker-compose; then
    COMPOSE=docker-compose
else
    die "neither the docker compose plugin nor docker-compose is installed (Debian: apt-get install docker-compose)"
fi
# The metrics profile is always named, so --down also removes Prometheus.
compose() { $COMPOSE -f "$ROOT/docker-compose.yml" --profile metrics "$@"; }

if [ "$DOWN" = 1 ]; then
    compose down
    exit 0
fi

# --- 3. the Rust target ------------------------------------------------------------------
cd "$ROOT"
have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs), then run scripts/up.sh again"
if have rustup; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        say "adding the Rust target $TARGET (rustup target add)"
        rustup target add "$TARGET" >&2 || die "rustup target add $TARGET failed (see above)"
    fi
elif [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; then
    die "the Rust target $TARGET is missing and there is no rustup to add it: install Rust with rustup (https://rustup.rs)"
fi

# --- 4. base images: a registry if one answers, else local ------------------------------
# Succeeds when `docker pull REF` works, or when it does not but REF is a local image.
pull_or_local() {
    say "pulling $1"
    if out=$(timeout "$PULL_TIMEOUT" docker pull --quiet "$1" 2>&1); then
        return 0
    fi
    reason=$(printf '%s\n' "$out" | tail -n 1)
    if docker image inspect "$1" >/dev/null 2>&1; then
        say "cannot pull $1 ($reason); using the local copy"
        return 0
    fi
    say "cannot pull $1 ($reason)"
    return 1
}

LOCAL_IMAGES=""
if [ -z "${CLAWRDEN_BASE_IMAGE:-}" ]; then
    if pull_or_local debian:bookworm-slim; then
        CLAWRDEN_BASE_IMAGE=debian:bookworm-slim
    else
        CLAWRDEN_BASE_IMAGE=clawrden-test/bookworm:latest
        LOCAL_IMAGES=bookworm
    fi
fi
if [ "$METRICS" = 1 ] && [ -z "${CLAWRDEN_PROMETHEUS_IMAGE:-}" ]; then
    if pull_or_local prom/prometheus; then
        CLAWRDEN_PROMETHEUS_IMAGE=prom/prometheus
    else
        CLAWRDEN_PROMETHEUS_IMAGE=clawrden-test/prometheus:latest
        LOCAL_IMAGES="$LOCAL_IMAGES prometheus"
    fi
fi
export CLAWRDEN_BASE_IMAGE
[ "$METRICS" = 0 ] || export CLAWRDEN_PROMETHEUS_IMAGE
for name in $LOCAL_IMAGES; do
    if is_root; then
        need_packages debootstrap:debootstrap
        say "no registry: using clawrden-test/$name, built here (scripts/images/build.sh $name)"
        "$ROOT/scripts/images/build.sh" "$name" >&2 || die "scripts/images/build.sh $name failed (see above)"
    elif docker image inspect "clawrden-test/$name:latest" >/dev/null 2>&1; then
        say "using the local clawrden-test/$name (as root, scripts/images/build.sh $name refreshes it)"
    else
        die "no registry answers and clawrden-test/$name is not built: run scripts/up.sh as root once (it builds the image with debootstrap), or set CLAWRDEN_BASE_IMAGE to an image you have"
    fi
done

# --- 5. the static binaries --------------------------------------------------------------
say "building the static binaries ($TARGET, release)"
# rusqlite's bundled SQLite is C: compile it with musl-gcc unless told otherwise.
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
# The shim on its own, so that it is the same build as `cargo build -p clawrden-shim`
# (built together with the warden, it would get the warden's dependency features).
{ cargo build --locked --release --target "$TARGET" -p clawrden-shim &&
    cargo build --locked --release --target "$TARGET" -p clawrden-warden -p clawctl; } >&2 ||
    die "cargo build failed (see above)"
target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release=$target_dir/$TARGET/release
mkdir -p "$ROOT/docker/bin"
for bin in clawrden-warden clawrden-shim; do
    cp "$release/$bin" "$ROOT/docker/bin/$bin.tmp"
    mv -f "$ROOT/docker/bin/$bin.tmp" "$ROOT/docker/bin/$bin"
done
cp "$ROOT/install-clawrden.sh" "$ROOT/docker/bin/install-clawrden.sh"

# A prisoner container of another name needs a warden config that names it.
if [ -n "${CLAWRDEN_PRISONER_CONTAINER:-}" ] && [ -z "${CLAWRDEN_WARDEN_CONFIG:-}" ]; then
    case $CLAWRDEN_PRISONER_CONTAINER in
    [!A-Za-z0-9]* | *[!A-Za-z0-9_.-]*)
        die "CLAWRDEN_PRISONER_CONTAINER='$CLAWRDEN_PRISONER_CONTAINER' is not a container name ([A-Za-z0-9][A-Za-z0-9_.-]*)"
        ;;
    esac
    # One file per name: the running warden of another stack keeps its own.
    config=$ROOT/docker/bin/warden-$CLAWRDEN_PRISONER_CONTAINER.yaml
    sed "s/^\(    container:\) clawrden-prisoner\$/\1 $CLAWRDEN_PRISONER_CONTAINER/" \
        "$ROOT/docker/warden.yaml" >"$config.tmp"
    grep -qx "    container: $CLAWRDEN_PRISONER_CONTAINER" "$config.tmp" ||
        die "docker/warden.yaml has no line '    container: clawrden-prisoner' to rename"
    mv -f "$config.tmp" "$config"
    CLAWRDEN_WARDEN_CONFIG=$config
    export CLAWRDEN_WARDEN_CONFIG
fi

# --- 6. start --------------------------------------------------------------------------
say "starting (prisoner from $CLAWRDEN_BASE_IMAGE)"
if [ "$METRICS" = 1 ]; then
    compose up -d --build >&2 || die "$COMPOSE up failed (see above)"
else
    $COMPOSE -f "$ROOT/docker-compose.yml" up -d --build >&2 || die "$COMPOSE up failed (see above)"
fi

wait_for() { # URL WHAT SERVICE
    say "waiting for $1"
    i=0
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge 120 ]; then
            compose logs --tail 50 "$3" >&2 || true
            die "$2 is not ready after 60 s; its log is above ($COMPOSE logs $3)"
        fi
        sleep 0.5
    done
}
wait_for "http://127.0.0.1:$PORT/readyz" "the warden" warden
[ "$METRICS" = 0 ] || wait_for "http://127.0.0.1:$PROM_PORT/-/ready" Prometheus prometheus

# --- 7. the login ----------------------------------------------------------------------
# The token goes to a file of mode 0600, not to the terminal: scrollback, screen sharing
# and CI logs keep what is printed.
warden=$(compose ps -q warden)
token_dir=${CLAWRDEN_TOKEN_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/clawrden}
token_file=$token_dir/admin-$PORT.token
copied=0
if (umask 077 && mkdir -p "$token_dir" &&
    docker cp "$warden:/var/lib/clawrden/admin.token" - | tar -xO >"$token_file.tmp" &&
    [ -s "$token_file.tmp" ] && mv -f "$token_file.tmp" "$token_file") 2>/dev/null; then
    copied=1
else
    rm -f "$token_file.tmp"
fi

clawctl=$release/clawctl
echo "Clawrden is up."
echo "  Dashboard:  http://127.0.0.1:$PORT/"
if [ "$copied" = 1 ]; then
    echo "  Log in with the admin token in $token_file (mode 0600, not shown here); to paste it:"
    echo "      cat $token_file"
    echo "  clawctl:    export CLAWRDEN_URL=http://127.0.0.1:$PORT CLAWRDEN_TOKEN_FILE=$token_file"
else
    echo "  The warden's admin.token is gone (deleted after first use?); create a login token:"
    echo "      $COMPOSE exec warden clawrden-warden token create --state-dir /var/lib/clawrden --name \$USER --scope admin"
    echo "  clawctl:    export CLAWRDEN_URL=http://127.0.0.1:$PORT CLAWRDEN_TOKEN=<that token>"
fi
echo "              $clawctl queue"
echo "  The agent:  docker exec -it ${CLAWRDEN_PRISONER_CONTAINER:-clawrden-prisoner} sh"
if [ "$METRICS" = 1 ]; then
    echo "  Prometheus: http://127.0.0.1:$PROM_PORT/ (alerts: http://127.0.0.1:$PROM_PORT/alerts)"
fi
echo "  Stop:       scripts/up.sh --down"
