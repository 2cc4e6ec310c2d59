"""qemu-hook --check (issue 11 item 1): a readiness report, read only. The emulated host with the
mocked buses of test_desktop is made ready (the hook linked where libvirt looks), then broken
one way at a time; each test asserts the exit status, the finding's level and text, and that
--check wrote no sysfs file and made no changing D-Bus call."""
import contextlib
import json
import os
import shutil
import subprocess
import time

import fakehost
from fakehost import VEGA, VEGA_AUDIO
from test_desktop import HOOK, Desktop, _changing_calls, check, native_conf, write_conf

HOOKS_DIR = f"{fakehost.LIBVIRT_ETC}/hooks"     # a tmpfs of the test namespace (check_safe)
HOOK_PATH = f"{HOOKS_DIR}/qemu"
MODULE = f"/usr/lib/modules/{os.uname().release}/kernel/drivers/vfio/pci/vfio-pci.ko"


def _check(conf, *opts, user=None):
    """--check as libvirt's admin runs it; returns (rc, stdout, stderr)."""
    fakehost.check_safe()
    p = subprocess.run([HOOK, "--config", conf, "--check", *opts], capture_output=True, text=True,
                       env=fakehost.hook_env(), timeout=120, user=user)
    return p.returncode, p.stdout, p.stderr


def _json(conf, *opts):
    rc, out, err = _check(conf, "--json", *opts)
    check(out.endswith("}\n"), f"--check --json exit {rc}: not one JSON object", out, err)
    return rc, json.loads(out)


def _finding(out, level, *words):
    """The line of the finding at LEVEL holding every one of WORDS, with its fix line, or ""."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"  {level:<5} ") and all(w in line for w in words):
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("        -> ") else ""
            return line + ("\n" + fix if fix else "")
    return ""


def _install_hook(target=HOOK):
    fakehost.check_safe()
    os.makedirs(HOOKS_DIR, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(HOOK_PATH)
    os.symlink(target, HOOK_PATH)


def _uninstall_hook():
    with contextlib.suppress(FileNotFoundError):
        os.unlink(HOOK_PATH)


@contextlib.contextmanager
def _daemon(name="libvirtd"):
    """A process called NAME (a copy of sleep) in this mount namespace, as a libvirt daemon."""
    exe = f"{fakehost.SCRATCH}/{name}"
    shutil.copy("/bin/sleep", exe)
    p = subprocess.Popen([exe, "600"])
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait()


def _nothing_changed(host, d):
    check(host.writes() == 0, "--check wrote sysfs", *host.log())
    check(not _changing_calls(d, "system") and not _changing_calls(d, "user"), "--check changed a unit",
          _changing_calls(d, "system"), _changing_calls(d, "user"))


def test_a_ready_host_says_ready(host):
    """Every group reported, nothing FAIL, exit 0; the JSON says the same; nothing written."""
    _install_hook()
    with Desktop() as d:
        rc, out, err = _check(native_conf())
        check(rc == 0 and out.rstrip().endswith("warnings)") and "\nready: a hand-over would go through" in out,
              f"exit {rc}", out, err)
        for heading in ("kernel:", "config:", "gpu:", "framebuffer and consoles:", "secondary GPU:", "desktop:",
                        "installation:", "access control:", "VMs (libvirt):", "hand-over:"):
            check(f"\n{heading}\n" in out, f"no group {heading}", out)
        check(_finding(out, "ok", "IOMMU on:", "IOMMU groups"), "the IOMMU", out)
        check(_finding(out, "ok", "vfio-pci registered (module vfio_pci loaded)"), "vfio-pci", out)
        check(_finding(out, "ok", VEGA, "driver amdgpu", "IOMMU group 17", "boot VGA"), "the Vega", out)
        check(_finding(out, "ok", VEGA_AUDIO, "driver vfio-pci"), "the Vega's audio", out)
        check(_finding(out, "ok", "display driver radeon (module aliases): registered"), "the R5's driver", out)
        check(_finding(out, "ok", "display manager gdm.service, active"), "the display manager", out)
        check(_finding(out, "ok", "liss's wireplumber.service: active"), "a user unit", out)
        check(_finding(out, "ok", f"{HOOK_PATH} -> {HOOK} is qemu-hook"), "the hook", out)
        check(_finding(out, "info", "[host] timeout = 20000 ms (default)"), "a default setting", out)
        check(_finding(out, "ok", "a hand-over now: 19 steps"), "the planner's verdict", out)
        check(not _finding(out, "FAIL"), "a FAIL", out)
        rc, j = _json(native_conf())
        check(rc == 0 and j["ready"] is True and j["failures"] == 0 and j["root"] is True, f"JSON exit {rc}", j)
        check({f["level"] for f in j["findings"]} <= {"ok", "info", "warn"}, "JSON levels", j)
        check(any(f["group"] == "gpu" and VEGA in f["text"] for f in j["findings"]), "JSON gpu", j)
        _nothing_changed(host, d)


def test_no_iommu_groups(host):
    """The IOMMU off: no groups, none on the GPU's functions; the planner refuses too."""
    _install_hook()
    shutil.rmtree(f"{host.backing}/kernel/iommu_groups")
    os.makedirs(f"{host.backing}/kernel/iommu_groups")
    for top, dirs, files in os.walk(f"{host.backing}/devices"):
        if "iommu_group" in dirs + files:
            os.unlink(f"{top}/iommu_group")
    with Desktop() as d:
        rc, out, err = _check(native_conf())
        check(rc == 1 and "NOT READY" in out, f"exit {rc}", out, err)
        f = _finding(out, "FAIL", "IOMMU off: no IOMMU groups in /sys/kernel/iommu_groups")
        check("intel_iommu=on" in f and "amd_iommu=on" in f, "the IOMMU finding and its fix", out)
        check(_finding(out, "FAIL", VEGA, "no IOMMU group"), "the Vega without a group", out)
        check("holds its functions alone" not in out, "a group without groups called viable", out)
        check(_finding(out, "FAIL", "a hand-over now would be refused", "has no IOMMU group"), "the verdict", out)
        _nothing_changed(host, d)


@fakehost.variant(foreign=True)
def test_a_foreign_device_in_the_gpus_group(host):
    _install_hook()
    with Desktop() as d:
        rc, out, err = _check(native_conf())
        check(rc == 1, f"exit {rc}", out, err)
        f = _finding(out, "FAIL", "IOMMU group 17 also holds", "the whole group must go to the VM")
        check("xhci_hcd" in f and "bind it to vfio-pci" in f, "the foreign device and the fix", out)
        check(_finding(out, "FAIL", "a hand-over now would be refused: IOMMU group 17"), "the verdict", out)
        _nothing_changed(host, d)


def test_vfio_pci_missing(host):
    """Neither registered (no /sys/bus/pci/drivers/vfio-pci) nor loadable (no module)."""
    _install_hook()
    shutil.rmtree(f"{host.backing}/bus/pci/drivers/vfio-pci")
    os.rename(MODULE, MODULE + ".away")
    try:
        subprocess.run(["depmod", os.uname().release], check=True)
        with Desktop() as d:
            rc, out, err = _check(native_conf())
            check(rc == 1, f"exit {rc}", out, err)
            f = _finding(out, "FAIL", "vfio-pci is neither registered nor loadable")
            check("install the kernel's vfio-pci module" in f, "the finding and its fix", out)
            check(_finding(out, "FAIL", "parking driver vfio-pci: neither registered nor loadable"), "the parking", out)
            _nothing_changed(host, d)
    finally:
        os.rename(MODULE + ".away", MODULE)
        subprocess.run(["depmod", os.uname().release], check=True)


def test_a_bad_config(host):
    """A broken line: the file, the line, the key; a warning of the original format is a warning."""
    _install_hook()
    bad = write_conf("[gpu]\naddress = 0000:0d:00.0\n[host]\ntimeout = soon\n", "bad.conf")
    rc, out, err = _check(bad)
    check(rc == 1, f"exit {rc}", out, err)
    check(_finding(out, "FAIL", f"{bad}:4: [host] timeout"), "the line of the error", out)
    check(_finding(out, "FAIL", "no hand-over can be planned: no usable config"), "the verdict", out)
    rc, out, err = _check(f"{fakehost.SCRATCH}/nonexistent.conf")
    check(rc == 1 and _finding(out, "FAIL", "nonexistent.conf"), f"a missing --config: exit {rc}", out, err)
    orig = write_conf('VIRSH_GPU_VIDEO="0000:0d:00.0"\nVIRSH_SECONDARY_GPU_VIDEO="0000:08:00.0"\n'
                      'VIRSH_SOMETHING="x"\n', "orig.conf")
    rc, out, err = _check(orig)
    check(_finding(out, "ok", "orig.conf (the original scripts' VIRSH_* format)"), "the format", out, err)
    check(_finding(out, "warn", "orig.conf:3: VIRSH_SOMETHING: unknown key, ignored"), "the warning", out, err)
    check(host.writes() == 0, "--check wrote sysfs", *host.log())


def test_a_holder_of_the_gpu(host):
    """Who holds the GPU's nodes now: PID, command and node (the hand-over waits for them)."""
    _install_hook()
    with Desktop() as d, host.hold(f"/dev/dri/{host.drm_cards(VEGA)[0]}") as pid:
        rc, out, err = _check(native_conf())
        check(rc == 0, f"exit {rc}", out, err)
        check(_finding(out, "info", f"{VEGA} is held now by {pid} (python3", "/dev/dri/card"), "the holder", out)
        _nothing_changed(host, d)


def _selinux(host, enforce, boolean):
    os.makedirs(f"{host.backing}/fs/selinux/booleans", exist_ok=True)
    with open(f"{host.backing}/fs/selinux/enforce", "w") as f:
        f.write(enforce)
    if boolean is not None:
        with open(f"{host.backing}/fs/selinux/booleans/virt_hooks_unconfined", "w") as f:
            f.write(boolean)


def test_selinux_enforcing_with_the_boolean_off(host):
    """Read from selinuxfs (emulated: /sys/fs/selinux of the fake sysfs): enforcing and
    virt_hooks_unconfined off is a FAIL with the command that fixes it; on, it is fine;
    permissive, a warning."""
    _install_hook()
    _selinux(host, "1", "0 0")
    with Desktop() as d:
        rc, out, err = _check(native_conf())
        check(rc == 1, f"exit {rc}", out, err)
        f = _finding(out, "FAIL", "SELinux enforcing and virt_hooks_unconfined off")
        check(f.endswith("-> setsebool -P virt_hooks_unconfined 1"), "the finding and its fix", out)
        check(_finding(out, "warn", f"{HOOK_PATH}: no SELinux label readable"), "the hook's label", out)
        _selinux(host, "1", "1 1")
        rc, out, err = _check(native_conf())
        check(rc == 0 and _finding(out, "ok", "SELinux enforcing, virt_hooks_unconfined on"), f"on: exit {rc}", out)
        _selinux(host, "0", "0 0")
        rc, out, err = _check(native_conf())
        check(rc == 0 and _finding(out, "warn", "SELinux permissive and virt_hooks_unconfined off"),
              f"permissive: exit {rc}", out)
        _nothing_changed(host, d)


def test_apparmor_and_a_daemon_started_before_the_hook(host):
    """A libvirt daemon running since before the hook was installed has not seen it: restart it.
    AppArmor on (the module's parameter): the daemon's profile is read from its attr."""
    with open(f"{host.backing}/module/apparmor/parameters/enabled", "w") if os.path.isdir(
            f"{host.backing}/module/apparmor/parameters") else _new(f"{host.backing}/module/apparmor/parameters/enabled") as f:
        f.write("Y\n")
    _uninstall_hook()
    with Desktop(), _daemon("virtqemud") as pid:
        time.sleep(0.1)         # the daemon's start (in clock ticks) before the hook's ctime
        _install_hook()
        rc, out, err = _check(native_conf())
        check(rc == 1, f"exit {rc}", out, err)
        f = _finding(out, "FAIL", f"virtqemud (PID {pid}) runs since", f"before {HOOK_PATH} was installed")
        check(f.endswith("-> systemctl restart virtqemud"), "the daemon and its fix", out)
        check(_finding(out, "info", "AppArmor on", f"virtqemud (PID {pid})"), "AppArmor", out)
    with Desktop(), _daemon("libvirtd") as pid:
        rc, out, err = _check(native_conf())
        check(rc == 0 and _finding(out, "ok", f"libvirtd (PID {pid}) runs since", "after"), f"exit {rc}", out)


def _new(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "w")


def test_the_hook_is_not_qemu_hook(host):
    """No hook, the origin's dispatcher script in its place, a dangling link: each a FAIL naming it."""
    _uninstall_hook()
    with Desktop():
        rc, out, err = _check(native_conf())
        check(rc == 1 and _finding(out, "FAIL", f"no hook {HOOK_PATH}"), f"no hook: exit {rc}", out, err)
        os.makedirs(HOOKS_DIR, exist_ok=True)
        with open(HOOK_PATH, "w") as f:
            f.write("#!/bin/bash\n# the origin's hook dispatcher\n")
        os.chmod(HOOK_PATH, 0o755)
        rc, out, err = _check(native_conf())
        check(rc == 1 and _finding(out, "FAIL", "is a script (the original hook dispatcher?), not qemu-hook"),
              f"a script: exit {rc}", out, err)
        _install_hook(f"{fakehost.SCRATCH}/nothing-here")
        rc, out, err = _check(native_conf())
        check(rc == 1 and _finding(out, "FAIL", "a link to nothing"), f"dangling: exit {rc}", out, err)
        # a copy of qemu-hook is qemu-hook
        _uninstall_hook()
        shutil.copy(HOOK, HOOK_PATH)
        rc, out, err = _check(native_conf())
        check(rc == 0 and _finding(out, "ok", f"{HOOK_PATH} is qemu-hook"), f"a copy: exit {rc}", out, err)
    _uninstall_hook()


def test_no_display_driver_for_the_secondary(host):
    _install_hook()
    conf = write_conf("[gpu]\naddress = 0000:0d:00.0\n[secondary]\naddress = 0000:08:00.0\ndriver = nouveau\n"
                      "[desktop]\ndisplay_manager = none\n", "nodrv.conf")
    rc, out, err = _check(conf)
    check(rc == 1, f"exit {rc}", out, err)
    f = _finding(out, "FAIL", "display driver nouveau (config): neither registered nor loadable")
    check("fix [secondary] driver" in f, "the finding and its fix", out)


def test_while_handed_over(host):
    """After a hand-over the journal is reported; --check stays read only."""
    _install_hook()
    conf = native_conf()
    with Desktop() as d:
        rc, _, err, _ = fakehost.run_hook([HOOK, "--config", conf, "win10", "prepare", "begin", "-"],
                                          fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO]))
        check(rc == 0, f"prepare begin exit {rc}", err)
        host.clear_log()
        d.buses.clear_calls()
        d.buses.clear_calls(user=True)
        rc, out, err = _check(conf)
        check(_finding(out, "info", "win10: the GPU is handed over (journal /run/qemu-hook/win10.state)"),
              f"the journal: exit {rc}", out, err)
        check(_finding(out, "ok", VEGA, "driver vfio-pci"), "the Vega on vfio-pci", out)
        _nothing_changed(host, d)
        rc, _, err, _ = fakehost.run_hook([HOOK, "--config", conf, "win10", "release", "end", "-"],
                                          fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO]))
        check(rc == 0, f"release end exit {rc}", err)


def test_as_a_user(host):
    """As a user, on the ready host: it runs, says so, and what it cannot see (the mocked system
    bus answers root alone) is a warning to run it as root, never a FAIL of the machine."""
    _install_hook()
    with Desktop():
        rc, out, err = _check(native_conf(), user="liss")
        check(rc == 0 and "qemu-hook --check, as liss (not root:" in out and not _finding(out, "FAIL"),
              f"exit {rc}", out, err)
        check(_finding(out, "warn", "no hand-over planned: the desktop's state cannot be read as liss").endswith(
              "-> run --check as root"), "what it could not see", out)
        check(_finding(out, "warn", f"{VEGA}: the open files of", "processes of other users cannot be read"),
              "the holders it could not see", out)


def test_usage_errors(host):
    for argv in (["--check", "a", "b"], ["--check", "--status"], ["--check", "--recover", "vm"],
                 ["--check", "--dry-run"], ["--json"]):
        rc, out, err, _ = fakehost.run_hook([HOOK, *argv])
        check(rc == 2 and out == "" and "see --help" in err, f"{argv}: exit {rc}", out, err)
