#!/bin/sh
# `make fuzz`: runs every fuzz target (or those named in FUZZ_TARGETS) for
# FUZZ_SECONDS each with cargo-fuzz, on the stable toolchain through
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly's -Z flags). The working
# corpus grows in fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET
# is the committed corpus that `cargo test` replays (tests/fuzz_corpus.rs).
# A crash is copied into fuzz/seeds/TARGET so it stays a test, and the run
# fails. A summary line per target goes to fuzz/runs.log.
set -eu
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-decode config passwd acl persist}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -O 2>&1 | tail -1
status=0
for t in $TARGETS; do
    mkdir -p corpus/$t artifacts/$t
    log=artifacts/$t/last-run.log
    echo "fuzz: $t for ${SECONDS_EACH}s"
    if cargo fuzz run -O $t corpus/$t seeds/$t -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
        for f in artifacts/$t/crash-* artifacts/$t/timeout-* artifacts/$t/oom-* artifacts/$t/leak-*; do
            [ -f "$f" ] && cp "$f" seeds/$t/ && echo "fuzz: $t: $f copied into seeds/$t"
        done
        grep -m1 -A15 "panicked\|ERROR: libFuzzer" "$log" || tail -20 "$log"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(sed -n 's/^#[0-9]*.*DONE *cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
    line="$(date -u +%Y-%m-%dT%H:%MZ) $t ${SECONDS_EACH}s execs=${execs:-?} cov=${cov:-?} corpus=$(ls corpus/$t | wc -l) $result"
    echo "fuzz: $line"
    echo "$line" >>runs.log
done
exit $status
