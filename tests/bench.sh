#!/bin/sh
# make bench: timings of the real binary on the emulated host.
cd "$(dirname "$0")/.." || exit 1
exec /usr/bin/python3 tests/bench.py "$@"
