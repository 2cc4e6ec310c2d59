"""The GPU lock (issue 10 item 4), on the emulated host: one hand-over or hand-back of the GPU at
a time, a release that waits for a hand-over of the same GPU however long it takes, hook scripts
that never run under the lock, and two VMs started at once."""
import os
import subprocess
import time

import fakehost
from fakehost import R5, VEGA

HOOK = fakehost.HOOK
CONF = "/run/fakehost/lock.conf"
HOOKS = "/run/fakehost/lock-hooks"


def config(timeout="5s", extra=""):
    os.makedirs(os.path.dirname(CONF), exist_ok=True)
    with open(CONF, "w") as f:
        f.write(fakehost.NATIVE_CONF + f"[host]\ntimeout = {timeout}\n" + extra)
    os.chmod(CONF, 0o644)
    fakehost.sh("rm", "-rf", "/run/qemu-hook", HOOKS)


def argv(vm, op, sub, *options):
    return [HOOK, "--config", CONF, *options, vm, op, sub, "-"]


def hook(vm, op, sub, xml, *options):
    rc, out, err, seconds = fakehost.run_hook(argv(vm, op, sub, *options), xml)
    assert out == "", f"hook mode wrote to stdout: {out!r}"
    return rc, err, seconds


def spawn(vm, op, sub, xml, *options):
    fakehost.check_safe()
    p = subprocess.Popen(argv(vm, op, sub, *options), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=fakehost.hook_env(), start_new_session=True)
    p.stdin.write(xml)
    p.stdin.close()
    p.stdin = None
    return p


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert out == "", out
    return p.returncode, err


XML = fakehost.domain_xml("win10", [VEGA])


def test_release_waits_for_a_hand_over_longer_than_its_own_deadline(host):
    """libvirt's release end of a VM whose hand-over is still running (a second libvirtd call, or
    the hook run by hand): with a 1 s deadline per wait, a hand-over whose probes take 0.8 s each
    holds the lock for well over 1 s. The release waits for it, as long as the holder says it may
    take, and then hands back: never a half-done host with a failed release."""
    config(timeout="1s")
    before = host.snapshot()
    host.delay(probe=800)
    prepare = spawn("win10", "prepare", "begin", XML)
    host.wait(lambda: any(w.path.endswith("drivers_probe") for w in host.log()))
    t0 = time.monotonic()
    rc, err, _ = hook("win10", "release", "end", XML)
    waited = time.monotonic() - t0
    assert finish(prepare)[0] == 0
    assert rc == 0, f"release end: exit {rc} after {waited:.1f} s: {err}"
    assert waited > 1.0, f"the release did not wait for the hand-over ({waited:.2f} s)"
    host.delay(probe=0)
    assert host.snapshot() == before, host.snapshot()
    assert not os.path.exists("/run/qemu-hook/win10.state")


def test_a_hook_script_never_runs_under_the_lock(host):
    """A prepare/begin script (the hand-over's last step) may start another VM, whose hook then
    waits for the lock: it runs with the lock free."""
    config(extra="")
    record = f"{HOOKS}/record"
    script = f"{HOOKS}/qemu.d/win10/prepare/begin/10-lock"
    fakehost.recording_script(script, record, body="flock -n /run/qemu-hook/lock true && echo free >> "
                              f"{record} || echo held >> {record}")
    rc, err, _ = hook("win10", "prepare", "begin", XML, "--hooks-dir", HOOKS)
    assert rc == 0, err
    lines = fakehost.read_record(record)
    assert lines and lines[-1] == ["free"], lines
    assert lines[0][-1] == "vfio-pci", f"the script ran before the hand-over: {lines}"
    assert hook("win10", "release", "end", XML, "--hooks-dir", HOOKS)[0] == 0


def test_a_vm_without_the_gpu_is_never_held_up(host):
    """Two VMs started at once, one passing the GPU, the other another device: the other's hook
    takes no lock and returns at once, while the hand-over is blocked in the kernel."""
    config()
    before = host.snapshot()
    host.hang("bus/pci/drivers/amdgpu/unbind", VEGA)
    try:
        prepare = spawn("win10", "prepare", "begin", XML)
        host.wait(lambda: host.blocked() != [])
        for op, sub in (("prepare", "begin"), ("release", "end")):
            rc, err, seconds = hook_bounded("linux", op, sub, fakehost.domain_xml("linux", ["0000:03:00.0"]))
            assert rc == 0 and err == "" and seconds < 1.0, (op, rc, err, seconds)
    finally:
        host.unhang()
    rc, err = finish(prepare)
    assert rc == 0, err
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon", host.snapshot()
    assert not os.path.exists("/run/qemu-hook/linux.state")
    rc, err, _ = hook("win10", "release", "end", XML)
    assert rc == 0, err
    assert host.snapshot() == before, host.snapshot()


def hook_bounded(vm, op, sub, xml):
    p = spawn(vm, op, sub, xml)
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        stack = open(f"/proc/{p.pid}/stack").read() if os.path.exists(f"/proc/{p.pid}/stack") else "?"
        fds = {fd: os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")}
        p.kill()
        p.communicate()
        raise AssertionError(f"{vm} {op} {sub} did not return in 5 s: stack {stack}, fds {fds}")
    return p.returncode, err, 0.0


def test_two_vms_passing_the_same_gpu_started_at_once(host):
    """win10 and gaming both pass the GPU and start at once: the lock orders them; the first
    hands over, the second is refused (exit 1) naming the first, and changes nothing. Their
    releases, the refused one's first, put the host back as it was."""
    config()
    before = host.snapshot()
    xmls = {vm: fakehost.domain_xml(vm, [VEGA]) for vm in ("win10", "gaming")}
    procs = {vm: spawn(vm, "prepare", "begin", xml) for vm, xml in xmls.items()}
    results = {vm: finish(p) for vm, p in procs.items()}
    won = [vm for vm, (rc, _) in results.items() if rc == 0]
    assert len(won) == 1, results
    winner, loser = won[0], ({"win10", "gaming"} - set(won)).pop()
    rc, err = results[loser]
    assert rc == 1 and f"0000:0d:00.0 is handed over to {winner}" in err and "nothing was changed" in err, err
    assert not os.path.exists(f"/run/qemu-hook/{loser}.state")
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon"
    host.clear_log()
    assert hook(loser, "release", "end", xmls[loser])[0] == 0
    assert host.writes() == 0, host.log()
    assert host.driver(VEGA) == "vfio-pci"
    assert hook(winner, "release", "end", xmls[winner])[0] == 0
    assert host.snapshot() == before, host.snapshot()


def test_what_another_vms_hand_back_left_does_not_block_this_one(host):
    """gaming's hand-back could not give the Vega back to amdgpu (the kernel refused it, as with
    the Vega reset bug): its journal keeps that step. win10, passing the same GPU, still starts:
    it takes the step over into its own journal (gaming's goes), and its release, once the kernel
    takes the Vega again, puts the host back as it was before all of it."""
    config()
    before = host.snapshot()
    gaming = fakehost.domain_xml("gaming", [VEGA])
    assert hook("gaming", "prepare", "begin", gaming)[0] == 0
    host.fail("bus/pci/drivers_probe", "ENODEV", count=1, value=VEGA)
    rc, err, _ = hook("gaming", "release", "end", gaming)
    assert rc == 1 and "1 step could not be undone" in err, err
    assert os.path.exists("/run/qemu-hook/gaming.state")
    rc, err, _ = hook("win10", "prepare", "begin", XML)
    assert rc == 0, err
    assert "the hand-back of gaming left 0000:0d:00.0 in place" in err, err
    assert not os.path.exists("/run/qemu-hook/gaming.state")
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon"
    assert hook("gaming", "release", "end", gaming)[0] == 0        # nothing of gaming's left
    assert host.driver(VEGA) == "vfio-pci"
    rc, err, _ = hook("win10", "release", "end", XML)
    assert rc == 0, err
    assert host.snapshot() == before, host.snapshot()
