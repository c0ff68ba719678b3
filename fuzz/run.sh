#!/usr/bin/env bash
# fuzz/run.sh BUILD_FUZZ_DIR SECONDS: runs every fuzz target (make fuzz) for SECONDS on a
# working copy of its corpus (fuzz/corpus/<target>, seeded from the tests), prints what each
# did, and fails on a finding: the input that crashed is in BUILD_FUZZ_DIR/crashes/fuzz_<target>/.
# Keep it as fuzz/corpus/<target>/crash-<what> once the bug is fixed, so every later run
# (and t/fuzz_smoke.t) replays it. <target> is the file name without "fuzz_": authz, notice, ...
set -uo pipefail

dir=$1
secs=$2
cd "$(dirname "$0")/.."

found=0
for bin in "$dir"/fuzz_*; do
    [ -x "$bin" ] || continue
    t=$(basename "$bin")
    work="$dir/corpus/$t"
    crashes="$dir/crashes/$t"
    mkdir -p "$work" "$crashes"
    cp -n fuzz/corpus/"${t#fuzz_}"/* "$work"/ 2>/dev/null || true

    log="$dir/$t.log"
    "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
           -artifact_prefix="$crashes/" "$work" > "$log" 2>&1
    rc=$?

    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    corpus=$(ls "$work" | wc -l)
    if [ $rc -eq 0 ]; then
        printf '%-16s %10s runs in %ss, %s, corpus %s inputs: no finding\n' \
            "$t" "${runs:-?}" "$secs" "${cov:-cov: ?}" "$corpus"
    else
        found=1
        printf '%-16s FINDING (exit %s): see %s and %s\n' "$t" "$rc" "$log" "$crashes"
        grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log" | sed 's/^/    /'
    fi
done

exit $found
