#!/bin/sh
# make bench: timings of the real binary on the emulated host, beside the last release's, then
# under a real libvirtd.
cd "$(dirname "$0")/.." || exit 1
/usr/bin/python3 tests/bench.py "$@" || exit 1
echo
/usr/bin/python3 tests/bench_release.py || exit 1
echo
exec /usr/bin/python3 tests/bench_libvirt.py
