#!/usr/bin/env bash
# Builds and runs iom's fuzz targets (fuzz/, its own cargo workspace) with
# cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the -Z flags
# cargo-fuzz passes), seeding the corpora from iom's own writers first.
#
#   deploy/fuzz.sh                      # every target, 600 s each, 2 at a time
#   deploy/fuzz.sh edl scanlist         # just these
#   FUZZ_SECONDS=60 deploy/fuzz.sh      # shorter runs
#   FUZZ_JOBS=1 deploy/fuzz.sh          # one at a time
#   FUZZ_SANITIZER=none deploy/fuzz.sh  # no ASan: about twice the executions
#   deploy/fuzz.sh --cmin               # minimise the corpora afterwards
#
# Needs cargo-fuzz 0.13 (`cargo install cargo-fuzz --locked`). Logs go to
# fuzz/logs/<target>.log; crashes to fuzz/artifacts/<target>/ (not committed:
# each one found becomes a regression test under tests/ when fixed).
#
# The sanitizer defaults to cargo-fuzz's `address` (ASan). The parsers are safe
# Rust, so what is mostly found is panics (overflow included: fuzz builds keep
# debug assertions), aborts, runaway memory and time; `none` runs faster.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here/fuzz"

seconds="${FUZZ_SECONDS:-600}"
jobs="${FUZZ_JOBS:-2}"
sanitizer="${FUZZ_SANITIZER:-address}"
rss_mb="${FUZZ_RSS_MB:-2048}"
cmin=0
targets=()
for a in "$@"; do
    case "$a" in
        --cmin) cmin=1 ;;
        *) targets+=("$a") ;;
    esac
done
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(edl dpx_header scanlist task_message tcl_quoting)
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/fuzz/target}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }

nice -n 10 cargo fuzz build -O -s "$sanitizer"
# Seeds: real files from iom's writers (kept beside what the fuzzer found).
"$CARGO_TARGET_DIR"/x86_64-unknown-linux-gnu/release/seeds corpus

mkdir -p logs
run() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    nice -n 10 cargo fuzz run -O -s "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
        -print_final_stats=1 >"logs/$t.log" 2>&1 \
        && echo "$t: done" || echo "$t: FAILED (see fuzz/logs/$t.log)"
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "logs/$t.log" | sed "s/^/$t: /" || true
    echo "$t: corpus $(ls "corpus/$t" | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
}

status=0
running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
done
wait || status=1

if [ "$cmin" -eq 1 ]; then
    for t in "${targets[@]}"; do
        nice -n 10 cargo fuzz cmin -O -s "$sanitizer" "$t" "corpus/$t" -- -rss_limit_mb="$rss_mb" >"logs/$t.cmin.log" 2>&1 || status=1
        echo "$t: corpus after cmin $(ls "corpus/$t" | wc -l) files"
    done
fi
ls artifacts/*/ 2>/dev/null | grep -E 'crash|oom|timeout' && { echo "crashes found: see fuzz/artifacts" >&2; status=1; }
exit $status
