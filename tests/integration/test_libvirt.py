"""End to end: a real libvirtd, with qemu-system-x86 (TCG), calls qemu-hook as `make install` put
it, on `virsh start` and `virsh destroy` (tests/lib/libvirthost.py). libvirt runs the hook with
its scrubbed environment; a test wrapper takes it into the runner's namespace, where /sys is the
emulated host of the test. Assertions are on virsh's exit status and messages, the domain's
state, the emulated sysfs and the mocked buses.

One libvirtd serves every test of this file (it takes a second to start); each test defines its
own domains. In the sanitizer pass of `make integration` (QEMU_HOOK set) the wrapper runs that
build instead of the installed binary.
"""
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import busmock
import fakehost
import libvirthost
from fakehost import R5, VEGA, VEGA_AUDIO

HOOKS = "/etc/libvirt/hooks"
QEMU_D = HOOKS + "/qemu.d"
JOURNALS = "/run/qemu-hook"
RECORD = "/run/fakehost/libvirt-scripts.log"
SANITIZER_BUILD = os.environ.get("QEMU_HOOK")

NATIVE = fakehost.NATIVE_CONF + """[vm gaming]
handle = yes
"""
ORIGINAL = """VIRSH_GPU_VIDEO="0000:0d:00.0"
VIRSH_GPU_AUDIO="0000:0d:00.1"
VIRSH_SECONDARY_GPU_VIDEO="0000:08:00.0"
VIRSH_SECONDARY_GPU_AUDIO="0000:08:00.1"
VIRSH_USER="liss"
VIRSH_USER_DBUS_ADDR="unix:path=/run/user/{uid}/bus"
"""

LV = None


def libvirt():
    global LV
    if LV is None:
        LV = libvirthost.Libvirt.start(SANITIZER_BUILD and os.path.abspath(SANITIZER_BUILD))
    return LV


def teardown_module():
    if LV:
        LV.stop()
        shutil.rmtree(QEMU_D, ignore_errors=True)
        if os.path.exists(HOOKS + "/kvm.conf"):        # a test's (`make install` writes none)
            os.unlink(HOOKS + "/kvm.conf")


def setup(conf=NATIVE, domains=(("gaming", ()),)):
    """A clean slate for one test: kvm.conf, no scripts, no journals, the given domains defined."""
    lv = libvirt()
    for name in lv.ok("list", "--all", "--name")[0].split():
        lv.virsh("destroy", name)
        lv.ok("undefine", name)
    shutil.rmtree(QEMU_D, ignore_errors=True)
    shutil.rmtree(JOURNALS, ignore_errors=True)
    for f in os.listdir(os.path.dirname(RECORD)):
        if f.startswith(os.path.basename(RECORD)):
            os.unlink(os.path.join(os.path.dirname(RECORD), f))
    with open(HOOKS + "/kvm.conf", "w") as f:
        f.write(conf)
    os.chmod(HOOKS + "/kvm.conf", 0o644)
    for name, hostdevs in domains:
        lv.define(name, hostdevs)
    return lv


def recorder(vm, op, sub, body="exit 0"):
    """qemu.d/VM/OP/SUB/10-record: notes its arguments and the GPU's driver when it runs."""
    fakehost.recording_script(f"{QEMU_D}/{vm}/{op}/{sub}/10-record", RECORD, f"{op}-{sub}", body)


def record():
    """[VM, OP, SUB, EXTRA, the GPU's driver] per script run."""
    return [r[1:] for r in fakehost.read_record(RECORD)]


def test_install_made_the_hook():
    libvirt()
    assert os.readlink(HOOKS + "/qemu") == "/usr/local/sbin/qemu-hook"
    assert open("/usr/local/sbin/qemu-hook").read().startswith("#!/bin/sh\n# Test wrapper")
    assert os.path.exists(f"{libvirthost.DEST}/usr/local/sbin/qemu-hook")


def test_start_hands_over_and_destroy_hands_back(host):
    lv = setup()
    recorder("gaming", "started", "begin")
    before = host.snapshot()
    out, start = lv.ok("start", "gaming")
    assert lv.state("gaming") == "running"
    assert host.driver(VEGA) == "vfio-pci" and host.driver(VEGA_AUDIO) == "vfio-pci", host.snapshot()
    assert host.driver(R5) == "radeon" and host.drm_cards(R5)
    assert os.path.exists(f"{JOURNALS}/gaming.state")
    assert record() == [["gaming", "started", "begin", "-", "vfio-pci"]], record()
    _, destroy = lv.ok("destroy", "gaming")
    assert lv.state("gaming") == "shut off"
    assert host.snapshot() == before
    assert not os.path.exists(f"{JOURNALS}/gaming.state")
    print(f"    virsh start {start * 1000:.0f} ms, virsh destroy {destroy * 1000:.0f} ms (with the hand-over)")


def test_domain_xml_passing_the_gpu(host):
    """Ownership from the XML libvirt passes on stdin. This machine has no such device and no
    IOMMU, so libvirt fails the start after `prepare begin`; its `release end` hands back."""
    lv = setup(NATIVE.replace("[vm gaming]\nhandle = yes\n", ""), (("win10", (VEGA, VEGA_AUDIO)),))
    for op, sub in (("prepare", "begin"), ("release", "end")):
        recorder("win10", op, sub)
    before = host.snapshot()
    rc, out, err, _ = lv.virsh("start", "win10")
    # The hand-over happened: the GPU was on vfio-pci when prepare's scripts ran, and still when
    # release's ran, before the hand-back.
    assert [r[1:3] + r[-1:] for r in record()] == [["prepare", "begin", "vfio-pci"], ["release", "end", "vfio-pci"]], \
        (record(), err)
    assert rc == 1 and "qemu-hook" not in err, err    # libvirt's own failure, not the hook's
    print("    libvirt: " + err.strip().splitlines()[-1])
    assert host.snapshot() == before
    assert not os.path.exists(f"{JOURNALS}/win10.state")


def test_vm_without_the_gpu_makes_no_writes(host):
    lv = setup(domains=(("plain", ()),))
    for op, sub in (("prepare", "begin"), ("release", "end")):
        recorder("plain", op, sub)      # proof that the hook ran
    lv.ok("start", "plain")
    assert lv.state("plain") == "running"
    lv.ok("destroy", "plain")
    assert [r[1:3] + r[-1:] for r in record()] == [["prepare", "begin", "amdgpu"], ["release", "end", "amdgpu"]], \
        record()
    assert host.writes() == 0, host.log()
    assert not os.path.isdir(JOURNALS) or os.listdir(JOURNALS) == ["lock"] or not os.listdir(JOURNALS), \
        os.listdir(JOURNALS)


def test_injected_failure_fails_the_start_and_restores_the_host(host):
    lv = setup()
    before = host.snapshot()
    host.fail("bus/pci/drivers/amdgpu/unbind", "EBUSY")
    rc, out, err, _ = lv.virsh("start", "gaming")
    assert rc == 1, (rc, err)
    assert "Hook script execution failed" in err, err
    assert "moving 0000:0d:00.0 to vfio-pci: unbind from amdgpu failed" in err, err
    assert re.search(r"qemu-hook: hand-over of gaming failed at step \d+/\d+ \(move 0000:0d:00\.0 from amdgpu to vfio-pci\): Device or resource busy", err), err
    assert "the host was restored" in err, err
    assert lv.state("gaming") == "shut off"
    # after libvirt's own `stopped end` and `release end`
    assert host.snapshot() == before
    assert not os.path.exists(f"{JOURNALS}/gaming.state")


def test_libvirtd_restart_keeps_the_vm_and_the_gpu(host):
    """On restart libvirtd reconnects to the running qemu and calls `reconnect begin`; a failing
    hook there would kill the VM, so a failing script is only logged."""
    lv = setup()
    recorder("gaming", "reconnect", "begin", body="exit 1")
    before = host.snapshot()
    lv.ok("start", "gaming")
    pid = lv.qemu_pid("gaming")
    lv.restart_daemon()
    # libvirtd calls the hook from its reconnect thread, possibly after answering virsh
    host.wait(lambda: record(), timeout=30)
    assert record() == [["gaming", "reconnect", "begin", "-", "vfio-pci"]], record()
    assert lv.state("gaming") == "running"
    assert lv.qemu_pid("gaming") == pid and os.path.exists(f"/proc/{pid}")
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon"
    lv.ok("destroy", "gaming")
    assert host.snapshot() == before


def test_legacy_prepare_script_gets_the_xml(host):
    lv = setup()
    path = f"{QEMU_D}/gaming/prepare/begin/start.sh"
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(f"#!/bin/bash\necho \"$@\" > {RECORD}\ncat > {RECORD}.xml\n")
    os.chmod(path, 0o755)
    lv.ok("start", "gaming")
    with open(RECORD) as f:
        assert f.read() == "gaming prepare begin -\n"
    dom = ET.parse(f"{RECORD}.xml").getroot()
    live = ET.fromstring(lv.ok("dumpxml", "gaming")[0])
    assert dom.tag == "domain" and dom.findtext("name") == "gaming"
    assert dom.findtext("uuid") == live.findtext("uuid")
    lv.ok("destroy", "gaming")


def test_original_kvm_conf_with_the_desktop(host):
    """The shell scripts' kvm.conf, unchanged, with gdm and the user's pipewire on mocked buses:
    stopped and started again around the hand-over, and again around libvirt's release."""
    user = busmock.ensure_user("liss", fakehost.SCRATCH)
    lv = setup(ORIGINAL.format(uid=user.pw_uid), (("win10", (VEGA, VEGA_AUDIO)),))
    buses = busmock.Buses.start(user="liss")
    try:
        before = host.snapshot()
        rc, out, err, _ = lv.virsh("start", "win10")
        assert rc == 1 and "qemu-hook" not in err, err
        stops = [c for c in buses.system_calls() if c[0] in ("StopUnit", "StartUnit")]
        assert [c[0] for c in stops] == ["StopUnit", "StartUnit", "StopUnit", "StartUnit"], stops
        assert buses.unit_state("gdm.service") == "active"
        assert buses.unit_state("pipewire.service", user=True) == "active"
        assert host.snapshot() == before
    finally:
        buses.stop()


def test_dry_run_reads_the_domain_xml_from_libvirt(host):
    """By hand, --dry-run without XML on stdin reads the domain's XML through libvirt's API (a
    read-only connection): the plan of a VM that passes the GPU, nothing for one that does not, a
    clear error for one libvirt does not know. Hook mode never loads libvirt: the binary does not
    link it, and a call with its XML on stdin opens no libvirt.so."""
    setup(NATIVE.replace("[vm gaming]\nhandle = yes\n", ""), (("win10", (VEGA, VEGA_AUDIO)), ("plain", ())))
    hook = os.path.abspath(SANITIZER_BUILD or "qemu-hook")
    # The plain build reads from libvirt: under ASan, libvirt opened with dlopen() calls xdr
    # functions through ASan's interceptors, whose real targets were looked up before libtirpc
    # was loaded (NULL: a SEGV in virNetMessageEncodeHeader). Runs with options go straight to
    # qemu-hook-act, so it is called itself.
    act = os.path.join(fakehost.REPO, "qemu-hook-act")
    run = lambda *argv: fakehost.run_hook([act, "--config", HOOKS + "/kvm.conf", *argv], "",  # noqa: E731
                                          {"LIBVIRT_DEFAULT_URI": libvirthost.URI})
    rc, out, err, _ = run("--dry-run", "win10", "prepare", "begin")
    assert rc == 0 and "hand-over of win10:" in out and f"move {VEGA} from amdgpu to vfio-pci" in out, (rc, out, err)
    rc, out, err, _ = run("--dry-run", "plain", "prepare", "begin")
    assert rc == 0 and "hand-over" not in out, (rc, out, err)
    rc, out, err, _ = run("--dry-run", "nosuchvm", "prepare", "begin")
    assert rc == 2 and "nosuchvm: reading the domain XML from libvirt:" in err and "nosuchvm" in err, (rc, err)
    assert host.writes() == 0, host.log()
    for binary in (act, os.path.join(os.path.dirname(hook), "qemu-hook-act")):
        assert "libvirt" not in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout, binary
    trace = "/run/fakehost/hook-mode.strace"
    before = host.snapshot()
    for op, sub in (("prepare", "begin"), ("release", "end")):
        fakehost.check_safe()
        p = subprocess.run(["strace", "-f", "-e", "trace=openat", "-o", trace, hook, "--config", HOOKS + "/kvm.conf",
                            "win10", op, sub, "-"], input=fakehost.domain_xml("win10", [VEGA]), capture_output=True,
                           text=True, env=fakehost.hook_env({"ASAN_OPTIONS": "detect_leaks=0"}), timeout=60)
        assert p.returncode == 0, (op, p.returncode, p.stderr)
        with open(trace) as f:
            assert "libvirt.so" not in f.read(), f"{op} {sub} as libvirt calls it loaded libvirt"
    assert host.snapshot() == before


def test_check_reads_the_vms_from_libvirt(host):
    """--check VM reads the VM's XML through libvirt's API (read only): which functions of the GPU
    it passes, managed or not; without VM every domain libvirt knows; a VM libvirt does not know
    is a FAIL naming it. qemu-hook-act itself is called, for the reason the test above gives."""
    setup(NATIVE.replace("[vm gaming]\nhandle = yes\n", ""), (("win10", (VEGA, VEGA_AUDIO)), ("plain", ())))
    act = os.path.join(fakehost.REPO, "qemu-hook-act")
    run = lambda *argv: fakehost.run_hook([act, "--config", HOOKS + "/kvm.conf", "--check", *argv], "",  # noqa: E731
                                          {"LIBVIRT_DEFAULT_URI": libvirthost.URI})
    passes = f"win10 passes the GPU: {VEGA} (managed), {VEGA_AUDIO} (managed)"
    rc, out, err, _ = run("win10")
    assert "\nVMs (libvirt):\n  ok    " + passes in out and "plain" not in out, (rc, out, err)
    rc, out, err, _ = run()
    assert passes in out and "  ok    plain does not pass the GPU: its start hands nothing over" in out, (rc, out)
    rc, out, err, _ = run("plain")
    assert "  warn  plain does not pass the GPU" in out and "virsh edit" in out, (rc, out)
    rc, out, err, _ = run("nosuchvm")
    assert rc == 1 and "  FAIL  nosuchvm: reading the domain XML from libvirt:" in out, (rc, out, err)
    assert host.writes() == 0, host.log()
