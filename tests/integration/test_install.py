"""`make install` and `make uninstall` into a DESTDIR: the documented tree, a user's own hook moved
aside and put back, kvm.conf never overwritten, the old scripts pointed out; and the man page
renders without a warning. Nothing here leaves the scratch directory."""
import filecmp
import os
import shutil
import subprocess

import fakehost

DEST = "/run/fakehost/destdir"
HOOKS = DEST + "/etc/libvirt/hooks"
BINARY = "/usr/local/sbin/qemu-hook"
TREE = [
    "etc/libvirt/hooks/kvm.conf",
    "etc/libvirt/hooks/qemu -> /usr/local/sbin/qemu-hook",
    "usr/local/sbin/qemu-hook",
    "usr/local/sbin/qemu-hook-act",
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


def test_install_fresh_and_uninstall():
    fresh()
    out = make("install")
    assert tree() == TREE, tree()
    assert filecmp.cmp(f"{HOOKS}/kvm.conf", os.path.join(fakehost.REPO, "conf/kvm.conf"), shallow=False)
    assert os.stat(f"{DEST}{BINARY}").st_mode & 0o777 == 0o755
    assert os.stat(f"{HOOKS}/kvm.conf").st_mode & 0o777 == 0o644
    assert "installed the example" in out and "SIGHUP" in out, out
    # the installed link is a working hook: the binary under DESTDIR runs, as `qemu`
    p = subprocess.run([f"{DEST}{BINARY}", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("qemu-hook "), p
    out = make("install")
    assert "already runs" in out and tree() == TREE, (out, tree())
    out = make("uninstall")
    assert "removed" in out and "unchanged example" in out, out
    assert tree() == [], tree()


START_SH = "#!/bin/bash\nsource /etc/libvirt/hooks/kvm.conf\ndriver-rebind $VIRSH_GPU_VIDEO vfio-pci\n"
STOP_SH = "#!/bin/bash\necho 1 > /sys/class/vtconsole/vtcon0/bind\n"
HUGEPAGES = "#!/bin/sh\necho 2048 > /proc/sys/vm/nr_hugepages\n"


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
    assert "    " + f"{HOOKS}/qemu.d/win 10/prepare/begin/10-hugepages" in out and "scream" not in out, out

    write(f"{HOOKS}/kvm.conf", ORIGINAL_CONF + 'VIRSH_USER="liss"\n')
    out = make("uninstall")
    assert read(f"{HOOKS}/qemu") == DISPATCHER and not os.path.islink(f"{HOOKS}/qemu"), out
    assert read(f"{HOOKS}/qemu.d/win 10/prepare/begin/start.sh") == START_SH
    assert read(f"{HOOKS}/qemu.d/win 10/release/end/stop.sh") == STOP_SH
    assert not os.path.exists(aside)
    assert "kept your" in out and read(f"{HOOKS}/kvm.conf").endswith('VIRSH_USER="liss"\n'), out
    assert not os.path.exists(f"{DEST}{BINARY}")


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
