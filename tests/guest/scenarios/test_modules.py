"""[gpu] unload_driver on the real kernel. The GPU's HDMI audio (03.1) is the guest's only HDA
device, on snd_hda_intel: once it is on vfio-pci, nothing uses the module and the hand-over
unloads it (delete_module through libkmod); the hand-back loads it again before 03.1 goes back,
and its sound card returns. The VGA (03.0) is on bochs-drm, of module bochs, which is also the
weak GPU's display driver (04.0): bochs must stay, and --dry-run, --check and the log say why."""
import os

from lib import guest as g
from lib.registry import scenario

from scenarios.test_real import back_to_boot, cleanup, native, on_weak_gpu

FRONT = "/usr/sbin/qemu-hook"
SND = "/sys/module/snd_hda_intel"


def conf():
    # 60 s: a loaded TCG guest's greetd may take longer than 20 s to start.
    return native(timeout="60s").replace("address = %s\n" % g.GPU, "address = %s\nunload_driver = yes\n" % g.GPU, 1)


def module_state(name):
    path = "/sys/module/%s/initstate" % name
    return g.read(path).strip() if os.path.exists(path) else "absent"


@scenario(timeout=480)
def unload_driver_on_the_real_kernel(t):
    """unload_driver = yes: the plan unloads snd_hda_intel after the move and keeps bochs (the
    secondary's display driver); virsh start gaming leaves /sys/module/snd_hda_intel gone, virsh
    destroy brings it back live with 03.1 on it and its sound card; the host ends as booted."""
    g.write_kvm_conf(conf())
    try:
        t.check(module_state("snd_hda_intel") == "live" and g.pci_driver(g.GPU_AUDIO) == "snd_hda_intel",
                "at boot: snd_hda_intel live, 03.1 on it")
        with open(SND + "/refcnt") as f:
            t.data["refcnt_at_boot"] = int(f.read())
        d = g.run([FRONT, "--dry-run", g.DOMAIN, "prepare", "begin", "-"], timeout=60, input=g.domain_xml())
        t.section("--dry-run", d.out + d.err)
        t.check("unload module snd_hda_intel (driver snd_hda_intel of %s; refcount " % g.GPU_AUDIO in d.out,
                "the plan unloads snd_hda_intel, with its users")
        t.check("(skip) unload module bochs: its driver bochs-drm is the secondary GPU's display driver" in d.out,
                "the plan keeps bochs, saying why")
        lines = d.out.splitlines()
        moved = max(i for i, l in enumerate(lines) if "move %s from snd_hda_intel to vfio-pci" % g.GPU_AUDIO in l)
        unload = next(i for i, l in enumerate(lines) if "unload module snd_hda_intel" in l)
        t.check(moved < unload, "snd_hda_intel is unloaded after 03.1's move (lines %d, %d)" % (moved, unload))
        c = g.run([FRONT, "--check", g.DOMAIN], timeout=120,
                  env=dict(g.LIBVIRT_HOOK_ENV, LIBVIRT_DEFAULT_URI="test:///nonexistent.xml"))
        t.section("--check", c.out + c.err)
        t.check("[gpu] unload_driver: module snd_hda_intel is unloaded after the move" in c.out and
                "[gpu] unload_driver: module bochs stays loaded: its driver bochs-drm is the secondary GPU's "
                "display driver" in c.out, "--check says which module goes and which stays")

        cursor = g.journal_cursor()
        r = g.run(["virsh", "start", g.DOMAIN], timeout=180)
        t.section("virsh start", r.describe())
        if not t.check(r.ok, "virsh start exits 0 (exit %s)" % r.rc):
            return
        t.data["during"] = {"snd_hda_intel": module_state("snd_hda_intel"), "bochs": module_state("bochs"),
                            "03.1": g.pci_driver(g.GPU_AUDIO)}
        t.check(not os.path.exists(SND), "snd_hda_intel unloaded: %s is gone" % SND)
        t.check(g.pci_driver(g.GPU_AUDIO) == "vfio-pci" and g.pci_driver(g.GPU) == "vfio-pci",
                "03.0 and 03.1 on vfio-pci")
        t.check(module_state("bochs") == "live", "bochs stays loaded (the weak GPU needs it)")
        with open("/run/qemu-hook/gaming.state") as f:
            journal = f.read()
        t.check("kind = module\ntarget = snd_hda_intel\nfrom = loaded\nto = unloaded\n" in journal,
                "the journal records the unload")
        warned = [e.get("MESSAGE", "") for e in g.hook_journal(cursor)
                  if "module bochs stays loaded" in e.get("MESSAGE", "")]
        t.check(bool(warned), "the hook logged that bochs stays: %s" % warned[:1])
        on_weak_gpu(t)

        d = g.run(["virsh", "destroy", g.DOMAIN], timeout=180)
        t.section("virsh destroy", d.describe())
        t.check(d.ok, "virsh destroy exits 0 (exit %s)" % d.rc)
        t.data["after"] = {"snd_hda_intel": module_state("snd_hda_intel"), "03.1": g.pci_driver(g.GPU_AUDIO)}
        t.check(module_state("snd_hda_intel") == "live", "snd_hda_intel loaded again")
        t.check(g.pci_driver(g.GPU_AUDIO) == "snd_hda_intel" and g.sound_card(g.GPU_AUDIO) is not None,
                "03.1 back on snd_hda_intel, with its sound card (%s)" % g.sound_card(g.GPU_AUDIO))
        back_to_boot(t, "after virsh destroy")
    finally:
        if g.domain_state() == "running":
            g.run(["virsh", "destroy", g.DOMAIN], timeout=120)
        cleanup()
