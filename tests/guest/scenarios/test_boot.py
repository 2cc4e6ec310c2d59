"""The guest as it boots, before any hand-over: what every other scenario starts from."""
from lib import guest as g
from lib.registry import scenario

# The boot state by meaning (lib.guest.snapshot keys).
BOOT_STATE = {
    "03.0 driver": "bochs-drm", "03.0 override": None, "03.0 drm card": True,
    "03.0 card held by weston": True,
    "03.1 driver": "snd_hda_intel", "03.1 override": None, "03.1 sound card": True,
    "03.1 sound held by wireplumber": True,
    "04.0 driver": "vfio-pci", "04.0 override": "vfio-pci", "04.0 drm card": False,
    "fbcon": "bound",
    # bochs-drm's probe removed efi-framebuffer.0 for good (OVMF); SeaBIOS has none.
    "boot framebuffers": [],
    g.DISPLAY_MANAGER: "active",
    "cpuset user.slice": None, "cpuset system.slice": None, "cpuset init.scope": None,
    "domain gaming": "shut off",
    "qemu-hook processes": [],
}
BOOT_STATE.update({"user " + u: "active" for u in g.AUDIO_UNITS})


def check_boot_state(t, fbcon_vtcon):
    t.section("boot state", g.show(t.boot))
    t.expect_state(BOOT_STATE, t.boot, "boot state")
    fb = g.fbcon()
    t.check(fb is not None and fb["vtcon"] == fbcon_vtcon,
            "fbcon's vtconsole is %s under this firmware, found %r" % (fbcon_vtcon, fb))
    t.check(g.iommu_group(g.GPU) == g.iommu_group(g.GPU_AUDIO) != g.iommu_group(g.WEAK_GPU),
            "IOMMU groups: the GPU's two functions share one, the weak GPU has its own (%s %s %s)"
            % tuple(g.iommu_group(a) for a in g.FUNCTIONS))
    dm = g.unit_properties([g.DISPLAY_MANAGER], ("Id",)).get(g.DISPLAY_MANAGER, {}).get("Id")
    t.check(dm == "greetd.service", "display-manager.service is greetd, is %r" % dm)
    t.check(g.run(["test", "-x", g.HOOK]).ok, "the hook %s is installed" % g.HOOK)
    t.data["fbcon"] = fb
    t.data["drm"] = t.boot["details"]["03.0 drm card"]


@scenario(timeout=60)
def boot_state(t):
    """OVMF boot: the GPU drives the desktop, its audio is WirePlumber's, the weak GPU parked."""
    check_boot_state(t, "vtcon1")


@scenario(group="seabios", firmware="seabios", timeout=60)
def boot_state_seabios(t):
    """SeaBIOS boot: the same state, fbcon's vtconsole elsewhere."""
    check_boot_state(t, "vtcon0")
