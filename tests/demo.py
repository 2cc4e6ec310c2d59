#!/usr/bin/python3
"""`make demo`: a full hand-over and hand-back of the real qemu-hook on the emulated host.

Everything happens in a private mount namespace (fakehost.enter_namespace()): /sys is the FUSE
emulation of the original hardware (Vega 64 + R5 240), /run is a tmpfs with mocked systemd buses
(the system bus with gdm as display-manager.service, the user's bus with the pipewire units).
Exit status: 0 when every hook run exited 0, the hand-over reached the expected state and the
host ends exactly as it started; 1 otherwise.
"""
import os
import re
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import busmock  # noqa: E402
import fakehost  # noqa: E402
from fakehost import VEGA, VEGA_AUDIO, R5, R5_AUDIO  # noqa: E402

HOOK = os.path.join(REPO, "qemu-hook")
VM = "win10"
USER = "liss"
DELAYS = {"probe": 40, "drm": 60, "unbind": 10}     # ms, a plausible real machine
FUNCS = [(VEGA, "Vega 64 video  (to the VM)"), (VEGA_AUDIO, "Vega 64 audio  (to the VM)"),
         (R5, "R5 240 video   (host display)"), (R5_AUDIO, "R5 240 audio")]
SYSTEM_UNITS = ["gdm.service"]
USER_UNITS = list(busmock.USER_UNITS)
STEP = re.compile(r"^qemu-hook: (done|undone|skipped|failed) (\d+)/(\d+) (.*?)(?: \(([\d.]+) ms\))?$")


def out(line=""):
    print(line, flush=True)


def section(title):
    out()
    out(f"== {title} " + "=" * max(0, 74 - len(title)))


def write_conf(path, uid):
    """The shell scripts' kvm.conf, unchanged (sourced by bash there, read with inih here)."""
    with open(path, "w") as f:
        f.write('# /etc/libvirt/hooks/kvm.conf of the original shell setup\n'
                f'VIRSH_GPU_VIDEO="{VEGA}"\n'
                f'VIRSH_GPU_AUDIO="{VEGA_AUDIO}"\n'
                f'VIRSH_SECONDARY_GPU_VIDEO="{R5}"\n'
                f'VIRSH_SECONDARY_GPU_AUDIO="{R5_AUDIO}"\n'
                f'VIRSH_USER="{USER}"\n'
                f'VIRSH_USER_DBUS_ADDR="unix:path=/run/user/{uid}/bus"\n')
    os.chown(path, 0, 0)
    os.chmod(path, 0o644)


def start_buses(logpath):
    """The mocked buses, with dbus-daemon's and dbusmock's stderr sent to LOGPATH (the children
    inherit fd 2 as it is while they are spawned)."""
    saved = os.dup(2)
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    try:
        return busmock.Buses.start(user=USER)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def units(buses):
    s = {u: buses.unit_state(u) for u in SYSTEM_UNITS}
    s.update({f"{USER}: {u}": buses.unit_state(u, user=True) for u in USER_UNITS})
    return s


def state(h, buses, want=None, t0=None):
    """The sysfs snapshot (taken first, as the hook returns) and the unit states. With WANT,
    also how long after T0 the sysfs took to equal WANT (None: not within 5 s)."""
    st = {"snapshot": h.snapshot()}
    if want is not None and st["snapshot"] != want:
        st["settled"] = settle(h, want, t0)
    st["units"] = units(buses)
    return st


def show(st):
    """The state table, from the snapshot taken as the hook returned."""
    dash = lambda v: v if v else "-"   # noqa: E731
    snap = st["snapshot"]
    out(f"  {'PCI function':<14} {'':<30} {'driver':<10} {'override':<10} DRM")
    for name, role in FUNCS:
        f = snap["pci"][name]
        out(f"  {name:<14} {role:<30} {dash(f['driver']):<10} {dash(f['override']):<10} {dash(' '.join(f['drm']))}")
    vt = snap["vtcon"]
    out("  " + "   ".join(f"{v}: {'bound' if vt[v] == '1' else 'unbound'}" for v in vt)
        + "   efi-framebuffer.0: " + ("bound to " + snap["fb"] if snap["fb"] else "unbound" if snap["fb_exists"]
                                      else "gone (the GPU driver's probe removed it)"))
    items = [f"{u} {s}" for u, s in st["units"].items()]
    out("  units: " + items[0] + " (display-manager.service)")
    rest = items[1:]
    for i in range(0, len(rest), 3):
        out("         " + ", ".join(rest[i:i + 3]))


def run(args, xml):
    return fakehost.run_hook([HOOK] + args, xml)


def show_steps(stderr):
    for line in stderr.splitlines():
        m = STEP.match(line)
        if m:
            verb, n, total, what, ms = m.groups()
            t = f"{float(ms):8.1f} ms" if ms else " " * 11
            out(f"  {verb:<7} {n:>2}/{total}  {what:<62} {t}")
        elif line.strip():
            out("  " + line)


def diff(a, b, prefix=""):
    lines = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            lines += diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            lines.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return lines


def settle(h, want, t0, timeout=5.0):
    """Seconds from T0 until the sysfs snapshot equals WANT, or None."""
    while time.monotonic() - t0 < timeout:
        if h.snapshot() == want:
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def main():
    fakehost.enter_namespace()
    scratch = fakehost.SCRATCH
    pw = busmock.ensure_user(USER, scratch)
    conf = os.path.join(scratch, "kvm.conf")
    write_conf(conf, pw.pw_uid)
    buslog = os.path.join(scratch, "buses.log")
    failures = []

    out("qemu-hook demo: the real binary on an emulated host (private mount namespace,")
    out("FUSE sysfs of a Vega 64 + R5 240, mocked systemd on the system bus and on the user's bus)")
    buses = start_buses(buslog)
    try:
        with fakehost.Host() as h:
            h.delay(**DELAYS)
            xml = fakehost.domain_xml(VM, [VEGA, VEGA_AUDIO])

            section(f"kvm.conf (original format, {conf}, root:root 0644)")
            with open(conf) as f:
                for line in f.read().splitlines()[1:]:
                    out("  " + line)
            out(f"  user {USER} has uid {pw.pw_uid}; emulated delays: probe {DELAYS['probe']} ms, "
                f"DRM card {DELAYS['drm']} ms, unbind {DELAYS['unbind']} ms")

            section("initial state")
            before = state(h, buses)
            show(before)

            section(f"qemu-hook --dry-run {VM} prepare begin -   (the plan; changes nothing)")
            h.clear_log()
            rc, stdout, stderr, _ = run(["--config", conf, "--dry-run", VM, "prepare", "begin", "-"], xml)
            for line in stdout.splitlines():
                out("  " + line)
            for line in stderr.splitlines():
                out("  (stderr) " + line)
            if rc != 0:
                failures.append(f"--dry-run exited {rc}")
            if h.writes():
                failures.append(f"--dry-run made {h.writes()} sysfs writes")

            section(f"prepare begin: libvirt starts {VM} (domain XML passes {VEGA} and {VEGA_AUDIO})")
            out(f"  $ qemu-hook --config {conf} --verbose {VM} prepare begin - < domain.xml")
            h.clear_log()
            rc, stdout, stderr, wall = run(["--config", conf, "--verbose", VM, "prepare", "begin", "-"], xml)
            show_steps(stderr)
            out(f"  exit {rc}, wall time {wall * 1000:.1f} ms, {h.writes()} sysfs writes")
            if rc != 0:
                failures.append(f"prepare begin exited {rc}")
            if stdout:
                failures.append(f"prepare begin wrote to stdout: {stdout!r}")

            section("after the hand-over")
            during = state(h, buses)
            show(during)
            pci = during["snapshot"]["pci"]
            expect = {f"{VEGA} on vfio-pci": pci[VEGA]["driver"] == "vfio-pci",
                      f"{VEGA_AUDIO} on vfio-pci": pci[VEGA_AUDIO]["driver"] == "vfio-pci",
                      f"{R5} on radeon with a DRM card": pci[R5]["driver"] == "radeon" and bool(pci[R5]["drm"]),
                      "vtcon1 bound again": during["snapshot"]["vtcon"].get("vtcon1") == "1",
                      "units as before": during["units"] == before["units"]}
            bad = [k for k, ok in expect.items() if not ok]
            out("  expected hand-over state when the hook returned: " + ("yes" if not bad else "NO: " + ", ".join(bad)))
            if bad:
                failures.append("hand-over state: " + ", ".join(bad))

            section(f"release end: {VM} has stopped")
            out(f"  $ qemu-hook --config {conf} --verbose {VM} release end - < domain.xml")
            h.clear_log()
            rc, stdout, stderr, wall = run(["--config", conf, "--verbose", VM, "release", "end", "-"], xml)
            t_returned = time.monotonic()
            show_steps(stderr)
            out(f"  exit {rc}, wall time {wall * 1000:.1f} ms, {h.writes()} sysfs writes")
            if rc != 0:
                failures.append(f"release end exited {rc}")
            if stdout:
                failures.append(f"release end wrote to stdout: {stdout!r}")

            after = state(h, buses, before["snapshot"], t_returned)
            section("final state")
            show(after)
            keys = ("snapshot", "units")
            changes = diff({k: before[k] for k in keys}, {k: after[k] for k in keys})
            if changes:
                failures.append("when release end returned, the host was not as before (see above)")
                settled = after["settled"]
                out("  when release end returned the host was NOT yet as before:")
                for c in changes:
                    out("    " + c)
                out("  " + (f"the emulated sysfs reached the initial state {settled * 1000:.0f} ms after the hook "
                            "returned (asynchronous probe / DRM card creation): the hook did not wait for it"
                            if settled is not None else "and it still differs 5 s later"))
    finally:
        buses.stop()

    out()
    if failures:
        out("RESULT: FAILED")
        for f in failures:
            out("  - " + f)
        return 1
    out("RESULT: the host is exactly as before (sysfs snapshot and unit states equal), every hook exited 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
