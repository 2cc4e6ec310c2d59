#!/bin/bash
# Builds the Debian bookworm guest the real-kernel tests boot (tests/guest/README.md):
# build/guest/{root.img,vmlinuz,initrd.img,inputs.sha256}. Rebuilt only when the hash of its
# inputs changes: this script, tests/guest/packages, tests/guest/setup-rootfs.sh, every file
# under tests/guest/image/ and the host's Debian apt source files (their contents: a new mirror
# snapshot is a new image). Built in a temporary directory beside the cache and renamed into
# place, so a build that fails or is interrupted leaves the old image as it was.
#
# mmdebstrap --mode=root writes only into its target directory. The host's /sys is not mounted
# into the chroot (--skip=chroot/mount/sys): nothing of the image build can reach a device of
# this machine. No apt mirror is named here: the sources are the host's own files.
#
# Usage: tests/guest/build-image.sh [--force]    (GUEST_DIR overrides build/guest)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${GUEST_DIR:-$top/build/guest}
force=0
[ "${1:-}" = --force ] && force=1

die() { echo "guest-image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root)"
for tool in mmdebstrap mkfs.ext4 sha256sum; do
	command -v "$tool" >/dev/null || die "$tool missing (tests/deps.sh installs it)"
done

# The host's apt source files for Debian bookworm, as apt reads them (*.list, *.sources; files
# with other names, such as *.disabled-by-farm, are ignored by apt and so here too).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	case $f in
	*.sources) grep -Eq '^Suites:(.*[[:space:]])?bookworm([[:space:]]|$)' "$f" || continue ;;
	*) grep -Eq '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm([[:space:]]|$)' "$f" || continue ;;
	esac
	sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || die "no apt source file of the host names Debian bookworm"

packages=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages" | tr -s ' \n' ',' | sed 's/,$//')

# The inputs' hash: every file that decides what the image holds, by name and content; the
# tree's files by their names in the tree, so that another checkout's cached image (a worktree,
# a copy of build/guest) is as good as one built here.
inputs_hash() {
	{
		for f in "$here/build-image.sh" "$here/packages" "$here/setup-rootfs.sh" "${sources[@]}"; do
			printf '%s\n' "${f#"$top"/}"
			sha256sum <"$f"
		done
		(cd "$here/image" && find . \( -type f -o -type l \) -printf '%p %m %l\n' | LC_ALL=C sort)
		(cd "$here/image" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -d' ' -f1
}
hash=$(inputs_hash)

if [ $force -eq 0 ] && [ -f "$out/inputs.sha256" ] && [ "$(cat "$out/inputs.sha256")" = "$hash" ] &&
	[ -f "$out/root.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
	echo "guest-image: up to date ($out, inputs ${hash:0:12})"
	exit 0
fi

start=$(date +%s)
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$(dirname "$out")/guest.tmp.XXXXXX")
chmod 755 "$tmp"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
rootfs=$tmp/rootfs
mkdir "$rootfs"

echo "guest-image: building with mmdebstrap from ${sources[*]} (inputs ${hash:0:12})"
# The customize hooks run with "$1" = the rootfs: copy tests/guest/image/ in (owned by root),
# then the setup script inside the chroot (users, units, initramfs).
# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap's hook shell, not here
mmdebstrap --mode=root --variant=minbase --skip=chroot/mount/sys \
	--include="$packages" \
	--aptopt='Acquire::Languages "none"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
	--customize-hook="tar -C '$here/image' --owner=0 --group=0 -cf - . | tar -C \"\$1\" -xf -" \
	--customize-hook="cp '$here/setup-rootfs.sh' \"\$1/root/setup-rootfs.sh\"" \
	--customize-hook='chroot "$1" /bin/bash /root/setup-rootfs.sh' \
	--customize-hook='rm -f "$1/root/setup-rootfs.sh"' \
	bookworm "$rootfs" "${sources[@]}" >"$tmp/mmdebstrap.log" 2>&1 ||
	{ tail -n 40 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }

kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
[ -n "$kernel" ] || die "no kernel in the image"
version=${kernel##*/vmlinuz-}
[ -f "$rootfs/boot/initrd.img-$version" ] || die "no initrd for $version"
cp "$kernel" "$tmp/vmlinuz"
cp "$rootfs/boot/initrd.img-$version" "$tmp/initrd.img"
echo "$version" >"$tmp/kernel-version"
cp "$tmp/mmdebstrap.log" "$tmp/build.log"
mkfs.ext4 -q -F -L guestroot -d "$rootfs" "$tmp/root.img" 3G >/dev/null
rm -rf "$rootfs"
echo "$hash" >"$tmp/inputs.sha256"

# Atomic replacement: the new directory takes the cache's name in one rename.
if [ -e "$out" ]; then
	mv "$out" "$tmp.old"
fi
mv "$tmp" "$out"
rm -rf "$tmp.old"
trap - EXIT
echo "guest-image: built $out (kernel $version, $(du -sh "$out/root.img" | cut -f1) used) in $(($(date +%s) - start)) s"
