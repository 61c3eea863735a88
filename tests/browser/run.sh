#!/usr/bin/env bash
# Browser tests of the dashboard: headless Chromium + chromedriver (Debian packages) driven
# by Python selenium against a real warden and real shim calls.
#
#   tests/browser/run.sh                 # needs target/debug binaries (cargo build --workspace --bins)
#   tests/browser/run.sh -k queue        # extra arguments go to pytest
#
# Environment:
#   CLAWRDEN_REQUIRE_BROWSER=1  fail (exit 1) instead of skipping when a tool is missing
#   CLAWRDEN_BIN_DIR=DIR        take clawrden-warden and clawrden-shim from DIR
#   CHROMIUM, CHROMEDRIVER      paths of the browser and its driver (default: from PATH)
# Ends with a pytest summary line such as `14 passed, 0 failed`.
set -uo pipefail
cd "$(dirname "$0")"
# The first Python that has both selenium and pytest: $PYTHON, python3 on PATH, or Debian's
# /usr/bin/python3 (apt-get install -y python3-selenium python3-pytest).
python=
for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import selenium, pytest' 2>/dev/null; then
        python=$candidate
        break
    fi
done

missing=()
command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1 || missing+=("chromium (apt-get install -y chromium)")
command -v "${CHROMEDRIVER:-chromedriver}" >/dev/null 2>&1 || missing+=("chromedriver (apt-get install -y chromium-driver)")
[ -n "$python" ] || missing+=("a python3 with selenium and pytest (apt-get install -y python3-selenium python3-pytest)")
if [ ${#missing[@]} -gt 0 ]; then
    reason="missing $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"
    if [ "${CLAWRDEN_REQUIRE_BROWSER:-}" = "1" ]; then
        echo "FAIL browser tests: $reason (CLAWRDEN_REQUIRE_BROWSER=1)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "SKIP browser tests: $reason"
    exit 0
fi

bins=${CLAWRDEN_BIN_DIR:-../../target/debug}
for b in clawrden-warden clawrden-shim; do
    if [ ! -x "$bins/$b" ]; then
        echo "FAIL browser tests: $bins/$b is missing; run \`cargo build --workspace --bins\` first"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

export PYTHONDONTWRITEBYTECODE=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$python" -m pytest -p no:cacheprovider -rfEs "$@" | tee "$out"
status=${PIPESTATUS[0]}
# pytest's last line, e.g. `==== 13 passed, 1 failed in 40.1s ====`.
last=$(grep -E '^=+ .* in [0-9.]+s' "$out" | tail -n 1)
count() { echo "$last" | grep -Eo "[0-9]+ ($1)" | awk '{s+=$1} END {print s+0}'; }
echo "$(count passed) passed, $(count 'failed|errors?') failed, $(count skipped) skipped"
exit "$status"
