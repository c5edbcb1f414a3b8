#!/usr/bin/env bash
# Fuzz every parser of peer or kernel input (issue 14), one target after the other.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Needs the nightly toolchain (AddressSanitizer) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`); the product itself builds with stable, and CI never
# runs this. Corpora grow under fuzz/corpus/TARGET (kept between runs, not committed except
# the seed-* files); a crash, timeout or OOM input lands in fuzz/artifacts/TARGET and the
# script exits 1 after the last target. The inputs of crashes fixed before
# (fuzz/regressions/TARGET/) are run first. Logs: fuzz/artifacts/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../fuzz"

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo +nightly fuzz build
mkdir -p artifacts/logs

printf '%-20s %8s %12s %8s %8s %s\n' target seconds executions cov ft findings
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/logs/$t.log"
    before=$(find "artifacts/$t" -type f | wc -l)
    rc=0
    # Inputs of crashes fixed before: each must run clean (libFuzzer runs files given alone).
    if [ -d "regressions/$t" ]; then
        cargo +nightly fuzz run "$t" regressions/"$t"/* >"artifacts/logs/$t.regressions.log" 2>&1 || rc=$?
    fi
    # -timeout: one input running 10 s is a hang; -rss_limit_mb: 2 GiB is an OOM.
    cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$((rc ? rc : $?))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    new=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
    findings="none"
    if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
        failed=1
        findings="rc=$rc, $new new artifact(s): $(grep -m1 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" || echo see log)"
    fi
    printf '%-20s %8s %12s %8s %8s %s\n' "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$findings"
done
exit "$failed"
