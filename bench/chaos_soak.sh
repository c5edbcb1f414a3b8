#!/bin/sh
# The chaos soak of tests/tests/chaos_soak.rs, long: every role SIGKILLed at random intervals,
# the backend flapping, the journal's file system filled and freed, kmsg markers and execs
# streaming, for SECONDS (default 1200) of chaos. Needs root and deploy/ci-deps.sh's venv.
# Prints the run's summary line (the figures RELIABILITY.md records); VIGIL_SOAK_SEED repeats
# a run's random choices.
#
#   bench/chaos_soak.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
secs="${1:-1200}"
log="$(mktemp /tmp/vigil-chaos-soak.XXXXXX)"
echo "chaos soak: ${secs}s of chaos, full output in $log" >&2
# The agent under test is the release binary next to the test (tests/src/lib.rs vigil_bin).
cargo build --release --locked -p vigil-supervisor --bin vigil
status=0
VIGIL_SOAK_SECS="$secs" cargo test --release --locked -p vigil-tests --test chaos_soak \
    -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^chaos soak|^counters|^missing exec|^test result|panicked|never arrived|grew' "$log" || true
exit "$status"
