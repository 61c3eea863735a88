#!/bin/sh
# Installs the Clawrden warden as a systemd service on a host without Docker (the `local`
# executor runs approved commands here, as their caller). Run as root; safe to run again.
#
#   contrib/systemd/install.sh --agent USER [--tools "git curl ..."] [--policy FILE]
#                              [--warden PATH] [--clawctl PATH] [--shim PATH] [--no-start]
#
# What it does (README.md, "Install on a host without Docker", explains each step):
#   1. the group clawrden-agents, with USER in it: only its members may reach the socket;
#   2. /usr/local/bin/clawrden-warden and clawctl; the static shim (also the exec-helper)
#      in /usr/local/lib/clawrden/, and /usr/local/lib/clawrden/shims/ holding one symlink
#      to it per intercepted tool (this directory goes first in USER's PATH);
#   3. /etc/clawrden/warden.yaml and policy.yaml (an existing policy is kept);
#   4. /etc/systemd/system/clawrden-warden.service, with BindPaths= set to USER's home;
#      then it enables and starts it (unless --no-start).
# Binaries default to this checkout's builds: target/release/ for the warden and clawctl,
# target/x86_64-unknown-linux-musl/release/clawrden-shim for the shim.
set -eu

PROG=install.sh
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
AGENT=""
TOOLS="cat head tail ls git curl wget npm npx pip pip3 rm"
POLICY=$ROOT/examples/policy.yaml
WARDEN=$ROOT/target/release/clawrden-warden
CLAWCTL=$ROOT/target/release/clawctl
SHIM=$ROOT/target/x86_64-unknown-linux-musl/release/clawrden-shim
START=1
GROUP=clawrden-agents
LIB=/usr/local/lib/clawrden
UNIT=/etc/systemd/system/clawrden-warden.service

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage() {
    sed -n '5,6p' "$0" | sed 's/^# *//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --agent | --tools | --policy | --warden | --clawctl | --shim)
        [ $# -ge 2 ] || usage
        case $1 in
        --agent) AGENT=$2 ;;
        --tools) TOOLS=$2 ;;
        --policy) POLICY=$2 ;;
        --warden) WARDEN=$2 ;;
        --clawctl) CLAWCTL=$2 ;;
        --shim) SHIM=$2 ;;
        esac
        shift 2
        ;;
    --no-start)
        START=0
        shift
        ;;
    *) usage ;;
    esac
done
[ -n "$AGENT" ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root"
for f in "$WARDEN" "$CLAWCTL" "$SHIM"; do
    [ -x "$f" ] || die "$f is not an executable file; build it first (cargo build --release --workspace --bins; cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl) or pass its path"
done
[ -f "$POLICY" ] || die "policy $POLICY not found"
home=$(getent passwd "$AGENT" | cut -d: -f6) || die "no user $AGENT: create the agent's account first (useradd --create-home $AGENT)"
[ -n "$home" ] || die "user $AGENT has no home directory"
case $home in
*[!A-Za-z0-9_./-]*) die "the home of $AGENT ($home) has characters this script will not put in a unit file" ;;
esac

# 1. Who may call the warden.
getent group "$GROUP" >/dev/null || groupadd --system "$GROUP"
usermod -a -G "$GROUP" "$AGENT"

# 2. Binaries and the shim directory.
install -d -m 0755 /usr/local/bin "$LIB" "$LIB/shims"
install -m 0755 "$WARDEN" /usr/local/bin/clawrden-warden
install -m 0755 "$CLAWCTL" /usr/local/bin/clawctl
install -m 0755 "$SHIM" "$LIB/clawrden-shim"
for tool in $TOOLS; do
    case $tool in
    */* | . | .. | '') die "bad tool name '$tool'" ;;
    esac
    ln -sfn ../clawrden-shim "$LIB/shims/$tool"
done

# 3. Configuration.
install -d -m 0755 /etc/clawrden
install -m 0644 "$HERE/warden.yaml" /etc/clawrden/warden.yaml
if [ -e /etc/clawrden/policy.yaml ]; then
    say "keeping the existing /etc/clawrden/policy.yaml"
else
    install -m 0644 "$POLICY" /etc/clawrden/policy.yaml
fi
/usr/local/bin/clawrden-warden check-config --config /etc/clawrden/warden.yaml >&2 ||
    die "the warden refuses /etc/clawrden/warden.yaml or its policy (see above)"

# 4. The unit, its sandbox opened onto the agent's home.
sed "s|^BindPaths=-/home/agent\$|BindPaths=-$home|" "$HERE/clawrden-warden.service" >"$UNIT.tmp"
grep -qx "BindPaths=-$home" "$UNIT.tmp" || die "clawrden-warden.service has no BindPaths= line to set"
chmod 0644 "$UNIT.tmp"
mv -f "$UNIT.tmp" "$UNIT"
if [ "$START" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now clawrden-warden.service
    # A second run picks up new binaries and config.
    systemctl restart clawrden-warden.service
fi

cat <<EOF
Installed. The warden's socket is /run/clawrden/agent/warden.sock; $AGENT reaches it after logging
in again (new group). In $AGENT's environment (e.g. ~/.profile):

    PATH=$LIB/shims:\$PATH
    CLAWRDEN_SOCKET=/run/clawrden/agent/warden.sock
    export PATH CLAWRDEN_SOCKET

Operators: clawctl --token-file /var/lib/clawrden/admin.token status (as root), or
http://127.0.0.1:8080/ with that token. Logs: journalctl -u clawrden-warden.
EOF
