#!/bin/sh
# Integration tests against the emulated host (as root; the runner enters its own namespace).
cd "$(dirname "$0")/../.." || exit 1
exec /usr/bin/python3 tests/integration/runner.py "$@" tests/integration/test_*.py
