#!/usr/bin/env bash
# Builds everything Clawrden's tests need and runs every tier that this machine supports.
#
#   scripts/test.sh            # the whole suite
#   scripts/test.sh -E 'test(fidelity)'   # extra arguments go to cargo nextest
#
# Environment:
#   CLAWRDEN_REQUIRE_DOCKER=1   fail (instead of skip) the tests that need a Docker engine
#   CLAWRDEN_REQUIRE_BROWSER=1  fail (instead of skip) the tests that need Chromium
#   CLAWRDEN_REQUIRE_TOOLS=1    fail (instead of skip) the tests that need promtool or
#                               systemd-analyze
#   CLAWRDEN_REQUIRE_ROOT=1     fail (instead of skip) the tests that need root (other users,
#                               per-request cgroups)
#   CLAWRDEN_SCREENSHOTS=1      refresh docs/screenshots from the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

musl=x86_64-unknown-linux-musl
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$musl"; then
    echo "==> installing the $musl target (for the static shim)"
    rustup target add "$musl"
fi

echo "==> building binaries"
cargo build --workspace --bins
cargo build --release -p clawrden-shim --target "$musl"
if docker version >/dev/null 2>&1 && command -v musl-gcc >/dev/null 2>&1; then
    # The compose tests run scripts/up.sh, which builds these too: building them here, the
    # way it does (same packages, same C compiler), keeps its build a no-op inside the
    # tests' time limits.
    export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
    cargo build --locked --release --target "$musl" -p clawrden-warden -p clawctl
fi
shim="target/$musl/release/clawrden-shim"
echo "    static shim: $(stat -c %s "$shim") bytes ($shim)"

echo "==> running tests"
if cargo nextest --version >/dev/null 2>&1; then
    profile=default
    [ "${CI:-}" = "true" ] && profile=ci
    cargo nextest run --workspace --profile "$profile" --no-tests=fail "$@"
else
    cargo test --workspace -- "$@"
fi

echo "==> browser tests (dashboard)"
tests/browser/run.sh
