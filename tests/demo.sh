#!/bin/sh
# make demo: a full hand-over and hand-back of the real binary on the emulated host.
cd "$(dirname "$0")/.." || exit 1
exec build/kmodtrap /usr/bin/python3 tests/demo.py "$@"
