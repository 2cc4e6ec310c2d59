#!/bin/sh
# make bench: timings of the real binary on the emulated host, beside the last release's, then
# under a real libvirtd; each under build/kmodtrap (no module syscall reaches the kernel).
cd "$(dirname "$0")/.." || exit 1
build/kmodtrap /usr/bin/python3 tests/bench.py "$@" || exit 1
echo
build/kmodtrap /usr/bin/python3 tests/bench_release.py || exit 1
echo
exec build/kmodtrap /usr/bin/python3 tests/bench_libvirt.py
