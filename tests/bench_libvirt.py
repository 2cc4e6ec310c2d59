#!/usr/bin/python3
"""`make bench`, second part: `virsh start` and `virsh destroy` of a TCG domain (64 MiB, no disk)
under a real libvirtd (tests/lib/libvirthost.py), without a hook, with qemu-hook installed and the
VM not ours, and with qemu-hook handing the GPU over and back (emulated host, no delays, no D-Bus);
and with /bin/true as the hook, for what libvirt's calling any hook costs (3 calls per start,
2 per destroy). Then what reading the domain XML through libvirt's API costs qemu-hook-act
--dry-run by hand (libvirt.so.0 dlopened, a read-only connection) against the XML on stdin.
Medians of N cycles, from virsh's process. The hook goes through the tests' wrapper (nsenter and
sh into the emulated host's namespace), whose cost is in the qemu-hook numbers.
"""
import os
import statistics
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import fakehost  # noqa: E402
import libvirthost  # noqa: E402

N = 9
N_DRY = 20
CONF = fakehost.NATIVE_CONF + "[vm gaming]\nhandle = yes\n"
HOOK = "/etc/libvirt/hooks/qemu"


def cycles(lv, host, vm):
    before = host.snapshot()
    starts, destroys = [], []
    for _ in range(N):
        fakehost.check_safe()
        starts.append(lv.ok("start", vm)[1])
        destroys.append(lv.ok("destroy", vm)[1])
        if host.snapshot() != before:
            sys.exit(f"bench: {vm}: the host was not restored after a cycle")
    return statistics.median(starts) * 1000, statistics.median(destroys) * 1000


def dry_runs():
    """Medians (ms) of qemu-hook-act --dry-run plain prepare begin with the XML on stdin and with
    none, where it asks libvirtd; alternating, N_DRY runs each."""
    act = os.path.join(REPO, "qemu-hook-act")
    argv = [act, "--config", "/etc/libvirt/hooks/kvm.conf", "--dry-run", "plain", "prepare", "begin"]
    times = {"stdin": [], "libvirt": []}
    for i in range(N_DRY):
        ways = [("stdin", libvirthost.domain_xml("plain")), ("libvirt", "")]
        for way, xml in ways if i % 2 == 0 else reversed(ways):
            rc, out, err, secs = fakehost.run_hook(argv, xml, {"LIBVIRT_DEFAULT_URI": libvirthost.URI})
            if rc != 0 or "hand-over" in out:   # the XML unread: exit 2; plain is not ours: no plan
                sys.exit(f"bench: --dry-run plain, XML from {way}: exit {rc}: {err.strip()[:300]}")
            times[way].append(secs)
    return {way: statistics.median(xs) * 1000 for way, xs in times.items()}


def main():
    fakehost.enter_namespace()
    with fakehost.Host() as host:
        fakehost.check_safe()
        lv = libvirthost.Libvirt.start()
        try:
            with open("/etc/libvirt/hooks/kvm.conf", "w") as f:
                f.write(CONF)
            for vm in ("plain", "gaming"):
                lv.define(vm)
            rows = []
            target = os.readlink(HOOK)
            os.unlink(HOOK)             # libvirtd looks for hooks when it starts
            lv.restart_daemon()
            rows.append(("no hook installed", "plain", *cycles(lv, host, "plain")))
            os.symlink("/bin/true", HOOK)   # what any hook costs: libvirt's fork, exec, pipes
            lv.restart_daemon()
            rows.append(("/bin/true as the hook", "plain", *cycles(lv, host, "plain")))
            os.unlink(HOOK)
            os.symlink(target, HOOK)
            lv.restart_daemon()
            rows.append(("qemu-hook, VM not ours", "plain", *cycles(lv, host, "plain")))
            rows.append(("qemu-hook, hand-over and back", "gaming", *cycles(lv, host, "gaming")))
            dry = dry_runs()
        finally:
            lv.stop()
    print(f"libvirtd + qemu-system-x86 (TCG, 64 MiB, no disk), medians of {N} cycles:")
    print(f"  {'':32} {'virsh start':>12} {'virsh destroy':>14}")
    for label, _, start, destroy in rows:
        print(f"  {label:32} {start:9.0f} ms {destroy:11.0f} ms")
    print(f"qemu-hook-act --dry-run plain prepare begin (not ours: no plan), medians of {N_DRY} alternating runs:")
    print(f"  {'domain XML on stdin':48} {dry['stdin']:7.1f} ms")
    print(f"  {'dry-run reading XML via libvirt API (dlopen)':48} {dry['libvirt']:7.1f} ms   "
          f"({dry['libvirt'] - dry['stdin']:+.1f} ms)")


if __name__ == "__main__":
    main()
