"""`make install` and `make uninstall` into a DESTDIR: the documented tree, a user's own hook moved
aside and put back, kvm.conf never overwritten, the old scripts pointed out; and the man page
renders without a warning. Nothing here leaves the scratch directory."""
import filecmp
import os
import re
import shutil
import subprocess

import fakehost

DEST = "/run/fakehost/destdir"
HOOKS = DEST + "/etc/libvirt/hooks"
BINARY = "/usr/local/sbin/qemu-hook"
EXAMPLE = "/usr/local/share/doc/qemu-hook/kvm.conf"
COMPLETION = "/usr/local/share/bash-completion/completions/qemu-hook"
TREE = [
    "etc/libvirt/hooks/qemu -> /usr/local/sbin/qemu-hook",
    "usr/local/libexec/qemu-hook/qemu-hook-act",
    "usr/local/sbin/qemu-hook",
    "usr/local/share/bash-completion/completions/qemu-hook",
    "usr/local/share/doc/qemu-hook/kvm.conf",
    "usr/local/share/man/man8/qemu-hook.8",
]
DISPATCHER = "#!/bin/bash\n# the old dispatcher\nexit 0\n"
ORIGINAL_CONF = 'VIRSH_GPU_VIDEO="0000:0d:00.0"\nVIRSH_GPU_AUDIO="0000:0d:00.1"\n'


def make(target, expect_rc=0, **env):
    p = subprocess.run(["make", "--no-print-directory", "-s", target, f"DESTDIR={DEST}"], cwd=fakehost.REPO,
                       capture_output=True, text=True, env=dict(os.environ, **env))
    assert p.returncode == expect_rc, f"make {target}: exit {p.returncode}\n{p.stdout}{p.stderr}"
    return p.stdout + p.stderr


def tree():
    """Files and links under DEST (directories left out), links with their targets."""
    found = []
    for top, dirs, files in os.walk(DEST):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, DEST)
            found.append(f"{rel} -> {os.readlink(path)}" if os.path.islink(path) else rel)
    return sorted(found)


def fresh():
    shutil.rmtree(DEST, ignore_errors=True)
    os.makedirs(DEST)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read(path):
    with open(path) as f:
        return f.read()


def live_settings(path):
    """The lines of an INI file that set something (neither comments, blank lines nor sections)."""
    return [line for line in read(path).splitlines()
            if line.strip() and line.lstrip()[0] not in "#;" and not re.fullmatch(r"\[[^]]+\]", line.strip())]


def kept(out):
    """The scripts the install lists as kept, in its order."""
    return [line.split("as before: ", 1)[1] for line in out.splitlines()
            if line.startswith("qemu-hook: kept, runs as before: ")]


def test_install_fresh_and_uninstall():
    fresh()
    out = make("install")
    # no kvm.conf: until the admin writes one, qemu-hook only runs the scripts (an example with
    # every setting commented out, installed as kvm.conf, would fail every VM start)
    assert tree() == TREE, tree()
    assert filecmp.cmp(f"{DEST}{EXAMPLE}", os.path.join(fakehost.REPO, "conf/kvm.conf"), shallow=False)
    assert live_settings(f"{DEST}{EXAMPLE}") == [], live_settings(f"{DEST}{EXAMPLE}")
    assert os.stat(f"{DEST}{BINARY}").st_mode & 0o777 == 0o755
    assert os.stat(f"{DEST}{EXAMPLE}").st_mode & 0o777 == 0o644
    assert filecmp.cmp(f"{DEST}{COMPLETION}", os.path.join(fakehost.REPO, "completion/qemu-hook.bash"), shallow=False)
    assert os.stat(f"{DEST}{COMPLETION}").st_mode & 0o777 == 0o644
    # (each message on one line, whatever the IFS of tools/hook-link)
    assert f"qemu-hook: no {HOOKS}/kvm.conf: qemu-hook hands no GPU over (it only runs the scripts of qemu.d) " \
        "until you write one. Copy the example" in out, out
    assert f"    install -m 0644 {EXAMPLE} /etc/libvirt/hooks/kvm.conf\n" in out and "SIGHUP" in out, out
    # the installed link is a working hook: the binary under DESTDIR runs, as `qemu`
    p = subprocess.run([f"{DEST}{BINARY}", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("qemu-hook "), p
    out = make("install")
    assert "already runs" in out and tree() == TREE, (out, tree())
    out = make("uninstall")
    assert f"removed {HOOKS}/qemu" in out, out
    assert tree() == [], tree()
    # a kvm.conf copied from the example as the install said stays, even unchanged
    make("install")
    shutil.copy(f"{DEST}{EXAMPLE}", f"{HOOKS}/kvm.conf")
    out = make("install")
    assert "kept your" in out and "hands no GPU over" not in out, out
    out = make("uninstall")
    assert f"kept your {HOOKS}/kvm.conf" in out and tree() == ["etc/libvirt/hooks/kvm.conf"], (out, tree())


# The old start.sh and stop.sh, as /work/shared/origin/ORIGINAL-SCRIPTS.md describes them.
START_SH = """#!/bin/bash
# Helpful to read output when debugging
set -x
source "/etc/libvirt/hooks/kvm.conf"

# Already handed over: nothing to do
if [ "$(basename "$(readlink /sys/bus/pci/devices/$VIRSH_GPU_VIDEO/driver)")" == "vfio-pci" ]; then
    exit 0
fi

#sudo -u $VIRSH_USER gnome-session-restore --save
systemctl stop gdm.service
sleep 2
sudo -u $VIRSH_USER env DBUS_SESSION_BUS_ADDRESS=$VIRSH_USER_DBUS_ADDR systemctl --user stop pipewire.socket \\
    pipewire.service pipewire-pulse.socket pipewire-pulse.service

# Unbind the VT consoles that are bound, remembering them
VTCONS=""
for vt in /sys/class/vtconsole/vtcon*; do
    if [ "$(cat $vt/bind)" == "1" ]; then
        echo 0 > $vt/bind
        VTCONS="$VTCONS $vt"
    fi
done
sleep 2

driver-rebind $VIRSH_SECONDARY_GPU_VIDEO radeon
driver-rebind $VIRSH_GPU_VIDEO vfio-pci
sleep 2

for vt in $VTCONS; do
    echo 1 > $vt/bind
done

systemctl set-property --runtime -- user.slice AllowedCPUs=0,1,6,7
systemctl set-property --runtime -- system.slice AllowedCPUs=0,1,6,7
systemctl set-property --runtime -- init.scope AllowedCPUs=0,1,6,7
sleep 2
systemctl restart gdm.service
"""
STOP_SH = """#!/bin/bash
set -x
source "/etc/libvirt/hooks/kvm.conf"
[ -e /home/$VIRSH_USER/.vfio-skip-stop ] && exit 0
systemctl stop gdm.service
echo 0 > /sys/class/vtconsole/vtcon0/bind
echo 0 > /sys/class/vtconsole/vtcon1/bind
sleep 2
driver-rebind $VIRSH_GPU_VIDEO amdgpu
driver-rebind $VIRSH_SECONDARY_GPU_VIDEO vfio-pci
echo 1 > /sys/class/vtconsole/vtcon0/bind
echo 1 > /sys/class/vtconsole/vtcon1/bind
systemctl set-property --runtime -- user.slice AllowedCPUs=0-11
systemctl restart gdm.service
"""
HUGEPAGES = "#!/bin/sh\necho 2048 > /proc/sys/vm/nr_hugepages\n"
# Names every way of moving a GPU, in comments only: no proof that it moves one, so it stays.
COMMENTED = """#!/bin/bash
# Used to do the hand-over itself, now qemu-hook's job:
#   driver-rebind $VIRSH_GPU_VIDEO vfio-pci
#   virsh nodedev-detach pci_0000_0d_00_0
#   echo 0 > /sys/class/vtconsole/vtcon0/bind
#   echo vfio-pci > /sys/bus/pci/devices/0000:0d:00.0/driver_override
    # modprobe -r amdgpu
cat /sys/bus/pci/devices/0000:0d:00.0/driver_override > /run/vm-override.txt   # a read, not a write
echo 1 > /sys/devices/system/cpu/cpufreq/boost
"""
# One command of each kind that provably moves a GPU (the rest of each script: a harmless line).
MOVERS = {
    "new-id": 'echo "1002 687f" | tee /sys/bus/pci/drivers/vfio-pci/new_id >/dev/null',
    "override": 'echo vfio-pci > "/sys/bus/pci/devices/$VIRSH_GPU_VIDEO/driver_override"',
    "probe": "echo $VIRSH_GPU_VIDEO >/sys/bus/pci/drivers_probe",
    "unbind": "echo 0000:0d:00.0 > /sys/bus/pci/devices/0000:0d:00.0/driver/unbind",
    "bind": "  echo 0000:0d:00.0 >> /sys/bus/pci/drivers/amdgpu/bind",
    "nodedev": "virsh -c qemu:///system nodedev-detach pci_0000_0d_00_0",
    "reattach": "if true; then virsh nodedev-reattach pci_0000_0d_00_0; fi",
    "modprobe": 'sleep 1; modprobe -rv "amdgpu"',
    "rmmod": "rmmod nvidia_drm",
    "rebind": "/usr/local/bin/driver-rebind $VIRSH_GPU_VIDEO vfio-pci",
}


def test_a_users_hook_config_and_scripts_are_kept():
    fresh()
    write(f"{HOOKS}/qemu", DISPATCHER, 0o755)
    write(f"{HOOKS}/kvm.conf", ORIGINAL_CONF)
    write(f"{HOOKS}/qemu.d/win 10/prepare/begin/start.sh", START_SH, 0o755)
    write(f"{HOOKS}/qemu.d/win 10/prepare/begin/10-hugepages", HUGEPAGES, 0o755)
    write(f"{HOOKS}/qemu.d/win 10/release/end/stop.sh", STOP_SH, 0o755)
    write(f"{HOOKS}/qemu.d/win 10/started/begin/scream.sh", "#!/bin/bash\n", 0o755)
    out = make("install")
    aside = f"{HOOKS}/before-qemu-hook"
    assert f"moved your {HOOKS}/qemu aside to {aside}/qemu" in out, out
    assert read(f"{aside}/qemu") == DISPATCHER
    assert os.readlink(f"{HOOKS}/qemu") == BINARY
    assert read(f"{HOOKS}/kvm.conf") == ORIGINAL_CONF and "kept your" in out, out
    # the old scripts that move the GPU themselves are moved aside; the others stay and are named
    for rel, text in (("prepare/begin/start.sh", START_SH), ("release/end/stop.sh", STOP_SH)):
        assert read(f"{aside}/qemu.d/win 10/{rel}") == text
        assert not os.path.exists(f"{HOOKS}/qemu.d/win 10/{rel}")
        assert f"moved your {HOOKS}/qemu.d/win 10/{rel} aside" in out, out
    assert read(f"{HOOKS}/qemu.d/win 10/prepare/begin/10-hugepages") == HUGEPAGES
    assert kept(out) == [f"{HOOKS}/qemu.d/win 10/prepare/begin/10-hugepages"] and "scream" not in out, out

    write(f"{HOOKS}/kvm.conf", ORIGINAL_CONF + 'VIRSH_USER="liss"\n')
    out = make("uninstall")
    assert read(f"{HOOKS}/qemu") == DISPATCHER and not os.path.islink(f"{HOOKS}/qemu"), out
    assert read(f"{HOOKS}/qemu.d/win 10/prepare/begin/start.sh") == START_SH
    assert read(f"{HOOKS}/qemu.d/win 10/release/end/stop.sh") == STOP_SH
    assert not os.path.exists(aside)
    assert "kept your" in out and read(f"{HOOKS}/kvm.conf").endswith('VIRSH_USER="liss"\n'), out
    assert not os.path.exists(f"{DEST}{BINARY}")


def test_only_scripts_that_provably_move_the_gpu_go_aside():
    """A command that moves a GPU, of every kind: moved aside; mentions in comments, reads and
    other sysfs writes: kept and listed."""
    fresh()
    vm = f"{HOOKS}/qemu.d/win10"
    for name, line in MOVERS.items():
        write(f"{vm}/prepare/begin/{name}", f"#!/bin/bash\necho 2048 > /proc/sys/vm/nr_hugepages\n{line}\n", 0o755)
    write(f"{vm}/prepare/begin/commented", COMMENTED, 0o755)
    write(f"{vm}/release/end/commented", COMMENTED, 0o755)
    write(f"{vm}/release/end/hugepages", HUGEPAGES, 0o755)
    out = make("install")
    aside = f"{HOOKS}/before-qemu-hook/qemu.d/win10"
    for name, line in MOVERS.items():
        assert os.path.exists(f"{aside}/prepare/begin/{name}") and \
            not os.path.exists(f"{vm}/prepare/begin/{name}"), (name, line, out)
        assert f"moved your {vm}/prepare/begin/{name} aside" in out, out
    assert kept(out) == [f"{vm}/prepare/begin/commented", f"{vm}/release/end/commented",
                         f"{vm}/release/end/hugepages"], out
    assert read(f"{vm}/prepare/begin/commented") == COMMENTED
    make("uninstall")
    assert sorted(os.listdir(f"{vm}/prepare/begin")) == sorted(list(MOVERS) + ["commented"])


def test_hook_link_passes_shellcheck():
    """(That its moves_gpu is the packages' own, word for word, test_packages checks.)"""
    p = subprocess.run(["shellcheck", os.path.join(fakehost.REPO, "tools/hook-link")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_install_refuses_to_lose_a_hook():
    fresh()
    write(f"{HOOKS}/qemu", DISPATCHER, 0o755)
    write(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh", START_SH, 0o755)
    write(f"{HOOKS}/before-qemu-hook/qemu", "#!/bin/sh\n# moved aside before\n", 0o755)
    out = make("install", expect_rc=2)
    assert "move one of them yourself" in out, out
    # nothing moved, not even what could have been
    assert read(f"{HOOKS}/qemu") == DISPATCHER
    assert read(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh") == START_SH
    assert read(f"{HOOKS}/before-qemu-hook/qemu").endswith("moved aside before\n")


def test_uninstall_leaves_a_foreign_hook_alone():
    fresh()
    make("install")
    os.unlink(f"{HOOKS}/qemu")
    write(f"{HOOKS}/qemu", DISPATCHER, 0o755)
    out = make("uninstall")
    assert "not qemu-hook's" in out and read(f"{HOOKS}/qemu") == DISPATCHER, out


def test_man_page_renders_without_warnings():
    man = os.path.join(fakehost.REPO, "man/qemu-hook.8")
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", man], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = subprocess.run(["man", "-l", man], capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
    assert p.returncode == 0 and "HOOK SCRIPTS" in p.stdout and "script_timeout" in p.stdout, p.stderr
