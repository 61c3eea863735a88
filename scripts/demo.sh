#!/usr/bin/env bash
# Runs a Clawrden warden on this machine with the example policy and a directory of
# shimmed tools, in the foreground. Ctrl-C stops it.
#
#   scripts/demo.sh [POLICY]
#
# Then, in another terminal, call tools through the shim:
#   PATH=$PWD/target/demo/bin:$PATH CLAWRDEN_SOCKET=$PWD/target/demo/warden.sock git status
set -euo pipefail
cd "$(dirname "$0")/.."
policy=${1:-examples/policy.yaml}
demo=$PWD/target/demo

cargo build --release --workspace --bins
release=$PWD/target/release
target/release/clawctl policy check "$policy"

mkdir -p "$demo/bin" "$demo/state"
for tool in git curl wget rm cat ls head tail grep wc echo printf true false pwd; do
    ln -sf "$release/clawrden-shim" "$demo/bin/$tool"
done

cat <<MSG
Shimmed tools are in $demo/bin. In another terminal:

    export PATH=$demo/bin:\$PATH CLAWRDEN_SOCKET=$demo/warden.sock
    echo hello            # allowed by rule read-only-tools
    git push --force      # denied: exit 126
    $release/clawctl audit verify $demo/state/audit

MSG
# The warden looks commands up in its fixed command_path (the system directories), never
# in the shims' directory. In this demo you are both the warden and the caller, so the
# commands you allow run as you, the warden's own user: --allow-run-as-warden says that
# is intended. A real deployment runs the warden as root (commands then run as their
# callers) or names an unprivileged --run-as user (README.md, "Warden reference").
exec "$release/clawrden-warden" --policy "$policy" --state-dir "$demo/state" \
    --socket "$demo/warden.sock" --executor local --exec-helper "$release/clawrden-shim" \
    --allow-run-as-warden
