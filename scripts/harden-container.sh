#!/bin/sh
# Builds a hardened Clawrden prisoner image from any base image:
#
#   scripts/harden-container.sh BASE_IMAGE [--tools "curl git ..."] [--tag TAG]
#                               [--user NAME] [--uid N] [--shim PATH]
#                               [--accept-shell-bypass]
#
# First it looks at the base image's /bin/sh (one throw-away container): a shell that runs
# `rm`, `cat` or `ls` in-process without looking at PATH (busybox built with
# FEATURE_SH_STANDALONE, as Debian's busybox-static is) would bypass every shim, in every
# shell, the agent's own included, so such a base is refused (exit 1) unless
# --accept-shell-bypass is given. A multi-call busybox's applets stay reachable as
# `busybox APPLET` without any shim: they are listed on stderr.
#
# The generated Dockerfile starts FROM BASE_IMAGE and, as root: creates the non-root user
# (uid 1000 by default) if missing, removes setuid/setgid bits from every file on the root
# filesystem, creates /run/clawrden (where the warden's socket directory is mounted) and
# /workspace (owned by the user), runs install-clawrden.sh with the static shim, then sets
# CLAWRDEN_SOCKET, USER and WORKDIR. Prints the built tag on stdout (build log on stderr).
#
# The installer and the shim stay in the image under /usr/lib/clawrden-install (root only),
# so `/usr/lib/clawrden-install/install-clawrden.sh --uninstall` works inside it.
set -eu

PROG=harden-container.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHIM=$ROOT/target/x86_64-unknown-linux-musl/release/clawrden-shim
TOOLS=""
TAG=""
USER_NAME=agent
USER_UID=1000
BASE=""
BUILD_CMD="cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl"
ACCEPT_SHELL_BYPASS=""

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $PROG BASE_IMAGE [--tools "curl git ..."] [--tag TAG] [--user NAME] [--uid N] [--shim PATH]
                          [--accept-shell-bypass]
  --tools LIST  tools to intercept (default: install-clawrden.sh's list)
  --tag TAG     tag of the hardened image (default: BASE_IMAGE's tag with -clawrden appended)
  --user NAME   the non-root user the agent runs as (default: agent)
  --uid N       its uid (and gid) when it has to be created (default: 1000)
  --shim PATH   the static shim (default: target/x86_64-unknown-linux-musl/release/clawrden-shim)
  --accept-shell-bypass
                build even when the base's /bin/sh runs applets in-process, so that
                commands run by any shell in the image bypass the shims
EOF
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --tools | --tag | --user | --uid | --shim)
        [ $# -ge 2 ] || usage
        case $1 in
        --tools) TOOLS=$2 ;;
        --tag) TAG=$2 ;;
        --user) USER_NAME=$2 ;;
        --uid) USER_UID=$2 ;;
        --shim) SHIM=$2 ;;
        esac
        shift 2
        ;;
    --accept-shell-bypass)
        ACCEPT_SHELL_BYPASS=1
        shift
        ;;
    -h | --help) usage ;;
    -*)
        printf '%s: unknown option: %s\n' "$PROG" "$1" >&2
        usage
        ;;
    *)
        [ -z "$BASE" ] || usage
        BASE=$1
        shift
        ;;
    esac
done
[ -n "$BASE" ] || usage

# Values that end up inside the Dockerfile and a shell script: keep them to safe characters.
safe() { # WHAT VALUE
    case $2 in
    *[!A-Za-z0-9._+-]*) die "$1 '$2' may contain only letters, digits and . _ + -" ;;
    esac
}
safe "--user" "$USER_NAME"
case $USER_UID in
'' | *[!0-9]*) die "--uid must be a number, got '$USER_UID'" ;;
esac
set -f
for t in $TOOLS; do
    safe "tool name" "$t"
done
set +f
case $BASE in
*[!A-Za-z0-9._/:@-]*) die "'$BASE' does not look like an image reference" ;;
esac

if [ -z "$TAG" ]; then
    case ${BASE##*/} in
    *:*) TAG=$BASE-clawrden ;;
    *) TAG=$BASE:clawrden ;;
    esac
fi

[ -f "$SHIM" ] || die "shim binary not found at $SHIM; build it with: $BUILD_CMD (after: rustup target add x86_64-unknown-linux-musl), or pass --shim PATH"
command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
docker image inspect "$BASE" >/dev/null 2>&1 || echo "$PROG: $BASE is not a local image; docker will try to pull it" >&2

CTX=$(mktemp -d "${TMPDIR:-/tmp}/clawrden-harden.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
trap 'exit 130' INT TERM

# Looks at the base image's /bin/sh and busybox, as root, without network. Prints
# `standalone` or `path` (whether the shell finds rm, cat or ls with no PATH at all),
# then `busybox=PATH` (empty when there is none), then busybox's applets, one a line.
PROBE='
if (PATH=/nonexistent; command -v rm || command -v cat || command -v ls) >/dev/null 2>&1; then
    echo standalone
else
    echo path
fi
bb=
for c in /bin/busybox /usr/bin/busybox /sbin/busybox /usr/sbin/busybox; do
    if [ -x "$c" ]; then bb=$c; break; fi
done
echo "busybox=$bb"
if [ -n "$bb" ]; then "$bb" --list 2>/dev/null; fi
'
docker run --rm --network none --user 0 --entrypoint /bin/sh "$BASE" -c "$PROBE" >"$CTX/probe" 2>"$CTX/probe.err" ||
    die "cannot look at $BASE's /bin/sh ($(tr '\n' ' ' <"$CTX/probe.err")); the image needs a /bin/sh to be hardened"
SHELL_KIND=$(sed -n 1p "$CTX/probe")
BUSYBOX=$(sed -n 's/^busybox=//p' "$CTX/probe")
if [ "$SHELL_KIND" = standalone ]; then
    if [ -z "$ACCEPT_SHELL_BYPASS" ]; then
        die "refusing $BASE: its /bin/sh runs rm, cat and ls in-process without looking at PATH (a standalone busybox shell, as Debian's busybox-static builds it), so no command a shell runs (scripts, sh -c, the agent's own shell) ever reaches a shim. Use a base whose /bin/sh is dash or bash, or a busybox built without FEATURE_SH_STANDALONE and FEATURE_PREFER_APPLETS; --accept-shell-bypass builds it anyway."
    fi
    echo "$PROG: WARNING: $BASE's /bin/sh runs applets in-process (--accept-shell-bypass): commands run by any shell in the hardened image bypass the shims" >&2
fi
if [ -n "$BUSYBOX" ]; then
    tools=$TOOLS
    [ -n "$tools" ] || tools=$(sed -n 's/^TOOLS="\(.*\)"$/\1/p' "$ROOT/install-clawrden.sh" | head -n 1)
    applets=$(sed '1,2d' "$CTX/probe" | tr '\n' ' ' | sed 's/ *$//')
    count=$(sed '1,2d' "$CTX/probe" | grep -c . || true)
    bypassed=""
    set -f
    for t in $tools; do
        case " $applets " in *" $t "*) bypassed="$bypassed $t" ;; esac
    done
    set +f
    # install-clawrden.sh never shims busybox itself (its applet symlinks need it).
    echo "$PROG: WARNING: $BUSYBOX is a multi-call binary: its $count applets stay reachable as \`busybox APPLET\` without any shim" >&2
    echo "$PROG: intercepted tools reachable that way:${bypassed:- none}" >&2
    echo "$PROG: all applets: $applets" >&2
fi

cp "$SHIM" "$CTX/clawrden-shim"
cp "$ROOT/install-clawrden.sh" "$CTX/install-clawrden.sh"
chmod 0755 "$CTX/clawrden-shim" "$CTX/install-clawrden.sh"

# Runs in the base image as root, before the tools are shimmed (it needs chmod, find, ...).
cat >"$CTX/prepare.sh" <<EOF
#!/bin/sh
set -eu
user=$USER_NAME
uid=$USER_UID
if id -u "\$user" >/dev/null 2>&1; then
    echo "user \$user exists (uid \$(id -u "\$user"))"
elif command -v useradd >/dev/null 2>&1; then
    useradd --create-home --uid "\$uid" --user-group --shell /bin/sh "\$user"
elif command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- '-D'; then
    addgroup -g "\$uid" "\$user" 2>/dev/null || addgroup "\$user"
    adduser -D -u "\$uid" -G "\$user" -s /bin/sh "\$user"
else
    echo "\$user:x:\$uid:\$uid::/home/\$user:/bin/sh" >>/etc/passwd
    echo "\$user:x:\$uid:" >>/etc/group
    mkdir -p "/home/\$user"
    chown "\$uid:\$uid" "/home/\$user"
fi
# No way back to root from inside: strip setuid and setgid bits everywhere on this filesystem.
find / -xdev -type f \\( -perm -4000 -o -perm -2000 \\) -exec chmod u-s,g-s {} +
mkdir -p /run/clawrden /workspace
chown 0:0 /run/clawrden
chmod 0755 /run/clawrden
chown "\$(id -u "\$user"):\$(id -g "\$user")" /workspace
chmod 0755 /workspace
EOF

if [ -n "$TOOLS" ]; then
    TOOLS_ARG="--tools \"$TOOLS\""
else
    TOOLS_ARG=""
fi
cat >"$CTX/Dockerfile" <<EOF
FROM $BASE
USER root
COPY clawrden-shim install-clawrden.sh prepare.sh /usr/lib/clawrden-install/
RUN chmod 0700 /usr/lib/clawrden-install && /bin/sh /usr/lib/clawrden-install/prepare.sh
RUN /bin/sh /usr/lib/clawrden-install/install-clawrden.sh --shim /usr/lib/clawrden-install/clawrden-shim $TOOLS_ARG
ENV CLAWRDEN_SOCKET=/run/clawrden/warden.sock
LABEL org.clawrden.hardened.base="$BASE" org.clawrden.hardened.tools="$TOOLS" org.clawrden.hardened.user="$USER_NAME"
USER $USER_NAME
WORKDIR /workspace
EOF

echo "$PROG: building $TAG from $BASE" >&2
docker build -t "$TAG" "$CTX" >&2 || die "docker build of $TAG from $BASE failed (see the log above)"
echo "$TAG"
