#!/bin/sh
# Runs each libFuzzer target given (config, domain, journal: build/fuzz/fuzz_TARGET) for SECONDS,
# prints its executions and coverage, and exits 1 if any found a crash, a leak, undefined
# behaviour, a timeout or an out-of-memory.
#
# The seeds in tests/fuzz/corpus/TARGET/ are only read: libFuzzer writes the inputs it finds
# to its first corpus directory, build/fuzz/corpus/TARGET/, which later runs start from too.
# A failing input is saved as build/fuzz/artifacts/TARGET-crash-HASH (or leak-, timeout-, oom-);
# once fixed, copy it into the tree's corpus, so every run tries it again.
set -u

if [ $# -lt 2 ]; then
        echo "usage: $0 SECONDS TARGET..." >&2
        exit 2
fi
seconds=$1
shift
here=$(dirname "$0")
# Leaks are bugs too; UBSan's findings stop the target with a trace (built with
# -fno-sanitize-recover, this only adds the trace).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

failed=0
for t in "$@"; do
        bin=build/fuzz/fuzz_$t
        seeds=$here/corpus/$t
        work=build/fuzz/corpus/$t
        log=build/fuzz/$t.log
        mkdir -p "$work" build/fuzz/artifacts
        dict=
        [ -f "$here/$t.dict" ] && dict=-dict=$here/$t.dict
        # -timeout: one input running for seconds is a hang (the hook has no deadline of its own
        # while reading); -max_len: far above any real kvm.conf, journal or domain with hostdevs.
        # shellcheck disable=SC2086
        "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
                -print_final_stats=1 -artifact_prefix="build/fuzz/artifacts/$t-" $dict \
                "$work" "$seeds" >"$log" 2>&1
        rc=$?
        # The last status line ("#N DONE cov: X ft: Y corp: ...") and the final stats.
        status=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        cov=$(echo "$status" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
        ft=$(echo "$status" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
        corp=$(echo "$status" | sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
        summary="${execs:-?} execs in ${seconds} s (${speed:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
        if [ "$rc" -ne 0 ]; then
                echo "FAIL fuzz $t: stopped after ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?} (exit status $rc);" \
                     "once fixed, add the input saved below to $seeds/"
                # From the first report (a sanitizer's, an invariant's, libFuzzer's own) on: the
                # trace and the path of the saved input. The whole run is in $log.
                awk '/ERROR: |runtime error|invariant broken|deadly signal/ { p = 1 } p' "$log" |
                        head -n 60 | sed 's/^/    /'
                failed=$((failed + 1))
        else
                echo "ok   fuzz $t: $summary"
        fi
done
[ "$failed" -eq 0 ] || exit 1
exit 0
