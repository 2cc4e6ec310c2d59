"""The divergences a real 6.1 kernel showed (issue 9, item 4), one test each, against the emulated
host that now has the kernel's semantics (test_fakesys.py): the real binary, as libvirt runs it,
asserted by the sysfs state, exit codes, messages and time bounds where the point is bounded.

  (a) a display driver given as a module name (libkmod's bochs) is the driver it registers
      (bochs-drm) in driver_override and in the wait;
  (b) fbcon's vtcon found by name when its step runs: gone, or back bound by itself, is fine;
      a bind the kernel ignores is logged, not fatal;
  (c) the boot framebuffer: gone is never an error, never rebound over a GPU a driver owns;
  (d) holders matched by device number through /proc/PID/fd (DRM, /dev/snd, /dev/kfd on
      amdgpu, /dev/vfio/GROUP and the vfio cdev on vfio-pci), in any mount namespace, named with
      their comm, unit and node, refused in bounded time, nothing left blocked; a VM still
      holding the GPU keeps it: release end and --recover refuse before touching anything;
  (e) a write blocked in the kernel fails its step at the deadline, the hook returns (its stderr
      reaching EOF), the step stays started in the journal, and the next release restores;
  (f) DRM cards matched under the device, not by number: numbers move.
"""
import os
import re
import subprocess
import time

import busmock
import fakehost
from fakehost import R5, VEGA, VEGA_AUDIO, variant

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
CONF = "/run/fakehost/kvm.conf"
JOURNAL = "/run/qemu-hook/win10.state"
XML = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])
NATIVE = fakehost.NATIVE_CONF
EFIFB = "efi-framebuffer.0"


def config(text=NATIVE, timeout=None):
    """The native kvm.conf of the origin's GPUs (no desktop), with [host] timeout when given."""
    if timeout:
        text += f"[host]\ntimeout = {timeout}\n"
    os.makedirs(os.path.dirname(CONF), exist_ok=True)
    with open(CONF, "w") as f:
        f.write(text)
    os.chmod(CONF, 0o644)
    subprocess.run(["rm", "-rf", "/run/qemu-hook"], check=True)


def hook(op, sub, *options, timeout=60):
    """(rc, stderr, seconds) of the hook called as libvirt calls it."""
    rc, out, err, secs = fakehost.run_hook([HOOK, "--config", CONF, *options, "win10", op, sub, "-"], XML,
                                           timeout=timeout)
    assert out == "", f"hook mode wrote to stdout: {out!r}"
    return rc, err, secs


def writers_returned(host):
    """No write blocked in fakesys, and every hook process of this namespace has exited (or is a
    zombie): the write returning and its SIGKILLed writer exiting are two moments, far apart on
    a loaded machine, and the hook refuses to touch the device while that writer lives. (The
    hook calls of the test have all returned: what is left is the orphaned writer.)"""
    ns = os.readlink("/proc/self/ns/mnt")

    def hook_alive():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") != ns:
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    comm, rest = f.read().split(" (", 1)[1].rsplit(") ", 1)
                if comm.startswith("qemu-hook") and rest.split()[0] not in ("Z", "X"):
                    return True
            except (OSError, IndexError, ValueError):
                continue
        return False
    host.wait(lambda: host.blocked() == [])
    host.wait(lambda: not hook_alive(), timeout=10)


def expect(result, rc, *messages):
    got, err, _ = result
    assert got == rc, f"exit {got}, expected {rc}; stderr:\n{err}"
    for m in messages:
        assert m in err, f"{m!r} not in stderr:\n{err}"
    return err


def journal_steps():
    """The steps of the win10 journal: [{kind, target, from, to, note, state}]."""
    steps = []
    with open(JOURNAL) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[step "):
                steps.append({})
            elif steps and " = " in line:
                k, v = line.split(" = ", 1)
                steps[-1][k] = v
    return steps


def writes_to(host, suffix):
    return [w for w in host.log() if w.path.endswith(suffix)]


class holding:
    """A process holding the char device NODE's numbers open through a node of its own at
    ALIAS (a sandbox's /dev, a container's), or NODE itself: what counts is the device number,
    never the path. Yields the holder's pid."""

    def __init__(self, host, node, alias=None):
        self.host, self.node, self.alias = host, host.node(node), alias

    def __enter__(self):
        path = self.node
        if self.alias:
            os.makedirs(os.path.dirname(self.alias), exist_ok=True)
            st = os.stat(self.node)
            if os.path.lexists(self.alias):
                os.unlink(self.alias)
            os.mknod(self.alias, 0o600 | (st.st_mode & 0o170000), st.st_rdev)
            path = self.alias
        self.child = subprocess.Popen([fakehost.PY, "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_PATH); "
                                       "print('ready', flush=True); sys.stdin.read()", path],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout.readline().strip() == "ready", f"holder of {path} did not start"
        return self.child.pid

    def __exit__(self, *exc):
        self.child.stdin.close()
        self.child.wait()
        self.child.stdout.close()
        if self.alias and os.path.lexists(self.alias):
            os.unlink(self.alias)


# ---------------------------------------------------------------- (a) module names

def bochs_cycle(host, park_override=None):
    """Hand-over and back with the bochs-display as the secondary GPU: its driver is bochs-drm,
    the module libkmod names is bochs. PARK_OVERRIDE: a parking udev rule's driver_override."""
    if park_override:
        assert host.write(f"bus/pci/devices/{R5}/driver_override", park_override) == 0
        host.clear_log()
    before = host.snapshot()
    rc, err, secs = hook("prepare", "begin")
    assert rc == 0, f"exit {rc} after {secs:.1f} s; stderr:\n{err}"
    assert secs < 5, f"hand-over took {secs:.1f} s (the timeout is 20 s)"
    assert host.driver(R5) == "bochs-drm" and host.override(R5) == "bochs-drm", (host.driver(R5), host.override(R5))
    assert host.drm_cards(R5) and host.card_by_path(R5) == f"/dev/dri/{host.drm_cards(R5)[0]}"
    assert host.driver(VEGA) == "vfio-pci" and host.driver(VEGA_AUDIO) == "vfio-pci"
    overrides = [w.value for w in writes_to(host, f"{R5}/driver_override")]
    assert overrides == ["bochs-drm"], f"driver_override of {R5} was written {overrides} (bochs is a module)"
    rc, err, secs = hook("release", "end")
    assert rc == 0 and secs < 5, (rc, secs, err)
    assert host.driver(R5) == "vfio-pci" and host.override(R5) == park_override
    assert host.drm_cards(R5) == []
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


@variant(secondary_gpu="bochs")
def test_secondary_module_resolved_to_its_driver(host):
    """No driver in the config: libkmod finds the module bochs for the bochs-display's alias."""
    config()
    bochs_cycle(host)


@variant(secondary_gpu="bochs")
def test_secondary_module_resolved_with_parking_override(host):
    """Parked by a udev rule (driver_override=vfio-pci, as the guest image does): the rule's
    override comes back with the hand-back."""
    config()
    bochs_cycle(host, park_override="vfio-pci")


@variant(secondary_gpu="bochs")
def test_secondary_module_name_in_the_config(host):
    config(NATIVE.replace("address = 0000:08:00.0\n", "address = 0000:08:00.0\ndriver = bochs\n"))
    bochs_cycle(host)


@variant(secondary_gpu="bochs")
def test_secondary_module_in_the_original_config(host):
    """The shell scripts' kvm.conf, with the user not logged in: the same resolution."""
    config("\n".join(['VIRSH_GPU_VIDEO="0000:0d:00.0"', 'VIRSH_GPU_AUDIO="0000:0d:00.1"',
                      'VIRSH_SECONDARY_GPU_VIDEO="0000:08:00.0"', 'VIRSH_SECONDARY_GPU_AUDIO="0000:08:00.1"',
                      'VIRSH_USER="liss"', 'VIRSH_USER_DBUS_ADDR="unix:path=/run/user/1000/bus"', ""]))
    busmock.ensure_user("liss", os.path.dirname(CONF))
    bochs_cycle(host)


# ---------------------------------------------------------------- (b) fbcon's vtcon

def fbcon_cycle(host, name):
    before = host.snapshot()
    assert host.fbcon() == name and host.fbcon_bound()
    host.delay(probe=20, drm=80)
    expect(hook("prepare", "begin"), 0)
    # gone with the Vega's card, back bound with the secondary's: the hand-over's end state
    assert host.fbcon() == name and host.fbcon_bound()
    assert host.driver(R5) == "radeon" and host.drm_cards(R5)
    expect(hook("release", "end"), 0)
    assert host.fbcon() == name and host.fbcon_bound()
    assert host.drm_cards(VEGA) and host.snapshot() == before


def test_fbcon_vanishes_and_comes_back_with_the_secondary(host):
    config()
    fbcon_cycle(host, "vtcon1")


@variant(firmware="seabios")
def test_fbcon_is_vtcon0_under_seabios(host):
    config()
    fbcon_cycle(host, "vtcon0")


@variant(secondary=False)
def test_fbcon_gone_for_the_whole_hand_over(host):
    """No secondary GPU: fbcon's vtcon goes with the Vega's card and there is none to bring it
    back; the rebind finds nothing to do. The hand-back's amdgpu card brings it back bound."""
    config(NATIVE.replace("[secondary]\naddress = 0000:08:00.0\n", ""))
    before = host.snapshot()
    err = expect(hook("prepare", "begin"), 0)
    assert host.fbcon() is None and host.driver(VEGA) == "vfio-pci", err
    assert os.path.exists(JOURNAL)
    expect(hook("release", "end"), 0)
    assert host.fbcon() == "vtcon1" and host.fbcon_bound()
    assert host.snapshot() == before


@variant(secondary_driver="radeon")
def test_fbcon_bind_the_kernel_ignores_is_not_fatal(host):
    """The secondary already drives a framebuffer, so fbcon's vtcon stays through the hand-over,
    unbound; the kernel then ignores the rebind (vt.c's store_bind returns success whatever it
    did). The hand-over succeeds without waiting out the 20 s timeout, and says so."""
    config()
    host.fail("class/vtconsole/vtcon1/bind", "EBUSY", value="1")
    rc, err, secs = hook("prepare", "begin")
    assert rc == 0, f"exit {rc} after {secs:.1f} s; stderr:\n{err}"
    assert secs < 5, f"{secs:.1f} s"
    assert "binding fbcon to vtcon1 failed" in err and "the text console stays off" in err, err
    assert host.driver(VEGA) == "vfio-pci" and host.fbcon() == "vtcon1" and not host.fbcon_bound()
    host.clear_fail()
    expect(hook("release", "end"), 0)
    assert host.driver(VEGA) == "amdgpu" and host.fbcon_bound()


# ---------------------------------------------------------------- (c) boot framebuffer

def fb_cycle(host):
    before = host.snapshot()
    assert host.fb_driver() == "efi-framebuffer"
    expect(hook("prepare", "begin"), 0)
    assert [w.result for w in writes_to(host, "efi-framebuffer/unbind")] == ["0"], host.log()
    assert not host.fb_exists(), "vfio-pci's probe of the boot GPU removes the boot framebuffer"
    assert host.driver(VEGA) == "vfio-pci"
    host.clear_log()
    err = expect(hook("release", "end"), 0)
    assert "error" not in err.lower() and "fail" not in err.lower(), err
    assert not writes_to(host, "efi-framebuffer/bind"), host.log()
    assert host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA) and host.card_by_path(VEGA)
    assert not host.fb_exists()
    assert host.fbcon_bound()
    after = host.snapshot()
    for gone in ("fb", "fb_exists"):        # removed for good, as by the kernel
        del before[gone], after[gone]
    assert after == before


@variant(framebuffer="bound")
def test_boot_framebuffer_removed_by_the_hand_over(host):
    config()
    fb_cycle(host)


@variant(framebuffer="bound", fb_parent="platform")
def test_boot_framebuffer_under_platform_removed_by_the_hand_over(host):
    config()
    fb_cycle(host)


def fb_rollback(host):
    """The hand-over fails after the framebuffer's unbind (a process holds the Vega's card):
    amdgpu still owns the Vega, so the rollback must not bind the firmware framebuffer over it."""
    config(timeout="500ms")
    with host.hold("/dev/dri/card0"):
        err = expect(hook("prepare", "begin", "--verbose"), 1, "still in use", "the host was restored")
    assert [w.value for w in writes_to(host, "efi-framebuffer/unbind")] == [EFIFB], host.log()
    assert not writes_to(host, "efi-framebuffer/bind"), host.log()
    assert host.fb_exists() and host.fb_driver() is None
    assert host.driver(VEGA) == "amdgpu" and host.override(VEGA) is None and host.drm_cards(VEGA) == ["card0"]
    assert "not rebinding it, amdgpu owns its GPU 0000:0d:00.0" in err, err
    assert not os.path.exists(JOURNAL)


@variant(framebuffer="bound")
def test_boot_framebuffer_not_rebound_over_amdgpu(host):
    fb_rollback(host)


@variant(framebuffer="bound", fb_parent="platform")
def test_boot_framebuffer_under_platform_not_rebound_over_amdgpu(host):
    fb_rollback(host)


@variant(vega_driver=None, framebuffer="bound")
def test_boot_framebuffer_gone_when_its_step_runs(host):
    """The plan saw efi-framebuffer.0 bound (the Vega had no driver yet); amdgpu's probe,
    still under way at boot, removes it while the hook unbinds fbcon. Nothing to unbind is no
    error: the hand-over goes on."""
    config(timeout="2s")
    assert host.fb_driver() == "efi-framebuffer" and host.driver(VEGA) is None
    host.hang("class/vtconsole/vtcon1/bind", "0")
    fakehost.check_safe()
    p = subprocess.Popen([HOOK, "--config", CONF, "win10", "prepare", "begin", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fakehost.hook_env(), text=True)
    try:
        p.stdin.write(XML)
        p.stdin.close()
        host.wait(lambda: host.blocked() != [])
        assert host.write("bus/pci/drivers/amdgpu/bind", VEGA) == 0
        host.wait(lambda: host.drm_cards(VEGA) != [])
        assert not host.fb_exists()
    finally:
        host.unhang()
    p.wait(timeout=10)
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == 0 and out == "", (p.returncode, err)
    assert not writes_to(host, "efi-framebuffer/unbind"), host.log()
    assert host.driver(VEGA) == "vfio-pci" and not host.fb_exists()


# ---------------------------------------------------------------- (d) holders

def refused_for_holder(host, node, alias=None):
    """A stray process holds NODE (through ALIAS): the hand-over fails in bounded time, names the
    process, its command and its unit, changes nothing and leaves no write blocked."""
    config(timeout="2s")
    before = host.snapshot()
    with holding(host, node, alias) as pid:
        rc, err, secs = hook("prepare", "begin", timeout=2 + 10)
        assert host.blocked() == [], f"a write was left blocked: {host.blocked()}"
    assert rc == 1, f"exit {rc} after {secs:.1f} s; stderr:\n{err}"
    assert secs < 2 + 3, f"refused after {secs:.1f} s"
    assert "still in use" in err and f"{pid} (python3, " in err, err
    assert "unit" in err[err.index(f"{pid} (python3, "):], err
    assert "the host was restored" in err, err
    assert host.snapshot() == before
    assert not [w for w in host.log() if "bus/pci/drivers/" in w.path and w.path.endswith("/unbind")], host.log()
    assert not os.path.exists(JOURNAL)
    return pid, err


@variant(audio_driver="snd_hda_intel")
def test_holder_of_the_audio_pcm_node_is_refused(host):
    """Unbinding snd_hda_intel while it is held would block the writer until the holder exits."""
    refused_for_holder(host, "/dev/snd/pcmC0D3p")


@variant(audio_driver="snd_hda_intel")
def test_holder_of_the_audio_control_node_elsewhere_is_refused(host):
    """The same card's node under another path (a sandbox's own /dev): matched by number."""
    refused_for_holder(host, "/dev/snd/controlC0", alias="/run/fakehost/sandbox/dev/snd/controlC0")


def test_holder_of_the_vega_card_is_refused(host):
    refused_for_holder(host, "/dev/dri/card0")


def test_holder_of_the_vega_render_node_elsewhere_is_refused(host):
    refused_for_holder(host, "/dev/dri/renderD128", alias="/run/fakehost/sandbox/dev/dri/renderD128")


def named(err, pid, node):
    """The message names the holder as "PID (comm, unit U) holding NODE" (the harness's processes
    are in no unit)."""
    assert re.search(rf"{pid} \(python3, (in no unit|unit [^)]+)\) holding {re.escape(node)}", err), err


def test_holder_of_kfd_is_refused_on_amdgpu(host):
    """A ROCm or OpenCL process holds /dev/kfd, which amdgpu serves for all its devices."""
    pid, err = refused_for_holder(host, "/dev/kfd")
    named(err, pid, "/dev/kfd")


@variant(vega_driver="radeon")
def test_holder_of_kfd_is_no_holder_of_another_driver(host):
    """The same node while the GPU is on another driver (amdgpu loaded all the same): no holder of
    the GPU; the hand-over and the hand-back go through beside it."""
    config(timeout="2s")
    before = host.snapshot()
    with holding(host, "/dev/kfd"):
        expect(hook("prepare", "begin"), 0)
        assert host.driver(VEGA) == "vfio-pci"
        expect(hook("release", "end"), 0)
    assert host.snapshot() == before


class ns_holding:
    """A process in a mount namespace of its own holding NODE through a bind mount of it at a path
    that exists only there (a container's /dev). Yields its pid."""
    DIR = "/run/fakehost/nsonly"

    def __init__(self, node):
        self.node = node

    def __enter__(self):
        os.makedirs(self.DIR, exist_ok=True)
        path = f"{self.DIR}/gpu"
        script = (f"mount -t tmpfs tmpfs {self.DIR} && touch {path} && mount --bind {self.node} {path} && "
                  f"exec {fakehost.PY} -c 'import os, sys; fd = os.open(sys.argv[1], os.O_PATH); "
                  f"print(\"ready\", flush=True); sys.stdin.read()' {path}")
        self.child = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout.readline().strip() == "ready", f"holder of {self.node} did not start"
        fds = [os.readlink(f"/proc/{self.child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{self.child.pid}/fd")]
        assert path in fds and not os.path.exists(path), (fds, "the path must exist only in its namespace")
        assert os.readlink(f"/proc/{self.child.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        return self.child.pid

    def __exit__(self, *exc):
        self.child.stdin.close()
        self.child.wait()
        self.child.stdout.close()


def test_holder_in_another_mount_namespace_is_refused(host):
    """The Vega's card held by a path that only the holder's mount namespace has: found by its
    device number all the same."""
    config(timeout="1s")
    before = host.snapshot()
    with ns_holding("/dev/dri/card0") as pid:
        err = expect(hook("prepare", "begin"), 1, "still in use", "the host was restored")
    named(err, pid, "/dev/dri/card0")
    assert host.snapshot() == before
    assert not writes_to(host, "amdgpu/unbind"), host.log()


def refused_while_vm_runs(host, hand_back, node=None, holder=None):
    """The GPU handed over, a process (a VM) holding NODE (default: the Vega's /dev/vfio/GROUP) through
    HOLDER (a context yielding its pid; default holding): HAND_BACK() -> (rc, stderr, seconds) is
    refused after the deadline, exit 1, naming it; not one sysfs write, the journal kept. Once it
    has exited, HAND_BACK() restores the host as it was before the hand-over."""
    config(timeout="1s")
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    handed_over, journal = host.snapshot(), open(JOURNAL).read()
    node = node or host.vfio_group_node(VEGA)
    host.clear_log()
    with (holder or holding(host, node)) as pid:
        rc, err, secs = hand_back()
        assert host.blocked() == [], f"a write was left blocked: {host.blocked()}"
    assert rc == 1, f"exit {rc} after {secs:.1f} s; stderr:\n{err}"
    assert 1 <= secs < 1 + 3, f"refused after {secs:.1f} s (the deadline is 1 s)"
    for m in ("hand-back of win10 refused", f"{VEGA} is still used by {pid} (python3, ", "nothing was changed"):
        assert m in err, f"{m!r} not in stderr:\n{err}"
    named(err, pid, node)
    assert host.log() == [], f"sysfs was written: {host.log()}"
    assert host.snapshot() == handed_over
    assert open(JOURNAL).read() == journal
    # the VM is gone; the container node stays open in other VMs and is nobody's GPU
    with holding(host, "/dev/vfio/vfio"):
        rc, err, _ = hand_back()
    assert rc == 0, err
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def release():
    return hook("release", "end", timeout=30)


def recover():
    rc, out, err, secs = fakehost.run_hook([HOOK, "--config", CONF, "--recover", "win10"], "", timeout=30)
    assert out == "", out
    return rc, err, secs


def test_release_refused_while_a_vm_holds_the_gpu(host):
    refused_while_vm_runs(host, release)


def test_recover_refused_while_a_vm_holds_the_gpu(host):
    refused_while_vm_runs(host, recover)


def test_release_refused_while_a_vm_in_another_mount_namespace_holds_the_gpu(host):
    refused_while_vm_runs(host, release, holder=ns_holding("/dev/vfio/17"), node="/dev/vfio/17")


@variant(vfio_cdev=True)
def test_release_refused_while_a_vm_holds_the_gpu_by_its_vfio_cdev(host):
    """Linux >= 6.6: a VM (iommufd) holds the function's own node, /dev/vfio/devices/vfioN."""
    refused_while_vm_runs(host, release, node="/dev/vfio/devices/vfio3")


def test_release_waits_for_a_vm_that_is_exiting(host):
    """libvirt calls release once qemu is dead; a qemu still closing its files has until the
    deadline."""
    config(timeout="5s")
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    fakehost.check_safe()
    host.clear_log()
    with holding(host, host.vfio_group_node(VEGA)):
        p = subprocess.Popen([HOOK, "--config", CONF, "win10", "release", "end", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=fakehost.hook_env(), text=True)
        p.stdin.write(XML)
        p.stdin.close()
        time.sleep(0.3)
        # waiting before anything: not a write yet, the desktop not stopped
        assert p.poll() is None and host.log() == [], host.log()
    assert p.wait(timeout=10) == 0, p.stderr.read()
    p.stderr.close()
    assert host.snapshot() == before


def test_hand_over_refused_while_another_vm_holds_the_secondary_gpu(host):
    """The R5 leaves its parking driver vfio-pci for radeon: a VM holding its group (/dev/vfio/18)
    keeps it; the hand-over fails naming it, never unbinds the R5, and restores the host."""
    config(timeout="1s")
    before = host.snapshot()
    node = host.vfio_group_node(R5)
    with holding(host, node) as pid:
        err = expect(hook("prepare", "begin"), 1, "still in use", "the host was restored")
        assert host.blocked() == [], host.blocked()
    named(err, pid, node)
    assert not [w for w in host.log() if w.path.endswith("/unbind") and w.value == R5], host.log()
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


# ---------------------------------------------------------------- (e) a write blocked in the kernel

def prepare_bounded(host, limit, op="prepare", sub="begin"):
    """prepare begin (or OP SUB), given LIMIT seconds to exit and to close both its pipes
    (communicate() returns at EOF, which a child left with our stderr would keep away). Past the
    limit the hang is released first: a writer in D state cannot be killed before.
    (rc, stderr, seconds)."""
    fakehost.check_safe()
    t0 = time.monotonic()
    p = subprocess.Popen([HOOK, "--config", CONF, "win10", op, sub, "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fakehost.hook_env(), text=True)
    try:
        out, err = p.communicate(XML, timeout=limit)
    except subprocess.TimeoutExpired:
        host.unhang()
        p.kill()
        p.communicate()
        raise AssertionError(f"the hook (or a child keeping its pipes) did not return within {limit} s "
                             "of a write blocked in the kernel")
    assert out == "", out
    return p.returncode, err, time.monotonic() - t0


def test_write_blocked_in_the_kernel_fails_in_bounded_time(host):
    """The Vega's unbind blocks in the kernel (D state: SIGKILL does not end the writer). The hook
    returns at the deadline, its stderr reaching EOF (the blocked writer keeps no pipe of
    libvirtd's), exit 1; the move stays started in the journal; once the write completes, the
    release puts the host back as it was."""
    config(timeout="2s")
    before = host.snapshot()
    host.hang("bus/pci/drivers/amdgpu/unbind", VEGA, killable=False)
    try:
        rc, err, secs = prepare_bounded(host, 2 + 5)
        assert rc == 1, (rc, err)
        assert secs < 2 + 3, f"returned after {secs:.1f} s"
        assert "blocked in the kernel" in err and "move 0000:0d:00.0 from amdgpu to vfio-pci" in err, err
        # the write is still pending, from a writer the hook left behind
        blocked = host.blocked()
        assert [(b[0], b[1]) for b in blocked] == [("bus/pci/drivers/amdgpu/unbind", VEGA)], blocked
        steps = {s["target"]: s for s in journal_steps() if s["kind"] == "pci-driver"}
        assert steps[VEGA]["state"] == "started", journal_steps()
        assert all(s["state"] not in ("done", "started") for s in journal_steps() if s["target"] != VEGA), \
            journal_steps()
        assert host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA) == ["card0"]
        # libvirt's release end comes at once: touching the device now would block it too (the
        # kernel holds the device's lock for the pending write). It refuses in no time, naming
        # the writer, and changes nothing.
        journal = open(JOURNAL).read()
        t0 = time.monotonic()
        err = expect(hook("release", "end"), 1, "still blocked in the kernel", f"PID {blocked[0][2]}",
                     "--recover win10")
        assert time.monotonic() - t0 < 2, f"release end took {time.monotonic() - t0:.1f} s"
        assert open(JOURNAL).read() == journal and host.blocked() == blocked, err
    finally:
        host.unhang()
    writers_returned(host)
    assert host.driver(VEGA) is None            # the write happened after all
    err = expect(hook("release", "end"), 0)
    assert host.snapshot() == before, err
    assert not os.path.exists(JOURNAL)


def test_write_blocked_in_the_hand_back_is_recorded(host):
    """The hand-back's unbind of the Vega from vfio-pci blocks in the kernel: release end returns
    at its deadline, exit 1, the rest handed back; the journal names the writer, so the next
    release refuses at once instead of touching the locked device; once the write has returned,
    release end finishes: the host as before the hand-over."""
    config(timeout="2s")
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    host.hang("bus/pci/drivers/vfio-pci/unbind", VEGA, killable=False)
    try:
        rc, err, secs = prepare_bounded(host, 2 + 5, "release", "end")
        assert rc == 1 and "blocked in the kernel" in err, (rc, err)
        assert host.driver(R5) == "vfio-pci", host.snapshot()        # the rest was handed back
        blocked = host.blocked()
        steps = {s["target"]: s for s in journal_steps() if s["kind"] == "pci-driver"}
        assert steps[VEGA].get("writer") == str(blocked[0][2]), (journal_steps(), blocked)
        t0 = time.monotonic()
        expect(hook("release", "end"), 1, "still blocked in the kernel", f"PID {blocked[0][2]}")
        assert time.monotonic() - t0 < 2
    finally:
        host.unhang()
    writers_returned(host)
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def test_write_blocked_in_the_kernel_recovered_by_recover(host):
    config(timeout="1s")
    before = host.snapshot()
    host.hang("bus/pci/drivers/amdgpu/unbind", VEGA, killable=False)
    try:
        rc, err, _ = prepare_bounded(host, 1 + 5)
        assert rc == 1 and "blocked in the kernel" in err, (rc, err)
    finally:
        host.unhang()
    writers_returned(host)
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", CONF, "--recover", "win10"], "")
    assert rc == 0, (rc, out, err)
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


# ---------------------------------------------------------------- (f) cards by device

@variant(secondary_driver="radeon")
def test_cards_by_device_when_numbers_move(host):
    """The R5 drives the desktop (card1), the Vega is card0. While the VM runs, the R5 is reset
    with a process still holding its old card1: the minor stays taken and the R5 comes back as
    card0, the number the Vega had. The Vega's hand-back then brings it back as card2, and the
    hook returns only once card2 exists under the Vega (DRM is slow here). The next hand-over
    refuses a holder of card2 and ignores the holders of card0 and of the stale card1."""
    config(timeout="1s")
    assert host.drm_cards(VEGA) == ["card0"] and host.drm_cards(R5) == ["card1"]
    expect(hook("prepare", "begin"), 0)
    assert host.driver(VEGA) == "vfio-pci" and host.drm_cards(R5) == ["card1"]
    with host.hold("/dev/dri/card1") as stale:
        assert host.write("bus/pci/drivers/radeon/unbind", R5) == 0
        assert host.write("bus/pci/drivers/radeon/bind", R5) == 0
        host.wait(lambda: host.drm_cards(R5) != [])
        assert host.drm_cards(R5) == ["card0"]
        with host.hold("/dev/dri/card0") as desktop:
            host.delay(drm=400)
            expect(hook("release", "end"), 0)
            assert host.drm_cards(VEGA) == ["card2"], host.drm_cards(VEGA)
            assert host.card_by_path(VEGA) == "/dev/dri/card2"
            host.delay(drm=0)
            with host.hold("/dev/dri/card2") as holder:
                err = expect(hook("prepare", "begin"), 1, "still in use", f"{holder} (python3")
            assert f"{stale} (" not in err and f"{desktop} (" not in err, err
            assert host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA) == ["card2"]
            # nobody holds the Vega's nodes now: the hand-over goes through beside both holders
            expect(hook("prepare", "begin"), 0)
            assert host.driver(VEGA) == "vfio-pci"
            expect(hook("release", "end"), 0)
            assert host.drm_cards(VEGA) == ["card2"]


# ---------------------------------------------------------------- an undo the kernel refuses

def test_an_undo_the_kernel_refuses_does_not_block_the_next_start(host):
    """amdgpu refuses the Vega back (its probe fails, as after a reset bug): the hand-back goes on
    with the rest and keeps the Vega's step in the journal; the next prepare retries it, and when
    the kernel still refuses, says so and how to clear it, and hands over from the host as it is:
    the VM starts. The journal carries the step left over, so the release after the kernel takes
    the Vega back again restores the host as it was before all of it."""
    config()
    before = host.snapshot()
    expect(hook("prepare", "begin"), 0)
    host.fail("bus/pci/drivers_probe", "ENODEV", count=2, value=VEGA)
    expect(hook("release", "end"), 1, "moving 0000:0d:00.0 to amdgpu: drivers_probe failed",
           "hand-back of win10 is incomplete", "1 step could not be undone: 3. move 0000:0d:00.0 from vfio-pci "
           "to amdgpu", "--recover win10")
    assert host.driver(R5) == "vfio-pci" and host.driver(VEGA) is None, host.snapshot()
    assert [s["target"] for s in journal_steps() if s["state"] in ("done", "started")] == [VEGA], journal_steps()
    expect(hook("prepare", "begin"), 0, "1 step of the previous hand-over could not be undone (3. move "
           "0000:0d:00.0 from vfio-pci to amdgpu)", "handing over from the host as it is", "--recover win10",
           "remove /run/qemu-hook/")
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon", host.snapshot()
    steps = journal_steps()
    assert (steps[0]["target"], steps[0]["to"], steps[0]["state"]) == (VEGA, "vfio-pci", "done"), steps
    expect(hook("release", "end"), 0)
    assert host.snapshot() == before, host.snapshot()
    assert not os.path.exists(JOURNAL)
