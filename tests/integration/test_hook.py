"""The real qemu-hook binary, run as libvirt runs it (XML on stdin, scrubbed environment), on the
emulated host without D-Bus (no system bus, the user not logged in): the sysfs side of SPEC 1-6.
Every assertion is on the emulated sysfs, the exit code, stdout and the messages."""
import os
import shutil
import signal
import subprocess
import time

import busmock
import fakehost
from fakehost import R5, R5_AUDIO, VEGA, VEGA_AUDIO, variant

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
CONF = "/run/fakehost/kvm.conf"
JOURNAL = "/run/qemu-hook/win10.state"

ORIGINAL = """# the shell scripts' kvm.conf, unchanged
VIRSH_GPU_VIDEO="0000:0d:00.0"
VIRSH_GPU_AUDIO="0000:0d:00.1"
VIRSH_SECONDARY_GPU_VIDEO="0000:08:00.0"
VIRSH_SECONDARY_GPU_AUDIO="0000:08:00.1"
VIRSH_USER="liss"
VIRSH_USER_DBUS_ADDR="unix:path=/run/user/1000/bus"
"""

NATIVE = fakehost.NATIVE_CONF + """[host]
timeout = {timeout}
"""

XML = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])
OTHER_OPS = [("start", "begin"), ("started", "begin"), ("stopped", "end"), ("release", "begin"),
             ("prepare", "end"), ("reconnect", "begin"), ("migrate", "begin"), ("restore", "begin"),
             ("attach", "begin"), ("frobnicate", "now")]


def config(text=ORIGINAL, mode=0o644):
    os.makedirs(os.path.dirname(CONF), exist_ok=True)
    busmock.ensure_user("liss", os.path.dirname(CONF))
    with open(CONF, "w") as f:
        f.write(text)
    os.chmod(CONF, mode)
    # A journal left by an earlier test would be another VM's hand-over.
    subprocess.run(["rm", "-rf", "/run/qemu-hook"], check=True)


def hook(op, sub, xml=XML, vm="win10", *options):
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", CONF, *options, vm, op, sub, "-"], xml)
    return rc, out, err


def expect(result, rc, *messages):
    got, out, err = result
    assert got == rc, f"exit {got}, expected {rc}; stderr:\n{err}"
    assert out == "", f"hook mode wrote to stdout: {out!r}"
    for m in messages:
        assert m in err, f"{m!r} not in stderr:\n{err}"
    return err


def assert_handed_over(h):
    assert h.driver(VEGA) == "vfio-pci" and h.driver(VEGA_AUDIO) == "vfio-pci", h.snapshot()
    assert h.override(VEGA) == "vfio-pci"
    assert h.driver(R5) == "radeon" and h.drm_cards(R5), (h.driver(R5), h.drm_cards(R5))
    assert h.driver(R5_AUDIO) == "vfio-pci"
    assert h.vtcon_bound(1) and h.vtcon_bound(0)
    assert h.fb_driver() is None
    assert not any(w.path.endswith("new_id") for w in h.log()), "new_id must never be written"


def test_hand_over_and_back(host):
    config()
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    assert_handed_over(host)
    assert os.path.exists(JOURNAL)
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before
    assert host.override(VEGA) is None
    assert not os.path.exists(JOURNAL)


def test_cycle_with_realistic_delays_ends_when_the_host_is_there(host):
    """Probes and DRM cards take time: the hook returns only when each is in place, so the
    desktop started next finds its GPU (checked the moment the hook exits)."""
    config()
    before = host.snapshot()
    host.delay(probe=40, drm=60, unbind=10)
    expect(hook("prepare", "begin"), 0)
    assert_handed_over(host)
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before


def test_primary_synonyms(host):
    config(ORIGINAL.replace("VIRSH_GPU_", "VIRSH_PRIMARY_GPU_"))
    expect(hook("prepare", "begin"), 0)
    assert_handed_over(host)


def test_not_ours_makes_no_writes(host):
    config()
    for xml in (fakehost.domain_xml("linux", ["0000:03:00.0"]), fakehost.domain_xml("linux", [])):
        for op, sub in [("prepare", "begin"), ("release", "end")]:
            expect(hook(op, sub, xml, "linux"), 0)
    assert host.writes() == 0, host.log()
    assert not os.path.exists("/run/qemu-hook/linux.state")


def test_other_operations_make_no_writes(host):
    config()
    for op, sub in OTHER_OPS:
        expect(hook(op, sub), 0)
    assert host.writes() == 0, host.log()
    # Even during a hand-over: `started` and `reconnect` must not disturb it.
    expect(hook("prepare", "begin"), 0)
    host.clear_log()
    for op, sub in OTHER_OPS:
        expect(hook(op, sub), 0)
    assert host.writes() == 0, host.log()


def test_failure_at_each_sysfs_step():
    """A failure injected at every write of the hand-over leaves the host exactly as before."""
    config()
    with fakehost.Host() as h:
        expect(hook("prepare", "begin"), 0)
        writes = [(w.path, w.value) for w in h.log()]
    # fbcon's unbind, the Vega's and the R5's moves (override, unbind, probe): no boot
    # framebuffer (amdgpu's probe removed it), and fbcon comes back bound with radeon's card.
    assert len(writes) == 7, writes
    for path, value in writes:
        config()
        with fakehost.Host() as h:
            before = h.snapshot()
            h.fail(path, "EIO", count=1, value=value)
            err = expect(hook("prepare", "begin"), 1, "failed at step", "the host was restored")
            # The kernel ignores a vtconsole bind it cannot do, without an error: read back.
            why = "unbinding fbcon from vtcon1 failed" if "vtconsole" in path else "Input/output error"
            assert why in err, err
            assert h.snapshot() == before, f"after failing {path}={value}: {h.snapshot()}"
            assert not os.path.exists(JOURNAL), f"journal left after failing {path}={value}"
            # libvirt then calls release end: harmless.
            h.clear_log()
            expect(hook("release", "end"), 0)
            assert h.writes() == 0, h.log()


def test_a_stderr_without_reader_does_not_stop_the_rollback(host):
    """libvirtd restarted while the hook ran: its stderr pipe has no reader. With SIGPIPE at its
    default, as libvirt gives it, the first message would kill the hook half way; it must go on
    and roll the failed hand-over back."""
    config()
    before = host.snapshot()
    host.fail("bus/pci/drivers/vfio-pci/unbind", "EIO", value=R5)      # after the Vega's move
    r, w = os.pipe()
    os.close(r)
    fakehost.check_safe()
    p = subprocess.run([HOOK, "--config", CONF, "win10", "prepare", "begin", "-"], input=XML.encode(),
                       stdout=subprocess.DEVNULL, stderr=w, env=fakehost.hook_env(), timeout=60,
                       restore_signals=True)
    os.close(w)
    assert p.returncode == 1, f"exit {p.returncode} (-13: killed by SIGPIPE)"
    assert host.snapshot() == before, host.snapshot()
    assert not os.path.exists(JOURNAL)


def test_failure_message_names_step_and_device(host):
    config()
    before = host.snapshot()
    host.fail("bus/pci/drivers/amdgpu/unbind", "EBUSY")
    expect(hook("prepare", "begin"), 1, "move 0000:0d:00.0 from amdgpu to vfio-pci",
           "unbind from amdgpu failed: Device or resource busy")
    assert host.snapshot() == before


def test_prepare_and_release_twice(host):
    config()
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    host.clear_log()
    expect(hook("prepare", "begin"), 0)
    assert host.writes() == 0, host.log()
    assert_handed_over(host)
    expect(hook("release", "end"), 0)
    host.clear_log()
    expect(hook("release", "end"), 0)
    assert host.writes() == 0, host.log()
    assert host.snapshot() == before


@variant(framebuffer=False)
def test_release_without_journal(host):
    """/run wiped while the VM ran: the hand-back is derived from the config."""
    config()
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    os.unlink(JOURNAL)
    expect(hook("release", "end"), 0, "no journal")
    assert host.snapshot() == before


def test_release_without_journal_and_nothing_handed_over(host):
    config()
    expect(hook("release", "end"), 0)
    assert host.writes() == 0, host.log()


def spawn_prepare():
    """prepare begin in the background, as libvirt starts it; the safety check comes first."""
    fakehost.check_safe()
    p = subprocess.Popen([HOOK, "--config", CONF, "win10", "prepare", "begin", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=fakehost.hook_env(), text=True)
    p.stdin.write(XML)
    p.stdin.close()
    return p


def kill_during_unbind(host):
    """Starts a hand-over and SIGKILLs it inside its (slow) unbind of the Vega from amdgpu; the
    unbind itself completes, as the kernel's would."""
    host.delay(unbind=1000)
    p = spawn_prepare()
    host.wait(lambda: any(w.path.endswith("0d:00.0/driver_override") and w.value == "vfio-pci"
                          for w in host.log()))
    time.sleep(0.3)
    p.kill()
    p.wait()
    p.stderr.close()
    host.wait(lambda: any(w.path.endswith("amdgpu/unbind") for w in host.log()))
    host.delay(unbind=0)
    assert host.driver(VEGA) is None and host.override(VEGA) == "vfio-pci"


def test_release_after_hook_killed_half_way(host):
    config()
    before = host.snapshot()
    kill_during_unbind(host)
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def test_prepare_after_hook_killed_half_way_recovers_first(host):
    config()
    before = host.snapshot()
    kill_during_unbind(host)
    expect(hook("prepare", "begin"), 0, "did not finish")
    assert_handed_over(host)
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before


def test_process_holding_the_gpu_fails_naming_it(host):
    config(NATIVE.format(timeout="300ms"))
    before = host.snapshot()
    with host.hold("/dev/dri/card0") as pid:
        err = expect(hook("prepare", "begin"), 1, f"{pid} (", "still in use", "the host was restored")
    assert host.snapshot() == before, err
    assert not any(w.path.endswith("amdgpu/unbind") for w in host.log()), host.log()


def test_holder_that_lets_go_is_waited_for(host):
    config(NATIVE.format(timeout="5s"))
    with host.hold("/dev/dri/card0"):
        p = spawn_prepare()
        time.sleep(0.3)
    assert p.wait(timeout=10) == 0, p.stderr.read()
    p.stderr.close()
    assert host.driver(VEGA) == "vfio-pci"


@fakehost.variant(framebuffer="bound")
def test_dry_run_prints_plan_and_changes_nothing(host):
    config()
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", CONF, "--dry-run", "win10", "prepare", "begin"], XML)
    assert rc == 0, err
    for line in ("move 0000:0d:00.0 from amdgpu to vfio-pci", "(skip) move 0000:0d:00.1",
                 "already on vfio-pci", "move 0000:08:00.0 from vfio-pci to radeon", "unbind fbcon (vtcon1)",
                 "efi-framebuffer.0", "not logged in"):
        assert line in out, f"{line!r} not in the plan:\n{out}"
    assert out.splitlines()[1].startswith(" 1. ")
    assert host.writes() == 0, host.log()
    assert not os.path.exists("/run/qemu-hook")


def test_dry_run_with_bad_config_shows_error(host):
    config(ORIGINAL.replace('"0000:0d:00.0"', '"0000:0d:00"'))
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", CONF, "--dry-run", "win10", "prepare", "begin"], XML)
    assert rc == 2 and f"{CONF}:2: VIRSH_GPU_VIDEO" in err, (rc, err)
    assert host.writes() == 0


def test_config_errors_exit_2_and_touch_nothing(host):
    for text, message in [
        (ORIGINAL.replace('VIRSH_GPU_VIDEO="0000:0d:00.0"', 'VIRSH_GPU_VIDEO="0d:00.0"'), ":2: VIRSH_GPU_VIDEO"),
        (ORIGINAL.replace('VIRSH_GPU_VIDEO="0000:0d:00.0"\n', ""), "VIRSH_GPU_VIDEO"),
        (NATIVE.format(timeout="forever"), ":8: [host] timeout"),
        (NATIVE.format(timeout="1s") + "[gpu]\nadress = 0000:0d:00.0\n", ":10: "),
    ]:
        config(text)
        expect(hook("prepare", "begin"), 2, CONF, message)
    assert host.writes() == 0, host.log()


def test_config_writable_by_others_is_refused(host):
    config(mode=0o666)
    expect(hook("prepare", "begin"), 2, f"config {CONF}: refusing it, {CONF} is writable by group or others "
           "(mode 0666; chmod go-w")
    assert host.writes() == 0


def test_missing_default_config_is_nothing_to_do(host):
    """No /etc/libvirt/hooks/kvm.conf (the test namespace's own /etc/libvirt, an empty tmpfs but
    for what tests put there) and no --config: qemu-hook is the scripts' dispatcher only, so a VM
    passing the GPU is nothing to do, for the front end and for qemu-hook-act alike."""
    fakehost.check_safe()           # /etc/libvirt is the namespace's tmpfs
    default = "/etc/libvirt/hooks/kvm.conf"
    if os.path.lexists(default):
        os.unlink(default)          # another test's
    shutil.rmtree("/etc/libvirt/hooks/qemu.d", ignore_errors=True)
    shutil.rmtree("/run/qemu-hook", ignore_errors=True)
    assert not os.path.lexists(default)
    act = os.path.join(os.path.dirname(HOOK), "qemu-hook-act")
    for binary in (HOOK, act):
        for op, sub in (("prepare", "begin"), ("release", "end")):
            rc, out, err, _ = fakehost.run_hook([binary, "win10", op, sub, "-"], XML)
            assert (rc, out, err) == (0, "", ""), (binary, op, rc, out, err)
    assert host.writes() == 0, host.log()
    assert not os.path.exists(JOURNAL), "a journal without a config"


def test_missing_explicit_config_is_an_error(host):
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", "/nonexistent.conf", "win10", "prepare", "begin"], XML)
    assert rc == 2 and "/nonexistent.conf" in err, (rc, err)


def test_malformed_and_empty_xml(host):
    config()
    for xml, message in [("", "domain XML"), ("<domain><devices><hostdev", "domain XML"),
                         ("<network/>", "domain XML")]:
        expect(hook("prepare", "begin", xml), 2, message)
    assert host.writes() == 0, host.log()


def test_config_names_the_vm(host):
    config(NATIVE.format(timeout="5s") + "[vm gaming]\nhandle = yes\n[vm win10]\nhandle = no\n")
    expect(hook("prepare", "begin", fakehost.domain_xml("gaming", []), "gaming"), 0)
    assert host.driver(VEGA) == "vfio-pci"
    expect(hook("release", "end", fakehost.domain_xml("gaming", []), "gaming"), 0)
    host.clear_log()
    expect(hook("prepare", "begin"), 0)     # win10 passes the GPU, but the config says no
    assert host.writes() == 0


@variant(vega_driver="vfio-pci")
def test_gpu_already_on_vfio(host):
    config()
    expect(hook("prepare", "begin"), 0)
    assert host.writes() == 0, host.log()
    expect(hook("release", "end"), 0)
    assert host.writes() == 0, host.log()


@variant(secondary=False)
def test_no_secondary_gpu(host):
    config(NATIVE.replace("[secondary]\naddress = 0000:08:00.0\n", "").format(timeout="5s"))
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    assert host.driver(VEGA) == "vfio-pci" and host.driver(VEGA_AUDIO) == "vfio-pci"
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before


@variant(audio_driver="snd_hda_intel")
def test_audio_on_snd_hda_intel_comes_back(host):
    config()
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    assert host.driver(VEGA_AUDIO) == "vfio-pci"
    expect(hook("release", "end"), 0)
    assert host.driver(VEGA_AUDIO) == "snd_hda_intel"
    assert host.snapshot() == before


@variant(foreign=True)
def test_foreign_device_in_iommu_group_is_refused(host):
    config()
    expect(hook("prepare", "begin"), 1, fakehost.FOREIGN, "IOMMU group", "nothing was changed")
    assert host.writes() == 0, host.log()


def test_stdout_stays_empty_as_installed_hook(host):
    """Called as /etc/libvirt/hooks/qemu: nothing on stdout, whatever the operation, and no
    options (libvirt passes none): a --dry-run there is an argument too many, not a plan."""
    config()
    os.makedirs("/etc/libvirt/hooks", exist_ok=True)
    shutil.copy(CONF, "/etc/libvirt/hooks/kvm.conf")
    link = "/run/fakehost/qemu"
    if not os.path.exists(link):
        os.symlink(HOOK, link)
    try:
        rc, out, err, _ = fakehost.run_hook([link, "--dry-run", "win10", "prepare", "begin", "-"], XML)
        assert rc == 2 and out == "" and host.writes() == 0, (rc, out, err)
        assert "expected VM OPERATION SUB-OPERATION [EXTRA]" in err, err       # five arguments
        for op, sub in (("prepare", "begin"), ("migrate", "begin"), ("release", "end")):
            rc, out, err, _ = fakehost.run_hook([link, "win10", op, sub, "-"], XML)
            assert rc == 0 and out == "", (op, rc, out, err)
        assert host.writes() > 0 and host.driver(VEGA) == "amdgpu"
    finally:
        os.unlink("/etc/libvirt/hooks/kvm.conf")