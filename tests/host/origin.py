"""Builds the BACKING tree for build/fakesys: the hardware of /work/shared/origin (a Vega 64
handed to the VM, an R5 240 taking over the host display) laid out as sysfs and libudev expect.

    build(root, **variant) -> root
    python3 tests/host/origin.py DIR [--vega-on-vfio] [--no-secondary] [--audio-on-hda] [--foreign]

The tree is plain files and relative symlinks; fakesys mounts it over /sys and changes it on
writes. It never contains .fakesys/marker: only the mounted emulation shows that file.
"""
import os
import sys

DISPLAY_DRIVERS = ("amdgpu", "radeon")
VEGA, VEGA_AUDIO = "0000:0d:00.0", "0000:0d:00.1"
R5, R5_AUDIO = "0000:08:00.0", "0000:08:00.1"
FOREIGN = "0000:0e:00.0"


class Tree:
    def __init__(self, root):
        self.root = root

    def path(self, rel):
        return os.path.join(self.root, rel)

    def dir(self, rel):
        os.makedirs(self.path(rel), exist_ok=True)

    def file(self, rel, text="", mode=0o444):
        self.dir(os.path.dirname(rel))
        with open(self.path(rel), "w") as f:
            f.write(text)
        os.chmod(self.path(rel), mode)

    def link(self, rel, target):
        """A relative link at REL to TARGET (both relative to the root), as sysfs makes them:
        it resolves the same inside BACKING and under /sys."""
        self.dir(os.path.dirname(rel))
        up = "../" * rel.count("/")
        if os.path.lexists(self.path(rel)):
            os.unlink(self.path(rel))
        os.symlink(up + target, self.path(rel))

    def uevent(self, rel, props):
        self.file(rel + "/uevent", "".join(f"{k}={v}\n" for k, v in props.items() if v is not None), 0o644)


class Origin:
    """The machine of origin/, with the variants tests need."""

    def __init__(self, root, vega_driver="amdgpu", secondary=True, secondary_driver="vfio-pci",
                 audio_driver="vfio-pci", foreign=False, framebuffer=True, vtcons=2):
        self.t = Tree(root)
        self.devs = {}          # name -> device dir (relative)
        self.drivers = [        # registration order, as the kernel would have them after boot
            ("pci", "vfio-pci", ["1002:aaf8", "1002:6613", "1002:aab0"]),   # options vfio-pci ids=
            ("pci", "amdgpu", ["1002:687f"]),
            ("pci", "radeon", ["1002:6613"]),
            ("pci", "snd_hda_intel", ["1002:aaf8", "1002:aab0"]),
            ("pci", "pcieport", ["1022:1453", "1022:1471"]),
        ]
        if foreign:
            self.drivers.append(("pci", "xhci_hcd", ["1022:145c"]))
        self.drivers.append(("platform", "efi-framebuffer", ["efi-framebuffer"]))
        self.opts = dict(vega_driver=vega_driver, secondary=secondary, secondary_driver=secondary_driver,
                         audio_driver=audio_driver, foreign=foreign, framebuffer=framebuffer, vtcons=vtcons)

    def build(self):
        t, o = self.t, self.opts
        for rel in ("class/drm", "class/sound", "class/vtconsole", "kernel/iommu_groups",
                    "bus/pci/devices", "bus/platform/devices", "devices/virtual/vtconsole"):
            t.dir(rel)
        for bus in ("pci", "platform"):
            t.file(f"bus/{bus}/drivers_probe", "", 0o200)
            t.file(f"bus/{bus}/drivers_autoprobe", "1\n", 0o644)
            t.file(f"bus/{bus}/uevent", "", 0o200)
        t.file("bus/pci/rescan", "", 0o200)
        for bus, drv, _ in self.drivers:
            for attr in ("bind", "unbind", "uevent") + (("new_id", "remove_id") if bus == "pci" else ()):
                t.file(f"bus/{bus}/drivers/{drv}/{attr}", "", 0o200)
        t.file("devices/pci0000:00/uevent", "", 0o644)

        root = "devices/pci0000:00"
        self.pci("0000:00:03.1", root, "1022:1471", "0x060400", "pcieport", 17)
        self.pci(VEGA, root + "/0000:00:03.1", "1002:687f", "0x030000", o["vega_driver"], 17,
                 subsys="1002:0b36", boot_vga=1)
        self.pci(VEGA_AUDIO, root + "/0000:00:03.1", "1002:aaf8", "0x040300", o["audio_driver"], 17,
                 subsys="1002:aaf8")
        if o["foreign"]:
            self.pci(FOREIGN, root + "/0000:00:03.1", "1022:145c", "0x0c0330", "xhci_hcd", 17)
        if o["secondary"]:
            self.pci("0000:00:01.1", root, "1022:1453", "0x060400", "pcieport", 18)
            self.pci(R5, root + "/0000:00:01.1", "1002:6613", "0x030000", o["secondary_driver"], 18,
                     subsys="1028:2120", boot_vga=0)
            self.pci(R5_AUDIO, root + "/0000:00:01.1", "1002:aab0", "0x040300", "vfio-pci", 18,
                     subsys="1028:aab0")
        for n in range(o["vtcons"]):
            self.vtcon(n, "(S) dummy device" if n == 0 else "(M) frame buffer device")
        if o["framebuffer"]:
            self.efifb(o["framebuffer"] is True or o["framebuffer"] == "bound")
        t.file(".fakesys/drivers", "".join(f"{b} {d} {' '.join(ids)}\n" for b, d, ids in self.drivers), 0o644)
        for name in ("log", "fail", "delay"):
            t.file(".fakesys/" + name, "", 0o644)
        return t.root

    def pci(self, name, parent, ids, cls, driver, group, subsys=None, boot_vga=None):
        t = self.t
        d = f"{parent}/{name}"
        vendor, device = ids.split(":")
        sv, sd = (subsys or ids).split(":")
        c = int(cls, 16)
        t.uevent(d, {
            "DRIVER": driver,
            "PCI_CLASS": f"{c:X}",
            "PCI_ID": f"{vendor}:{device}".upper(),
            "PCI_SUBSYS_ID": f"{sv}:{sd}".upper(),
            "PCI_SLOT_NAME": name,
            "MODALIAS": "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X" % (
                int(vendor, 16), int(device, 16), int(sv, 16), int(sd, 16), c >> 16, (c >> 8) & 0xff, c & 0xff),
        })
        for attr, val in (("vendor", "0x" + vendor), ("device", "0x" + device), ("subsystem_vendor", "0x" + sv),
                          ("subsystem_device", "0x" + sd), ("class", cls), ("enable", "1"),
                          ("numa_node", "-1"), ("irq", "0")):
            t.file(f"{d}/{attr}", val + "\n")
        if boot_vga is not None:
            t.file(f"{d}/boot_vga", f"{boot_vga}\n")
        t.file(f"{d}/driver_override", "(null)\n", 0o644)
        for attr in ("remove", "rescan", "reset"):
            t.file(f"{d}/{attr}", "", 0o200)
        t.link(f"{d}/subsystem", "bus/pci")
        t.link(f"bus/pci/devices/{name}", d)
        t.link(f"{d}/iommu_group", f"kernel/iommu_groups/{group}")
        t.link(f"kernel/iommu_groups/{group}/devices/{name}", d)
        t.file(f"kernel/iommu_groups/{group}/type", "DMA\n")
        self.devs[name] = d
        if driver:
            self.bind("pci", driver, name, d)
            if driver in DISPLAY_DRIVERS and c >> 16 == 3:
                self.drm(d)
            if driver == "snd_hda_intel":
                self.sound(d)

    def bind(self, bus, driver, name, d):
        self.t.link(f"{d}/driver", f"bus/{bus}/drivers/{driver}")
        self.t.link(f"bus/{bus}/drivers/{driver}/{name}", d)

    def class_dev(self, d, parent, cls, devname=None, major=0, minor=0):
        """Same layout fakesys creates when a driver binds (keep the two in step)."""
        t = self.t
        t.uevent(d, {"MAJOR": devname and major, "MINOR": devname and minor, "DEVNAME": devname})
        if devname:
            t.file(f"{d}/dev", f"{major}:{minor}\n")
        t.link(f"{d}/subsystem", f"class/{cls}")
        t.link(f"{d}/device", parent)
        t.link(f"class/{cls}/{os.path.basename(d)}", d)

    def lowest_free(self, cls):
        n = 0
        while os.path.lexists(self.t.path(f"class/{cls}/card{n}")):
            n += 1
        return n

    def drm(self, d):
        n = self.lowest_free("drm")
        self.class_dev(f"{d}/drm/card{n}", d, "drm", f"dri/card{n}", 226, n)
        self.class_dev(f"{d}/drm/renderD{128 + n}", d, "drm", f"dri/renderD{128 + n}", 226, 128 + n)

    def sound(self, d):
        n = self.lowest_free("sound")
        card = f"{d}/sound/card{n}"
        self.class_dev(card, d, "sound")
        self.class_dev(f"{card}/controlC{n}", card, "sound", f"snd/controlC{n}", 116, 32 * n)

    def vtcon(self, n, name):
        t, d = self.t, f"devices/virtual/vtconsole/vtcon{n}"
        t.uevent(d, {})
        t.file(f"{d}/name", name + "\n")
        t.file(f"{d}/bind", "1\n", 0o644)
        t.link(f"{d}/subsystem", "class/vtconsole")
        t.link(f"class/vtconsole/vtcon{n}", d)

    def efifb(self, bound):
        # Linux >= 6.3 parents the boot framebuffer to the PCI device that scans it out.
        t, name = self.t, "efi-framebuffer.0"
        d = f"{self.devs[VEGA]}/{name}"
        t.uevent(d, {"DRIVER": "efi-framebuffer" if bound else None, "MODALIAS": "platform:efi-framebuffer"})
        t.file(f"{d}/driver_override", "(null)\n", 0o644)
        t.link(f"{d}/subsystem", "bus/platform")
        t.link(f"bus/platform/devices/{name}", d)
        if bound:
            self.bind("platform", "efi-framebuffer", name, d)


def build(root, **variant):
    """Build the tree in ROOT (created if needed) and return ROOT."""
    os.makedirs(root, exist_ok=True)
    return Origin(root, **variant).build()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    build(args[0], vega_driver="vfio-pci" if "--vega-on-vfio" in args else "amdgpu",
          secondary="--no-secondary" not in args,
          audio_driver="snd_hda_intel" if "--audio-on-hda" in args else "vfio-pci",
          foreign="--foreign" in args)
