"""The Debian package (`make deb`, built if build/deb has none as new as HEAD): lintian finds no
error; its files (binaries side by side in /usr/sbin, the man page, the bash completion, the example under
/usr/share/doc with every setting commented out, nothing in /etc); and its maintainer scripts,
run by a real dpkg installing into a throwaway root (`dpkg --root`, scripts chrootless with
DPKG_ROOT): the link is made only where no hook exists, a hook of the admin's and kvm.conf are
never touched, removal deletes only our link and is refused while a hand-over is recorded.

No binary of the package is ever run. dpkg and the scripts run in a mount namespace of their own
where every mount but /run (a tmpfs here, holding the throwaway root) is read-only: whatever
went wrong, they could not write the machine's dpkg database, /usr or /etc."""
import contextlib
import fcntl
import os
import re
import shutil
import subprocess

import elffacts
import fakehost

DEB_DIR = os.path.join(fakehost.REPO, "build", "deb")
ROOT = fakehost.SCRATCH + "/pkgroot"
HOOKS = ROOT + "/etc/libvirt/hooks"
BINARY = "/usr/sbin/qemu-hook"
EXAMPLE = "usr/share/doc/qemu-hook/examples/kvm.conf"
COMPLETION = "usr/share/bash-completion/completions/qemu-hook"
DISPATCHER = "#!/bin/bash\n# the admin's own dispatcher\nexit 0\n"
CONF = 'VIRSH_GPU_VIDEO="0000:0d:00.0"\n'

# Every mount read-only but /run, /proc, /dev and /sys (read-only or emulated already), checked.
SANDBOX = r"""
findmnt -rn -o TARGET | while read -r m; do
        case $m in /run | /run/* | /proc | /proc/* | /dev | /dev/* | /sys | /sys/*) continue ;; esac
        mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in / /usr/sbin /var/lib/dpkg /etc /etc/libvirt; do
        if [ -w "$d" ]; then echo "sandbox: $d is writable, refusing to run dpkg" >&2; exit 99; fi
done
exec "$@"
"""


def version():
    with open(os.path.join(fakehost.REPO, "Makefile")) as f:
        return re.search(r"^VERSION\s*:=\s*(\S+)", f.read(), re.M).group(1)


def arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def package_builds():
    """One package build at a time in the checkout, whichever run asks (make integration runs
    two at once): `make deb` replaces build/deb whole, and `git stash create` wants the index."""
    os.makedirs(os.path.join(fakehost.REPO, "build"), exist_ok=True)
    with open(os.path.join(fakehost.REPO, "build", ".package-builds.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def deb():
    """build/deb/qemu-hook_VERSION_ARCH.deb, made by `make deb` unless one newer than HEAD is there."""
    path = os.path.join(DEB_DIR, f"qemu-hook_{version()}_{arch()}.deb")
    head = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=fakehost.REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    with package_builds():
        if not os.path.exists(path) or os.stat(path).st_mtime < int(head):
            p = subprocess.run(["make", "--no-print-directory", "deb"], cwd=fakehost.REPO, capture_output=True,
                               text=True)
            assert p.returncode == 0, f"make deb: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    assert os.path.exists(path), f"make deb made no {path}"
    return path


def contents():
    """(mode string, path without ./, link target or None) of every entry of the package."""
    out = subprocess.run(["dpkg-deb", "-c", deb()], capture_output=True, text=True, check=True).stdout
    entries = []
    for line in out.splitlines():
        mode, _owner, _size, _date, _time, rest = line.split(None, 5)
        name, _, target = rest.partition(" -> ")
        entries.append((mode, name[2:] if name.startswith("./") else name, target or None))
    return entries


def member(path):
    p = subprocess.run(f"dpkg-deb --fsys-tarfile '{deb()}' | tar -xO -f - './{path}'", shell=True,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def guard():
    assert fakehost.in_namespace(), "not in the test namespace"
    assert any(point == fakehost.LIBVIRT_ETC and fstype == "tmpfs" for point, fstype in fakehost._mounts()), \
        "/etc/libvirt is the machine's"


def sandboxed(argv, expect_rc=0, env=None):
    """ARGV in the read-only sandbox, where only the throwaway roots are writable, with ENV (default:
    ours); asserts its exit status and that it wrote nothing outside them; returns its output."""
    guard()
    before = outside()
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox", *argv],
                       capture_output=True, text=True, env=os.environ if env is None else env)
    out = p.stdout + p.stderr
    assert p.returncode == expect_rc, f"{' '.join(argv)}: exit {p.returncode}, not {expect_rc}\n{out[-6000:]}"
    assert "sandbox:" not in out, out
    assert outside() == before, f"{argv[0]} (or a script it ran) wrote outside the throwaway root"
    return out


def dpkg(*args, expect_rc=0, **env):
    """dpkg on the throwaway root, in the read-only sandbox; returns its output."""
    return sandboxed(["dpkg", f"--root={ROOT}", f"--log={ROOT}/dpkg.log", "--force-script-chrootless",
                      "--force-depends", "--force-not-root", *args], expect_rc, dict(os.environ, **env))


def fresh_root():
    shutil.rmtree(ROOT, ignore_errors=True)
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc", "run", "usr/sbin"):
        os.makedirs(os.path.join(ROOT, d))
    open(f"{ROOT}/var/lib/dpkg/status", "w").close()
    open(f"{ROOT}/var/lib/dpkg/available", "w").close()


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read(path):
    with open(path) as f:
        return f.read()


def status():
    p = subprocess.run(["dpkg-query", f"--admindir={ROOT}/var/lib/dpkg", "-W", "-f=${Status}", "qemu-hook"],
                       capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else "not-installed"


def outside():
    """What the scripts could have got wrong with DPKG_ROOT: the namespace's /etc/libvirt (its
    files and links) and /run/qemu-hook."""
    found = []
    for top in (fakehost.LIBVIRT_ETC, "/run/qemu-hook"):
        for d, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(d, name)
                found.append((path, os.readlink(path) if os.path.islink(path) else os.lstat(path).st_mtime_ns))
    return sorted(found)


def test_lintian_finds_no_error():
    p = subprocess.run(["lintian", "--fail-on", "error", deb()], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    errors = [line for line in p.stdout.splitlines() if line.startswith("E:")]
    assert not errors, p.stdout


def test_control_fields():
    p = subprocess.run(["dpkg-deb", "-f", deb()], capture_output=True, text=True, check=True)
    fields = dict(re.findall(r"^(\S+): (.*)$", p.stdout, re.M))
    assert fields["Package"] == "qemu-hook" and fields["Version"] == version(), fields
    assert fields["Section"] == "admin" and fields["Architecture"] == arch(), fields
    for lib in ("libc6", "libinih1", "libxml2", "libsystemd0", "libudev1", "libkmod2"):
        assert re.search(rf"(^|, ){lib}\b", fields["Depends"]), fields["Depends"]
    assert "libvirt-daemon" in fields.get("Recommends", "") + fields.get("Enhances", ""), fields
    info = subprocess.run(["dpkg-deb", "-I", deb()], capture_output=True, text=True, check=True).stdout
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*\s+{script}\s+#!/bin/sh$", info, re.M), info
    # No conffiles: nothing in /etc that dpkg could put over a file of the admin's.
    assert "conffiles" not in info, info


def test_file_list():
    entries = contents()
    names = {name.rstrip("/"): (mode, target) for mode, name, target in entries}
    assert not [n for n in names if n == "etc" or n.startswith("etc/")], sorted(names)
    for binary in ("usr/sbin/qemu-hook", "usr/libexec/qemu-hook/qemu-hook-act"):
        assert names.get(binary, ("",))[0] == "-rwxr-xr-x", (binary, names.get(binary))
    assert "usr/share/man/man8/qemu-hook.8.gz" in names, sorted(names)
    assert names.get(COMPLETION, ("",))[0] == "-rw-r--r--", sorted(names)
    assert names.get(EXAMPLE, ("",))[0] == "-rw-r--r--", sorted(names)
    assert "usr/share/doc/qemu-hook/copyright" in names, sorted(names)
    # the example once, in examples/ (not also where `make install` puts it)
    assert not [n for n in names if n.endswith("kvm.conf") and n != EXAMPLE], sorted(names)
    assert not [n for n in names if "libvirt" in n], sorted(names)


def test_binaries_are_hardened():
    """dpkg-buildflags' hardening=+all (and _FORTIFY_SOURCE=3, which debian/rules asks for),
    read off the packaged binaries: PIE, full RELRO, stack protector, fortified."""
    tree = fakehost.SCRATCH + "/deb-files"
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", deb(), tree], check=True)
    for binary in ("usr/sbin/qemu-hook", "usr/libexec/qemu-hook/qemu-hook-act"):
        ok, facts = elffacts.hardened(os.path.join(tree, binary))
        assert ok, (binary, facts)
    shutil.rmtree(tree)


def test_example_has_every_setting_commented_out():
    text = member(EXAMPLE)
    setting = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
    live = [line for line in text.splitlines() if setting.match(line)]
    assert not live, live
    # Only comments, blank lines and section headers (which set nothing) are left.
    for line in text.splitlines():
        assert line.strip() == "" or line.lstrip()[0] in "#;" or re.fullmatch(r"\[[^]]+\]", line.strip()), line
    # The one example of the tree, as `make install` installs it too; with values to uncomment.
    with open(os.path.join(fakehost.REPO, "conf", "kvm.conf")) as f:
        assert text == f.read(), "the packaged example is not conf/kvm.conf"
    assert re.search(r"^;address = 0000:0d:00\.0$", text, re.M), text


def test_man_page_names_the_package_paths():
    p = subprocess.run(f"dpkg-deb --fsys-tarfile '{deb()}' | tar -xO -f - ./usr/share/man/man8/qemu-hook.8.gz"
                       " | gzip -dc", shell=True, capture_output=True, text=True)
    assert p.returncode == 0 and ".SH FILES" in p.stdout, p.stderr
    assert "/usr/local/sbin" not in p.stdout and "/usr/local/share" not in p.stdout
    assert "/usr/sbin/qemu-hook" in p.stdout and "/" + EXAMPLE in p.stdout


def test_maintainer_scripts_pass_shellcheck():
    scripts = [os.path.join(fakehost.REPO, "debian", s) for s in ("postinst", "prerm", "postrm")]
    p = subprocess.run(["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_install_without_a_hook_makes_the_link_and_remove_deletes_it():
    fresh_root()
    out = dpkg("-i", deb())
    assert os.readlink(f"{HOOKS}/qemu") == BINARY, out
    assert os.stat(HOOKS).st_mode & 0o777 == 0o755
    assert os.path.isfile(f"{ROOT}/usr/sbin/qemu-hook") and os.path.isfile(f"{ROOT}/usr/libexec/qemu-hook/qemu-hook-act")
    assert os.path.isfile(f"{ROOT}/{EXAMPLE}") and os.path.isfile(f"{ROOT}/{COMPLETION}")
    assert os.listdir(HOOKS) == ["qemu"], os.listdir(HOOKS)       # no kvm.conf made
    assert "made /etc/libvirt/hooks/qemu a link" in out, out
    assert "until /etc/libvirt/hooks/kvm.conf is written" in out and "/" + EXAMPLE in out, out
    assert "SIGHUP" in out and "restart libvirtd" in out, out
    assert status() == "install ok installed", status()
    # again (a reinstall, as an upgrade runs it): nothing changes, no new hook to announce
    out = dpkg("-i", deb())
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and os.listdir(HOOKS) == ["qemu"], out
    assert "made" not in out and "left" not in out and "SIGHUP" not in out, out
    # the admin writes kvm.conf; remove deletes our link only
    write(f"{HOOKS}/kvm.conf", CONF)
    out = dpkg("-r", "qemu-hook")
    assert not os.path.lexists(f"{HOOKS}/qemu"), out
    assert read(f"{HOOKS}/kvm.conf") == CONF, out
    assert not os.path.exists(f"{ROOT}/usr/sbin/qemu-hook") and not os.path.exists(f"{ROOT}/{COMPLETION}")
    assert "removed the link" in out, out
    out = dpkg("--purge", "qemu-hook")
    assert read(f"{HOOKS}/kvm.conf") == CONF and os.listdir(HOOKS) == ["kvm.conf"], out
    assert status() in ("not-installed", "unknown ok not-installed"), status()


def test_a_hook_of_the_admins_and_kvm_conf_are_left_alone():
    fresh_root()
    write(f"{HOOKS}/qemu", DISPATCHER, 0o750)
    write(f"{HOOKS}/kvm.conf", CONF, 0o600)
    out = dpkg("-i", deb())
    assert read(f"{HOOKS}/qemu") == DISPATCHER and not os.path.islink(f"{HOOKS}/qemu"), out
    assert os.stat(f"{HOOKS}/qemu").st_mode & 0o777 == 0o750
    assert read(f"{HOOKS}/kvm.conf") == CONF and os.stat(f"{HOOKS}/kvm.conf").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(HOOKS)) == ["kvm.conf", "qemu"], os.listdir(HOOKS)   # nothing moved aside
    assert "left /etc/libvirt/hooks/qemu alone: it is a script (#!/bin/bash)" in out, out
    assert f"ln -s {BINARY} /etc/libvirt/hooks/qemu" in out, out
    assert "until /etc/libvirt/hooks/kvm.conf is written" not in out, out
    out = dpkg("-r", "qemu-hook")
    assert read(f"{HOOKS}/qemu") == DISPATCHER and read(f"{HOOKS}/kvm.conf") == CONF, out
    out = dpkg("--purge", "qemu-hook")
    assert read(f"{HOOKS}/qemu") == DISPATCHER and read(f"{HOOKS}/kvm.conf") == CONF, out


def test_a_foreign_link_is_left_alone():
    # e.g. the link of a `make install` into /usr/local
    fresh_root()
    os.makedirs(HOOKS)
    os.symlink("/usr/local/sbin/qemu-hook", f"{HOOKS}/qemu")
    out = dpkg("-i", deb())
    assert os.readlink(f"{HOOKS}/qemu") == "/usr/local/sbin/qemu-hook", out
    assert "it is a symbolic link to /usr/local/sbin/qemu-hook" in out, out
    dpkg("--purge", "qemu-hook")
    assert os.readlink(f"{HOOKS}/qemu") == "/usr/local/sbin/qemu-hook"


def test_old_gpu_moving_scripts_are_named():
    fresh_root()
    write(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh", "#!/bin/bash\ndriver-rebind 0000:0d:00.0 vfio-pci\n",
          0o755)
    write(f"{HOOKS}/qemu.d/win10/prepare/begin/hugepages.sh", "#!/bin/sh\necho 2048 >/proc/sys/vm/nr_hugepages\n",
          0o755)
    write(f"{HOOKS}/qemu.d/win10/release/end/notes.sh",
          "#!/bin/bash\n# the hand-back was: driver-rebind 0000:0d:00.0 amdgpu\n"
          "#   echo 1 > /sys/class/vtconsole/vtcon0/bind\nexit 0\n", 0o755)
    out = dpkg("-i", deb())
    assert "    /etc/libvirt/hooks/qemu.d/win10/prepare/begin/start.sh" in out, out
    assert "hugepages" not in out and "notes.sh" not in out, out    # no proof: comments only
    assert os.path.exists(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh")     # named, not moved
    dpkg("--purge", "qemu-hook")


def test_remove_is_refused_while_a_hand_over_is_recorded():
    fresh_root()
    dpkg("-i", deb())
    write(f"{ROOT}/run/qemu-hook/win10.state", "recorded\n", 0o600)
    out = dpkg("-r", "qemu-hook", expect_rc=1)
    assert "a hand-over is still recorded in /run/qemu-hook" in out and "/run/qemu-hook/win10.state" in out, out
    assert "'qemu-hook --recover VM'" in out, out
    assert status().endswith(" ok installed"), (status(), out)    # still installed (want: deinstall)
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and os.path.isfile(f"{ROOT}/usr/libexec/qemu-hook/qemu-hook-act"), out
    # the override the message names
    out = dpkg("-r", "qemu-hook", QEMU_HOOK_FORCE_REMOVE="1")
    assert not os.path.lexists(f"{HOOKS}/qemu"), out
    # and once the VM is down (no journal), removal just works
    dpkg("-i", deb())
    os.unlink(f"{ROOT}/run/qemu-hook/win10.state")
    dpkg("-r", "qemu-hook")
    assert not os.path.lexists(f"{HOOKS}/qemu")
    assert os.path.isdir(f"{ROOT}/run/qemu-hook")       # runtime state is not the package's


def test_remove_keeps_a_link_the_admin_pointed_elsewhere():
    fresh_root()
    dpkg("-i", deb())
    os.unlink(f"{HOOKS}/qemu")
    os.symlink("/opt/other-hook", f"{HOOKS}/qemu")
    dpkg("-r", "qemu-hook")
    assert os.readlink(f"{HOOKS}/qemu") == "/opt/other-hook"
