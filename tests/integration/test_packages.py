"""The RPM package (packaging/qemu-hook.spec, built by `make rpm`) and the Arch package
(packaging/PKGBUILD with packaging/qemu-hook.install).

RPM: rpmbuild builds the spec on this Debian machine with --nodeps (its BuildRequires are
Fedora's pkgconfig() names, which dpkg's packages do not provide to rpm: they are checked by
name, not resolved). The file list, the requirements and the scriptlets are read off the built
package with rpm -qp; the scriptlets, taken out of the package, run against a throwaway root
(QEMU_HOOK_ROOT, which prefixes every path they touch) with the argument rpm gives them; and rpm
itself installs, upgrades and erases the package on an overlay of / whose writes land in the
scratch directory (its /etc/libvirt and /run the throwaway root's).

Arch: makepkg is not available here. The PKGBUILD is checked with bash -n and namcap-like rules,
and its build() and package() run under bash as makepkg would run them (srcdir a clone of the
git source, pkgdir empty): build() without a network, package() where every mount but /run is
read-only, and the tree it makes is checked. The install script passes shellcheck and its
post_install/pre_remove run against a throwaway root like the RPM's scriptlets.

No binary of either package is ever run; every scriptlet runs in a mount namespace where every
mount but /run (the throwaway root's) is read-only, and the namespace's /etc/libvirt and
/run/qemu-hook are checked unchanged after each run."""
import os
import re
import shutil
import subprocess
import sys

import fakehost

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_package import guard, package_builds, read, sandboxed, version, write  # noqa: E402

PACKAGING = os.path.join(fakehost.REPO, "packaging")
SPEC = os.path.join(PACKAGING, "qemu-hook.spec")
PKGBUILD = os.path.join(PACKAGING, "PKGBUILD")
INSTALL = os.path.join(PACKAGING, "qemu-hook.install")
ROOT = fakehost.SCRATCH + "/pkgsroot"
RPM_TOP = fakehost.SCRATCH + "/rpm"
HOOKS = ROOT + "/etc/libvirt/hooks"
BINARY = "/usr/sbin/qemu-hook"
DISPATCHER = "#!/bin/bash\n# the admin's own dispatcher\nexit 0\n"
CONF = 'VIRSH_GPU_VIDEO="0000:0d:00.0"\n'
START_SH = "#!/bin/bash\ndriver-rebind 0000:0d:00.0 vfio-pci\n"
HUGEPAGES_SH = "#!/bin/sh\necho 2048 >/proc/sys/vm/nr_hugepages\n"

_rpm = []


def rpm_path():
    """RPM_TOP/RPMS/ARCH/qemu-hook-VERSION-1.ARCH.rpm, made by `make rpm` once per run, in this
    run's scratch directory: another run at the same time makes its own."""
    if not _rpm:
        with package_builds():
            p = subprocess.run(["make", "--no-print-directory", "rpm", f"RPM_TOP={RPM_TOP}"], cwd=fakehost.REPO,
                               capture_output=True, text=True)
        assert p.returncode == 0, f"make rpm: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
        arch = subprocess.run(["rpm", "--eval", "%{_arch}"], capture_output=True, text=True,
                              check=True).stdout.strip()
        path = os.path.join(RPM_TOP, "RPMS", arch, f"qemu-hook-{version()}-1.{arch}.rpm")
        assert os.path.exists(path), f"make rpm made no {path}\n{p.stdout[-2000:]}"
        _rpm.append(path)
    return _rpm[0]


def rpmq(*args):
    return subprocess.run(["rpm", "-qp", *args, rpm_path()], capture_output=True, text=True, check=True).stdout


def scriptlets():
    """{'postinstall': text, 'preuninstall': text, ...} of the built package."""
    found, name = {}, None
    for line in rpmq("--scripts").splitlines(keepends=True):
        m = re.match(r"^(\w+) scriptlet \(using (\S+)\):$", line)
        if m:
            name = m.group(1)
            assert m.group(2) == "/bin/sh", line
            found[name] = ""
        elif name:
            found[name] += line
    return found


def member(path):
    p = subprocess.run(f"rpm2archive - < '{rpm_path()}' | tar -xzO -f - './{path}'", shell=True,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def in_root(argv, expect_rc=0, **env):
    """argv in the read-only sandbox (test_package.py's), the throwaway root's paths given by
    QEMU_HOOK_ROOT; returns its output."""
    return sandboxed(argv, expect_rc, dict(os.environ, QEMU_HOOK_ROOT=ROOT, **env))


def rpm_scriptlet(name, arg, expect_rc=0, **env):
    """The package's scriptlet `name` run with sh as rpm runs it ($1 = arg)."""
    path = fakehost.SCRATCH + f"/rpm-{name}.sh"
    write(path, scriptlets()[name])
    return in_root(["sh", path, str(arg)], expect_rc, **env)


def arch_function(name, *args, **env):
    """A function of the pacman install script, run with bash as pacman runs it."""
    return in_root(["bash", "-c", f'. "$0"; {name} "$@"', INSTALL, *args], **env)


# The four phases of both packages, in the words of each: post install, post upgrade, removal
# (final erase), and a removal refused (RPM) or warned about (Arch, where pre_remove cannot refuse).
RPM = {
    "install": lambda **env: rpm_scriptlet("postinstall", 1, **env),
    "upgrade": lambda **env: rpm_scriptlet("postinstall", 2, **env),
    "remove": lambda **env: rpm_scriptlet("preuninstall", 0, **env),
}
ARCH = {
    "install": lambda **env: arch_function("post_install", f"{version()}-1", **env),
    "upgrade": lambda **env: arch_function("post_upgrade", f"{version()}-1", f"{version()}-1", **env),
    "remove": lambda **env: arch_function("pre_remove", f"{version()}-1", **env),
}


def fresh_root():
    shutil.rmtree(ROOT, ignore_errors=True)
    for d in ("etc", "run", "usr/sbin"):
        os.makedirs(os.path.join(ROOT, d))


def check_link_made_and_removed(pkg, example):
    fresh_root()
    out = pkg["install"]()
    assert os.readlink(f"{HOOKS}/qemu") == BINARY, out
    assert os.stat(HOOKS).st_mode & 0o777 == 0o755
    assert os.listdir(HOOKS) == ["qemu"], os.listdir(HOOKS)       # no kvm.conf made
    assert "made /etc/libvirt/hooks/qemu a link" in out, out
    assert "until /etc/libvirt/hooks/kvm.conf is written" in out and example in out, out
    assert "restart libvirtd (or virtqemud)" in out and "SIGHUP" in out, out
    # an upgrade: nothing changes, no new hook to announce
    out = pkg["upgrade"]()
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and os.listdir(HOOKS) == ["qemu"], out
    assert "made" not in out and "left" not in out and "SIGHUP" not in out, out
    # the admin writes kvm.conf; removal deletes our link only
    write(f"{HOOKS}/kvm.conf", CONF)
    out = pkg["remove"]()
    assert not os.path.lexists(f"{HOOKS}/qemu"), out
    assert read(f"{HOOKS}/kvm.conf") == CONF and os.listdir(HOOKS) == ["kvm.conf"], out
    assert "removed the link" in out and "WARNING" not in out, out
    # a hook removed by hand comes back on an upgrade (as the .deb's configure does)
    out = pkg["upgrade"]()
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and "made" in out, out


def check_admins_hook_left_alone(pkg):
    fresh_root()
    write(f"{HOOKS}/qemu", DISPATCHER, 0o750)
    write(f"{HOOKS}/kvm.conf", CONF, 0o600)
    out = pkg["install"]()
    assert read(f"{HOOKS}/qemu") == DISPATCHER and not os.path.islink(f"{HOOKS}/qemu"), out
    assert os.stat(f"{HOOKS}/qemu").st_mode & 0o777 == 0o750
    assert read(f"{HOOKS}/kvm.conf") == CONF and os.stat(f"{HOOKS}/kvm.conf").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(HOOKS)) == ["kvm.conf", "qemu"], os.listdir(HOOKS)   # nothing moved aside
    assert "left /etc/libvirt/hooks/qemu alone" in out, out
    assert f"ln -s {BINARY} /etc/libvirt/hooks/qemu" in out, out
    assert "until /etc/libvirt/hooks/kvm.conf is written" not in out, out
    out = pkg["upgrade"]()                                        # said once, on the install
    assert "left" not in out and read(f"{HOOKS}/qemu") == DISPATCHER, out
    out = pkg["remove"]()
    assert read(f"{HOOKS}/qemu") == DISPATCHER and read(f"{HOOKS}/kvm.conf") == CONF, out
    # a foreign link (a `make install` into /usr/local) is left alone too, on install and removal
    fresh_root()
    os.makedirs(HOOKS)
    os.symlink("/usr/local/sbin/qemu-hook", f"{HOOKS}/qemu")
    out = pkg["install"]()
    assert "it is a symbolic link to /usr/local/sbin/qemu-hook" in out, out
    pkg["remove"]()
    assert os.readlink(f"{HOOKS}/qemu") == "/usr/local/sbin/qemu-hook"


def check_old_scripts_named(pkg):
    fresh_root()
    write(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh", START_SH, 0o755)
    write(f"{HOOKS}/qemu.d/win10/prepare/begin/hugepages.sh", HUGEPAGES_SH, 0o755)
    out = pkg["install"]()
    assert "    /etc/libvirt/hooks/qemu.d/win10/prepare/begin/start.sh\n" in out, out
    assert "hugepages" not in out and ROOT not in out, out
    assert read(f"{HOOKS}/qemu.d/win10/prepare/begin/start.sh") == START_SH   # named, not moved


# ---------------------------------------------------------------------------------------- RPM


def test_rpm_file_list():
    lines = rpmq("-lv").splitlines()
    entries = {}
    for line in lines:
        fields = line.split(None, 8)
        entries[fields[8].split(" -> ")[0]] = fields[0]
    names = sorted(entries)
    assert not [n for n in names if n == "/etc" or n.startswith("/etc/")], names
    for binary in ("/usr/sbin/qemu-hook", "/usr/libexec/qemu-hook/qemu-hook-act"):
        assert entries.get(binary) == "-rwxr-xr-x", (binary, entries.get(binary))
    assert [n for n in names if re.fullmatch(r"/usr/share/man/man8/qemu-hook\.8(\.gz)?", n)], names
    assert entries.get("/usr/share/doc/qemu-hook/kvm.conf") == "-rw-r--r--", names
    assert [n for n in names if re.fullmatch(r"/usr/share/licenses/qemu-hook[^/]*/LICENSE", n)], names
    # nothing else but rpm's own build-id links
    known = {"/usr/sbin/qemu-hook", "/usr/libexec/qemu-hook", "/usr/libexec/qemu-hook/qemu-hook-act",
             "/usr/share/doc/qemu-hook", "/usr/share/doc/qemu-hook/kvm.conf",
             "/usr/share/bash-completion/completions/qemu-hook"}
    rest = [n for n in names if n not in known and not n.startswith(("/usr/lib/.build-id", "/usr/share/licenses/",
                                                                       "/usr/share/man/man8/qemu-hook.8"))]
    assert not rest, rest
    with open(os.path.join(fakehost.REPO, "conf", "kvm.conf")) as f:
        assert member("usr/share/doc/qemu-hook/kvm.conf") == f.read()


def test_rpm_header_and_requirements():
    info = rpmq("--qf", "%{NAME} %{VERSION} %{RELEASE} %{LICENSE}\n")
    assert info.split()[:2] == ["qemu-hook", version()], info
    requires = rpmq("--requires")
    for req in ("libvirt-daemon-driver-qemu", "libinih.so.1", "libxml2.so.2", "libsystemd.so.0", "libudev.so.1",
                "libkmod.so.2"):
        assert re.search(rf"^{re.escape(req)}(\(| |$)", requires, re.M), (req, requires)
    # the BuildRequires by Fedora's names (rpmbuild --nodeps could not check them here)
    with open(SPEC) as f:
        spec = f.read()
    build_requires = re.findall(r"^BuildRequires:\s*(.+)$", spec, re.M)
    for name in ("gcc", "make", "pkgconfig(libsystemd)", "pkgconfig(libudev)", "pkgconfig(inih)",
                 "pkgconfig(libxml-2.0)", "pkgconfig(libkmod)", "pkgconfig(libvirt)"):
        assert name in build_requires, build_requires
    assert re.search(rf"^Version:\s*{re.escape(version())}$", spec, re.M), "the spec's Version is not the Makefile's"


def test_rpm_man_page_names_the_package_paths():
    names = rpmq("-l").split()
    man = next(n for n in names if n.startswith("/usr/share/man/man8/qemu-hook.8"))
    p = subprocess.run(f"rpm2archive - < '{rpm_path()}' | tar -xzO -f - '.{man}'"
                       + (" | gzip -dc" if man.endswith(".gz") else ""), shell=True, capture_output=True, text=True)
    assert p.returncode == 0 and ".SH FILES" in p.stdout, p.stderr
    assert "/usr/local/sbin" not in p.stdout and "/usr/local/share" not in p.stdout
    assert "/usr/sbin/qemu-hook" in p.stdout and "/usr/share/doc/qemu-hook/kvm.conf" in p.stdout


def test_rpm_scriptlets_say_and_pass_shellcheck():
    found = scriptlets()
    assert sorted(found) == ["postinstall", "preuninstall"], sorted(found)
    post, preun = found["postinstall"], found["preuninstall"]
    assert "setsebool -P virt_hooks_unconfined 1" in post and "SELinux" in post, post
    assert "restart libvirtd (or virtqemud)" in post, post
    # no clobbering: anything at the hook's path (a file, a link, even a dangling one) is left
    assert 'elif [ -e "$hook" ] || [ -L "$hook" ]; then\n        made=foreign' in post, post
    assert '[ "$1" -eq 0 ] || exit 0' in preun and "*.state" in preun, preun
    for name, text in found.items():
        path = fakehost.SCRATCH + f"/rpm-{name}.sh"
        write(path, text)
        p = subprocess.run(["shellcheck", "-s", "sh", path], capture_output=True, text=True)
        assert p.returncode == 0, name + "\n" + p.stdout + p.stderr


def test_rpm_post_links_only_where_nothing_is():
    check_link_made_and_removed(RPM, "/usr/share/doc/qemu-hook/kvm.conf")
    out = rpm_scriptlet("postinstall", 1)          # an install over our own link: SELinux said again
    assert "setsebool -P virt_hooks_unconfined 1" in out and "made" not in out, out


def test_rpm_post_leaves_the_admins_hook_alone():
    check_admins_hook_left_alone(RPM)


def test_rpm_post_names_old_gpu_moving_scripts():
    check_old_scripts_named(RPM)


def test_rpm_preun_refuses_while_a_hand_over_is_recorded():
    fresh_root()
    RPM["install"]()
    write(f"{ROOT}/run/qemu-hook/win10.state", "recorded\n", 0o600)
    out = rpm_scriptlet("preuninstall", 0, expect_rc=1)
    assert "a hand-over is still recorded in /run/qemu-hook" in out and "/run/qemu-hook/win10.state" in out, out
    assert "'qemu-hook --recover VM'" in out, out
    assert os.readlink(f"{HOOKS}/qemu") == BINARY, out
    # an upgrade's %preun ($1 = 1) neither refuses nor touches the link
    out = rpm_scriptlet("preuninstall", 1)
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and out == "", out
    # the override the message names
    out = rpm_scriptlet("preuninstall", 0, QEMU_HOOK_FORCE_REMOVE="1")
    assert not os.path.lexists(f"{HOOKS}/qemu"), out
    assert os.path.isfile(f"{ROOT}/run/qemu-hook/win10.state")   # runtime state is not the package's
    # a link the admin pointed elsewhere stays
    os.unlink(f"{ROOT}/run/qemu-hook/win10.state")
    os.symlink("/opt/other-hook", f"{HOOKS}/qemu")
    rpm_scriptlet("preuninstall", 0)
    assert os.readlink(f"{HOOKS}/qemu") == "/opt/other-hook"


# The real rpm: an overlay of / (read-only underneath, as the sandbox makes every mount) whose
# writes land in OVERLAY, with the throwaway root's /etc/libvirt and /run bound over its own.
OVERLAY = fakehost.SCRATCH + "/rpm-overlay"
RPM_IN_OVERLAY = r"""
set -e
o=$1 root=$2
shift 2
mkdir -p "$o/upper" "$o/work" "$o/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$o/upper,workdir=$o/work" "$o/merged"
mount --bind "$root/etc/libvirt" "$o/merged/etc/libvirt"
mount --bind "$root/run" "$o/merged/run"
exec rpm --root="$o/merged" --dbpath=/var/lib/rpm "$@"
"""


def rpm_real(*args, expect_rc=0):
    """rpm itself on the overlay (its scriptlets chrooted there, QEMU_HOOK_ROOT unset)."""
    env = {k: v for k, v in os.environ.items() if k != "QEMU_HOOK_ROOT"}
    return sandboxed(["sh", "-c", RPM_IN_OVERLAY, "rpm-in-overlay", OVERLAY, ROOT, *args], expect_rc, env)


def test_rpm_installed_and_erased_by_rpm():
    """What the scriptlets' arguments mean to rpm, and that a failing %preun keeps the package."""
    fresh_root()
    os.makedirs(f"{ROOT}/etc/libvirt")
    shutil.rmtree(OVERLAY, ignore_errors=True)
    installed = f"{OVERLAY}/upper/usr/libexec/qemu-hook/qemu-hook-act"
    out = rpm_real("-i", "--nodeps", rpm_path())
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and os.listdir(HOOKS) == ["qemu"], out
    assert "setsebool -P virt_hooks_unconfined 1" in out and "restart libvirtd (or virtqemud)" in out, out
    assert os.path.isfile(installed), out
    # a hand-over recorded: the erase fails, the package and the link stay
    write(f"{ROOT}/run/qemu-hook/win10.state", "recorded\n", 0o600)
    out = rpm_real("-e", "qemu-hook", expect_rc=1)
    assert "a hand-over is still recorded" in out and "%preun(qemu-hook" in out, out
    assert rpm_real("-q", "qemu-hook").startswith("qemu-hook-"), out
    assert os.readlink(f"{HOOKS}/qemu") == BINARY and os.path.isfile(installed), out
    # an upgrade (the same package again): %preun of the old one with 1 (no refusal), %post with 2
    out = rpm_real("-U", "--replacepkgs", "--nodeps", rpm_path())
    assert "error" not in out and "made" not in out and "removed" not in out, out
    assert os.readlink(f"{HOOKS}/qemu") == BINARY, out
    # the VM is down: the erase removes the package and our link
    os.unlink(f"{ROOT}/run/qemu-hook/win10.state")
    out = rpm_real("-e", "qemu-hook")
    assert "removed the link /etc/libvirt/hooks/qemu" in out and os.listdir(HOOKS) == [], out
    assert not os.path.exists(installed), out
    rpm_real("-q", "qemu-hook", expect_rc=1)
    # the admin's hook: left alone by rpm -i and rpm -e
    write(f"{HOOKS}/qemu", DISPATCHER, 0o750)
    out = rpm_real("-i", "--nodeps", rpm_path())
    assert "left /etc/libvirt/hooks/qemu alone" in out, out
    rpm_real("-e", "qemu-hook")
    assert read(f"{HOOKS}/qemu") == DISPATCHER and os.listdir(HOOKS) == ["qemu"]
    shutil.rmtree(OVERLAY)


# --------------------------------------------------------------------------------------- Arch


def pkgbuild_vars():
    """The PKGBUILD sourced by bash as makepkg does (startdir its directory): its variables and
    functions."""
    script = r'''
startdir=$1
. "$startdir/PKGBUILD"
for v in pkgname pkgver pkgrel pkgdesc arch url license depends makedepends source sha256sums install; do
        if ! declare -p "$v" >/dev/null 2>&1; then echo "MISSING $v"; continue; fi
        eval "vals=(\"\${$v[@]}\")"
        printf '%s' "$v"; printf '\t%s' "${vals[@]}"; echo
done
declare -F | sed 's/^declare -f /FUNC /'
'''
    p = subprocess.run(["bash", "-euc", script, "bash", PACKAGING], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    values, functions, missing = {}, set(), []
    for line in p.stdout.splitlines():
        if line.startswith("MISSING "):
            missing.append(line.split()[1])
        elif line.startswith("FUNC "):
            functions.add(line.split()[1])
        else:
            name, *vals = line.split("\t")
            values[name] = vals
    return values, functions, missing


def function_body(name):
    p = subprocess.run(["bash", "-c", f'startdir="$1"; . "$1/PKGBUILD"; declare -f {name}', "bash", PACKAGING],
                       capture_output=True, text=True, check=True)
    return p.stdout


def test_arch_pkgbuild_parses():
    for path in (PKGBUILD, INSTALL):
        p = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        assert p.returncode == 0, path + "\n" + p.stderr
    # shellcheck, but for the variables makepkg reads and the pkgdir/srcdir it sets
    p = subprocess.run(["shellcheck", "-s", "bash", "-e", "SC2034,SC2154", PKGBUILD], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_arch_pkgbuild_namcap_like_rules():
    values, functions, missing = pkgbuild_vars()
    assert not missing, f"missing: {missing}"
    assert values["pkgname"] == ["qemu-hook"], values["pkgname"]
    assert values["pkgver"] == [version()], f"pkgver {values['pkgver']} is not the Makefile's {version()}"
    assert re.fullmatch(r"[1-9][0-9]*", values["pkgrel"][0]), values["pkgrel"]
    assert values["pkgdesc"][0] and len(values["pkgdesc"][0]) <= 80, values["pkgdesc"]
    assert "x86_64" in values["arch"] and "any" not in values["arch"], values["arch"]
    assert values["url"][0].startswith("https://"), values["url"]
    assert values["license"] == ["MIT"], values["license"]
    assert sorted(values["depends"]) == sorted(["libvirt", "systemd-libs", "libinih", "libxml2", "kmod"]), \
        values["depends"]
    assert {"gcc", "make", "pkgconf"} <= set(values["makedepends"]), values["makedepends"]
    # one checksum per source; SKIP only for a VCS source (its content is a commit, not a file)
    assert len(values["source"]) == len(values["sha256sums"]) >= 1, values
    for src, sum_ in zip(values["source"], values["sha256sums"]):
        url = src.split("::", 1)[-1]
        if sum_ == "SKIP":
            assert url.startswith("git+"), f"SKIP for a non-VCS source {src}"
            assert "git" in values["makedepends"], "a git source needs git in makedepends"
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", sum_), sum_
    # the git source is this checkout, found from startdir (packaging/)
    assert values["source"] == [f"qemu-hook::git+file://{fakehost.REPO}"], values["source"]
    assert {"build", "package"} <= functions, functions
    assert os.path.isfile(os.path.join(PACKAGING, values["install"][0])), values["install"]
    with open(PKGBUILD) as f:
        text = f.read()
    assert not re.search(r"\bsudo\b", text), "sudo in the PKGBUILD"
    build = function_body("build")
    assert not re.search(r"\b(curl|wget|git|pip|npm|cargo fetch|go get)\b", build), build
    # every write of package() goes under "$pkgdir"
    package = function_body("package")
    for line in package.splitlines():
        words = line.strip().rstrip(";")
        if re.match(r"(make|install|sed|cp|mv|ln|mkdir|rm|tee|chmod|touch)\b", words) or ">" in words:
            assert '"$pkgdir' in words or "DESTDIR=\"$pkgdir\"" in words, f"package() writes outside $pkgdir: {line}"
    assert 'DESTDIR="$pkgdir"' in package and "PREFIX=/usr" in package, package


def test_arch_build_and_package_run_as_makepkg_would():
    """build() in a network namespace of its own (no network: it cannot fetch), package() where
    every mount but /run is read-only; the package's tree is the one the RPM has."""
    guard()
    work = fakehost.SCRATCH + "/makepkg"
    shutil.rmtree(work, ignore_errors=True)
    src, pkg = work + "/src", work + "/pkg"
    os.makedirs(src)
    os.makedirs(pkg)
    # makepkg's git source: a clone of the checkout (its committed HEAD)
    subprocess.run(["git", "clone", "-q", "file://" + fakehost.REPO, src + "/qemu-hook"], check=True,
                   capture_output=True)
    run = 'set -e; startdir="$1"; . "$1/PKGBUILD"; srcdir="$2"; pkgdir="$3"; cd "$srcdir"; "$4"'
    # Without the flags of a make that runs the tests: under its -O (make integration), make 4.3
    # crashes where /tmp is read-only, as in the sandbox.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    p = subprocess.run(["unshare", "-n", "bash", "-c", run, "bash", PACKAGING, src, pkg, "build"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sandboxed(["bash", "-c", run, "bash", PACKAGING, src, pkg, "package"], env=env)
    tree = sorted(os.path.relpath(os.path.join(d, f), pkg) for d, _, files in os.walk(pkg) for f in files)
    assert tree == ["usr/libexec/qemu-hook/qemu-hook-act", "usr/sbin/qemu-hook",
                    "usr/share/bash-completion/completions/qemu-hook", "usr/share/doc/qemu-hook/kvm.conf",
                    "usr/share/licenses/qemu-hook/LICENSE", "usr/share/man/man8/qemu-hook.8"], tree
    for binary in ("usr/sbin/qemu-hook", "usr/libexec/qemu-hook/qemu-hook-act"):
        assert os.stat(os.path.join(pkg, binary)).st_mode & 0o777 == 0o755, binary
    man = read(pkg + "/usr/share/man/man8/qemu-hook.8")
    assert "/usr/local/sbin" not in man and "/usr/local/share" not in man and "/usr/sbin/qemu-hook" in man
    assert "/usr/share/bash-completion/completions/qemu-hook" in man
    # the front end was built for the package's libexec directory (a string compiled in)
    with open(pkg + "/usr/sbin/qemu-hook", "rb") as f:
        assert b"/usr/libexec/qemu-hook/qemu-hook-act" in f.read()
    shutil.rmtree(work)


def test_arch_install_script_passes_shellcheck():
    """As bash (pacman's scriptlet shell on Arch) and as POSIX sh (a pacman built with another)."""
    for shell in ("bash", "sh"):
        p = subprocess.run(["shellcheck", "-s", shell, INSTALL], capture_output=True, text=True)
        assert p.returncode == 0, shell + "\n" + p.stdout + p.stderr


def test_arch_post_install_links_only_where_nothing_is():
    check_link_made_and_removed(ARCH, "/usr/share/doc/qemu-hook/kvm.conf")


def test_arch_post_install_leaves_the_admins_hook_alone():
    check_admins_hook_left_alone(ARCH)


def test_arch_post_install_names_old_gpu_moving_scripts():
    check_old_scripts_named(ARCH)


def test_arch_pre_remove_warns_while_a_hand_over_is_recorded():
    """pacman ignores pre_remove's exit status: it cannot refuse, so it warns, loudly."""
    fresh_root()
    ARCH["install"]()
    write(f"{ROOT}/run/qemu-hook/win10.state", "recorded\n", 0o600)
    out = ARCH["remove"]()
    assert "WARNING: a hand-over is still recorded in /run/qemu-hook" in out, out
    assert "/run/qemu-hook/win10.state" in out and "'qemu-hook --recover VM'" in out, out
    assert not os.path.lexists(f"{HOOKS}/qemu"), out
    assert os.path.isfile(f"{ROOT}/run/qemu-hook/win10.state")


# ------------------------------------------------------------------------------------- both


def test_moves_gpu_is_the_same_everywhere():
    def moves_gpu(path):
        with open(os.path.join(fakehost.REPO, path)) as f:
            text = f.read()
        m = re.search(r"^# moves_gpu: .*?^# moves_gpu end$", text, re.M | re.S)
        assert m, path
        return m.group(0)
    reference = moves_gpu("debian/postinst")
    for path in ("tools/hook-link", "packaging/qemu-hook.spec", "packaging/qemu-hook.install"):
        assert moves_gpu(path) == reference, path
    # and rpm's macro expansion left it as it is in the built package's %post
    assert reference in scriptlets()["postinstall"]
