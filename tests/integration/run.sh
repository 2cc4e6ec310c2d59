#!/bin/sh
# Integration tests against the emulated host (as root; the runner enters its own namespace).
# Arguments go to the runner: `-k NAME` runs the tests whose name contains NAME. Under
# build/kmodtrap: no module syscall of a test reaches this machine's kernel.
# In a PID namespace of its own with its own /proc: the hook and fakesys find the holders of a
# device node by scanning /proc, so a run sees only its own processes, never those of another
# run at the same time (whose fake DRM cards have the same numbers, 226:N).
cd "$(dirname "$0")/../.." || exit 1
exec build/kmodtrap unshare --pid --fork --kill-child --mount-proc \
	/usr/bin/python3 tests/integration/runner.py "$@" tests/integration/test_*.py
