"""The origin's setup as a user has it: their kvm.conf (original format), their VM passing both
functions of the big GPU, started and destroyed with virsh under the guest's real libvirtd."""
import os
import time

from lib import guest as g
from lib.registry import scenario

# What a successful `virsh start` leaves (lib.guest.snapshot keys): the big GPU's functions on
# vfio-pci, the weak GPU driving the desktop, the audio units back, the VM running.
STARTED = {
    "03.0 driver": "vfio-pci", "03.0 override": "vfio-pci", "03.0 drm card": False,
    "03.1 driver": "vfio-pci", "03.1 override": "vfio-pci", "03.1 sound card": False,
    "04.0 driver": "bochs-drm", "04.0 drm card": True, "04.0 card held by weston": True,
    "fbcon": "bound",
    g.DISPLAY_MANAGER: "active",
    "cpuset user.slice": None, "cpuset system.slice": None, "cpuset init.scope": None,
    "domain gaming": "running",
    "qemu-hook processes": [],
}
STARTED.update({"user " + u: "active" for u in g.AUDIO_UNITS})


def vfio_holders():
    group = g.iommu_group(g.GPU)
    return [h for h in g.holders(["/dev/vfio/%s" % group]) if h["comm"].startswith("qemu-system")]


@scenario(timeout=300)
def origin_start_destroy(t):
    """Origin kvm.conf: virsh start gaming hands the GPU over, virsh destroy hands it back."""
    start_destroy(t)


@scenario(group="seabios", firmware="seabios", timeout=300)
def origin_start_destroy_seabios(t):
    """The same under SeaBIOS, where fbcon's vtconsole is vtcon0."""
    start_destroy(t)


def start_destroy(t):
    g.write_kvm_conf(g.ORIGIN_KVM_CONF)
    t.section("kvm.conf", g.ORIGIN_KVM_CONF)
    try:
        run(t)
    finally:
        if g.domain_state() == "running":
            g.run(["virsh", "destroy", g.DOMAIN], timeout=120)
        os.unlink(g.KVM_CONF)


def run(t):
    cursor = g.journal_cursor()

    r = g.run(["virsh", "start", g.DOMAIN], timeout=180)
    t.data["virsh_start_secs"] = round(r.secs, 2)
    t.data["virsh_start_rc"] = r.rc
    t.section("virsh start %s (%.2f s)" % (g.DOMAIN, r.secs), r.describe())
    started = t.check(r.ok, "virsh start %s failed (exit %s): %s"
                      % (g.DOMAIN, r.rc, (r.err or r.out).strip()))
    journal = g.hook_journal(cursor)
    t.data["hook_journal_start"] = journal
    t.section("qemu-hook journal (start)", "\n".join(
        "%s %s: %s" % (e.get("QEMU_HOOK_VM"), e.get("QEMU_HOOK_STEP"), e.get("MESSAGE"))
        for e in journal))
    t.section("journal of the start: qemu-hook, libvirtd, units (systemd)", g.sh(
        "journalctl --after-cursor '%s' -o short-monotonic --no-pager | "
        "grep -E 'qemu-hook|libvirtd|systemd\\[1\\]: (Start|Stop)'" % cursor, timeout=30).out)
    t.check(any(e.get("QEMU_HOOK_VM") == g.DOMAIN and e.get("QEMU_HOOK_STEP") for e in journal),
            "the journal has the hook's steps for %s (QEMU_HOOK_VM, QEMU_HOOK_STEP)" % g.DOMAIN)
    after_start = g.snapshot()
    t.section("state after virsh start", g.show(after_start))

    if started:
        t.expect_state(STARTED, after_start, "after virsh start")
        t0 = time.monotonic()
        t.wait_for(lambda: g.desktop_on(g.WEAK_GPU, audio=None), 90,
                   "the desktop back on the weak GPU (display manager active, weston holding "
                   "04.0's card)", report=g.desktop_report)
        t.data["desktop_on_weak_gpu_after_start_secs"] = round(r.secs + time.monotonic() - t0, 2)
        v = vfio_holders()
        t.check(v, "the nested qemu holds /dev/vfio/%s" % g.iommu_group(g.GPU))
        t.data["vfio_holders"] = v

        cursor = g.journal_cursor()
        d = g.run(["virsh", "destroy", g.DOMAIN], timeout=180)
        t.data["virsh_destroy_secs"] = round(d.secs, 2)
        t.section("virsh destroy %s (%.2f s)" % (g.DOMAIN, d.secs), d.describe())
        t.check(d.ok, "virsh destroy %s failed (exit %s): %s"
                % (g.DOMAIN, d.rc, (d.err or d.out).strip()))
        t.section("qemu-hook journal (destroy)", "\n".join(
            "%s %s: %s" % (e.get("QEMU_HOOK_VM"), e.get("QEMU_HOOK_STEP"), e.get("MESSAGE"))
            for e in g.hook_journal(cursor)))
    else:
        t.log("virsh start failed: the hook must have rolled back; checking the host is as booted")

    # Handed back (or rolled back): the boot state, by meaning, once the desktop is up again.
    t0 = time.monotonic()
    t.wait_for(lambda: g.desktop_on(g.GPU), 90,
               "the desktop back on the big GPU (weston holding 03.0's card, WirePlumber 03.1's)",
               report=g.desktop_report)
    t.data["desktop_back_secs"] = round(time.monotonic() - t0, 2)
    after = g.snapshot()
    t.section("state after virsh destroy" if started else "state after the failed start", g.show(after))
    t.expect_state(t.boot, after, "after destroy, compared with the boot state" if started
                   else "after the failed start, compared with the boot state")
