#!/bin/sh
# Installs the Debian packages that building and testing qemu-hook need, only those missing.
# libvirt without libvirt-daemon-system (which pulls in systemd): the end-to-end tests start
# their own libvirtd in a namespace. clang and its runtimes (libFuzzer, sanitizers) build the fuzz
# targets: libclang-rt is only a recommendation of clang's. bash-completion: the completion's
# tests run with its helpers too (and without them). rpm (rpmbuild) builds the RPM package in
# tests/integration/test_packages.py. libvirt-dev: libvirt's header (virt.c opens the library).
set -eu
pkgs="gcc clang libclang-rt-14-dev make pkg-config libsystemd-dev libudev-dev libinih-dev libxml2-dev libkmod-dev libvirt-dev
      libcmocka-dev libfuse3-dev fuse3 kmod dbus python3 python3-dbusmock hyperfine util-linux strace time
      man-db groff-base libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
      dpkg-dev debhelper lintian shellcheck bash-completion rpm
      ovmf mmdebstrap qemu-utils e2fsprogs"
missing=""
for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
                missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
        echo "deps: missing Debian packages:$missing (run as root to install them)" >&2
        exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
