#!/bin/bash
# Runs inside the guest's rootfs (chroot, from tests/guest/build-image.sh) after the packages
# and tests/guest/image/ are in: users, units, libvirt, initramfs. Offline: the guest needs no
# network at boot. Never touches devices: the host's /sys is not mounted here.
set -euo pipefail

echo guest >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tguest\n' >/etc/hosts
: >/etc/fstab
# The root filesystem is the virtio disk, as the runner boots it (root=/dev/vda rw).
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >/etc/fstab

# The desktop user: uid 1000, lingering, so `systemd --user` (user@1000.service) and the audio
# units Debian enables for every user (pipewire, pipewire-pulse, wireplumber) run from boot.
# Not in the audio or video groups: logind gives the seat's devices to the active session.
useradd --uid 1000 --user-group --create-home --shell /bin/bash desk
mkdir -p /var/lib/systemd/linger
: >/var/lib/systemd/linger/desk
for unit in pipewire.socket pipewire.service pipewire-pulse.socket pipewire-pulse.service wireplumber.service; do
	[ -e "/etc/systemd/user/${unit##*.}s.target.wants/$unit" ] ||
		[ -e "/etc/systemd/user/default.target.wants/$unit" ] ||
		[ -e "/etc/systemd/user/pipewire.service.wants/$unit" ] ||
		systemctl --global enable "$unit"
done

# The display manager: greetd (its postinst enabled it as display-manager.service), a graphical
# boot.
[ -L /etc/systemd/system/display-manager.service ] || systemctl enable greetd.service
systemctl set-default graphical.target

# libvirt: root runs the VMs without a security driver (no AppArmor/SELinux in the guest);
# no default network (it would need dnsmasq, the test VM has no NIC).
cat >>/etc/libvirt/qemu.conf <<'EOF'

# tests/guest: the nested VM runs as root, unconfined.
user = "root"
group = "root"
security_driver = "none"
EOF
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
systemctl enable libvirtd.service virtlogd.service

# The harness: started when the boot is done, powers the guest off when its tests end.
systemctl enable qemu-hook-test.service
# A short, quiet boot under TCG: nothing waits for a network, no periodic jobs catching up on
# a first boot (e2scrub_reap alone took 15 s), no suspending of guests at shutdown (the guest
# is powered off hard when its tests end).
for unit in systemd-networkd-wait-online.service e2scrub_reap.service e2scrub_all.timer \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer libvirt-guests.service; do
	systemctl mask "$unit" 2>/dev/null || true
done

# The initramfs with vfio-pci and the weak GPU's udev rule (see 60-park-weak-gpu.rules).
update-initramfs -u -k all

# Lean: no apt lists or caches in the image.
apt-get clean
rm -rf /var/lib/apt/lists/*
