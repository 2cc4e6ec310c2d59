#!/bin/sh
# Integration tests against the emulated host (as root; the runner enters its own namespace).
# Arguments go to the runner: `-k NAME` runs the tests whose name contains NAME. Under
# build/kmodtrap: no module syscall of a test reaches this machine's kernel.
cd "$(dirname "$0")/../.." || exit 1
exec build/kmodtrap /usr/bin/python3 tests/integration/runner.py "$@" tests/integration/test_*.py
