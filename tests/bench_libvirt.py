#!/usr/bin/python3
"""`make bench`, second part: `virsh start` and `virsh destroy` of a TCG domain (64 MiB, no disk)
under a real libvirtd (tests/lib/libvirthost.py), without a hook, with qemu-hook installed and the
VM not ours, and with qemu-hook handing the GPU over and back (emulated host, no delays, no D-Bus);
and with /bin/true as the hook, for what libvirt's calling any hook costs (3 calls per start,
2 per destroy).
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
        finally:
            lv.stop()
    print(f"libvirtd + qemu-system-x86 (TCG, 64 MiB, no disk), medians of {N} cycles:")
    print(f"  {'':32} {'virsh start':>12} {'virsh destroy':>14}")
    for label, _, start, destroy in rows:
        print(f"  {label:32} {start:9.0f} ms {destroy:11.0f} ms")


if __name__ == "__main__":
    main()
