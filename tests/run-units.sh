#!/bin/sh
# Runs the cmocka unit test binaries given as arguments (plain and build/san/ alike), prints each
# one's summary and a total, and exits 1 if any failed or crashed.
#
# As root, everything runs inside a private mount namespace with its own tmpfs on /run, so the
# journal tests write /run/qemu-hook without touching the host's (a VM's journal there decides
# what its hand-back undoes), and the real /sys is read-only (no unit test writes sysfs; this
# makes sure none ever can). The tmpfs carries a marker the journal test looks for; without it
# (not root, no unshare) those tests skip and say why.
set -u

if [ $# -eq 0 ]; then
        echo "usage: $0 TEST-BINARY..." >&2
        exit 2
fi

# Leaks are errors; any undefined behaviour stops the binary with a stack trace.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

if [ -z "${QEMU_HOOK_UNITS_INNER:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
        export QEMU_HOOK_UNITS_INNER=1
        # shellcheck disable=SC2016
        exec unshare -m --propagation private sh -c '
                mount -o remount,bind,ro /sys &&
                mount -t tmpfs -o mode=0755 tmpfs /run &&
                touch /run/.qemu-hook-unit-tests &&
                exec "$0" "$@"' "$0" "$@"
fi
if [ -z "${QEMU_HOOK_UNITS_INNER:-}" ]; then
        echo "run-units: not root (or no unshare): no private /run, the journal file tests will skip" >&2
fi

# The number in the cmocka summary line matching $2 (0 when absent).
count() {
        n=$(sed -n "s/^\[ *$2 *\] \([0-9][0-9]*\) test(s).*/\1/p" "$1" | head -n 1)
        echo "${n:-0}"
}

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT INT TERM
total_run=0 total_passed=0 total_failed=0 total_skipped=0 bad_binaries=0

for t in "$@"; do
        if [ ! -x "$t" ]; then
                echo "FAIL $t: not an executable"
                bad_binaries=$((bad_binaries + 1))
                continue
        fi
        "$t" >"$out" 2>&1
        rc=$?
        run=$(count "$out" "==========")
        passed=$(count "$out" "PASSED")
        failed=$(count "$out" "FAILED")
        skipped=$(count "$out" "SKIPPED")
        total_run=$((total_run + run))
        total_passed=$((total_passed + passed))
        total_failed=$((total_failed + failed))
        total_skipped=$((total_skipped + skipped))
        summary="$run run, $passed passed, $failed failed, $skipped skipped"
        # No summary line, or a non-zero exit with no test failed: it crashed (a sanitizer report,
        # a signal) and the counts above are not the whole story.
        if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ] || ! grep -q '^\[==========\] .* test(s) run\.' "$out"; then
                echo "FAIL $t: $summary (exit status $rc)"
                sed 's/^/    /' "$out"
                bad_binaries=$((bad_binaries + 1))
        else
                echo "ok   $t: $summary"
                # Say why tests were skipped: a silent skip looks like a pass.
                grep -i 'skipped:' "$out" | sort -u | sed 's/^/    /'
        fi
done

echo "total: $# binaries, $total_run tests run, $total_passed passed, $total_failed failed," \
     "$total_skipped skipped; $bad_binaries binaries failed"
[ "$bad_binaries" -eq 0 ] || exit 1
exit 0
