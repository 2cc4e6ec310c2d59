"""Builds the BACKING tree for build/fakesys: the hardware of /work/shared/origin (a Vega 64
handed to the VM, an R5 240 taking over the host display) laid out as sysfs and libudev expect.

    build(root, **variant) -> root
    python3 tests/host/origin.py DIR [--vega-on-vfio] [--no-secondary] [--audio-on-hda] [--foreign] [--nvidia]

The tree is plain files and relative symlinks; fakesys mounts it over /sys and changes it on
writes. It never contains .fakesys/marker: only the mounted emulation shows that file.

The default tree is the state a 6.1 kernel leaves after booting the origin under OVMF: amdgpu's
probe removed efi-framebuffer.0 (it is gone, not unbound), fbcon's vtcon (vtcon1, after the
dummy console vtcon0) is bound over amdgpu's fbdev framebuffer. Drivers are registered by
modules whose names may differ (vfio_pci registers vfio-pci, xhci_pci xhci_hcd, bochs
bochs-drm): /sys/module/MODULE/drivers/BUS:DRIVER says which.

Char devices of the kernel's own (fakesys.c says which numbers and why): each IOMMU group with a
function on vfio-pci has devices/virtual/vfio/GROUP (/dev/vfio/GROUP), each function on vfio-pci
vfio-dev/vfioN (with a node only under vfio_cdev); vfio-pci loaded gives the container
/dev/vfio/vfio (misc), amdgpu loaded /dev/kfd, nvidia its bare nodes (MODULE_INIT).

Modules come and go (fakesys.c, "unload"/"load" from build/kmodtrap): .fakesys/modules says what
each module on disk registers, needs and makes; /sys/module/NAME/holders/ the loaded dependents.
"""
import os
import sys

VEGA, VEGA_AUDIO = "0000:0d:00.0", "0000:0d:00.1"
R5, R5_AUDIO = "0000:08:00.0", "0000:08:00.1"
FOREIGN = "0000:0e:00.0"
PARKING = ("vfio-pci", "pci-stub")     # drivers that bind a display function without a DRM card
# Dynamic majors on a real kernel; fakesys.c uses the same. nvidia's is fixed (195), nvidia-uvm's
# dynamic.
VFIO_GROUP_MAJOR, VFIO_CDEV_MAJOR, KFD_MAJOR, NVIDIA_MAJOR, NVIDIA_UVM_MAJOR = 242, 241, 235, 195, 510

# The modules on disk (libkmod's modules.alias is made from this by tests/lib/fakehost.py):
# name -> (path under /lib/modules/VERSION, aliases). Loaded or not: only the drivers of a tree
# say which are loaded. Builtin ones (pcieport, efifb) are not files.
KERNEL_MODULES = {
    "amdgpu": ("kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko", ["pci:v00001002d0000687Fsv*sd*bc*sc*i*"]),
    "radeon": ("kernel/drivers/gpu/drm/radeon/radeon.ko", ["pci:v00001002d00006613sv*sd*bc*sc*i*"]),
    "bochs": ("kernel/drivers/gpu/drm/tiny/bochs.ko", ["pci:v00001234d00001111sv*sd*bc*sc*i*"]),
    "vfio_pci": ("kernel/drivers/vfio/pci/vfio-pci.ko", ["vfio_pci:v*d*sv*sd*bc*sc*i*"]),
    "snd_hda_intel": ("kernel/sound/pci/hda/snd-hda-intel.ko",
                      ["pci:v00001002d0000AAF8sv*sd*bc*sc*i*", "pci:v00001002d0000AAB0sv*sd*bc*sc*i*"]),
    "xhci_pci": ("kernel/drivers/usb/host/xhci-pci.ko", ["pci:v*d*sv*sd*bc0Csc03i30*"]),
    # the proprietary driver as DKMS installs it; nvidia matches every NVIDIA display function
    "nvidia": ("updates/dkms/nvidia.ko", ["pci:v000010DEd*sv*sd*bc03sc00i00*", "pci:v000010DEd*sv*sd*bc03sc02i00*"]),
    "nvidia_modeset": ("updates/dkms/nvidia-modeset.ko", []),
    "nvidia_uvm": ("updates/dkms/nvidia-uvm.ko", []),
    "nvidia_drm": ("updates/dkms/nvidia-drm.ko", []),
}
BUILTIN_MODULES = ("pcieport", "efifb")

# What loading each module does (fakesys.c's load and unload, through .fakesys/modules):
#   depends  the modules it needs loaded first (modules.dep; their holders/ list it)
#   drivers  (bus, driver, ids) it registers when a tree does not say otherwise (self.drivers)
#   nodes    its own char devices (devname, major, minor, class device dir or None for a bare
#            register_chrdev node, as nvidia's: no sysfs device, the node made by nvidia-modprobe)
#   drm      the driver whose devices it gives a DRM card (nvidia_drm, modeset=1 and fbdev=1)
# Only the dependencies the tests need: amdgpu's drm, ttm... are not modelled.
MODULE_INIT = {
    "amdgpu": {"drivers": [("pci", "amdgpu", ["1002:687f"])],
               "nodes": [("kfd", KFD_MAJOR, 0, "devices/virtual/kfd/kfd")]},
    "radeon": {"drivers": [("pci", "radeon", ["1002:6613"])]},
    "bochs": {"drivers": [("pci", "bochs-drm", ["1234:1111"])]},
    "vfio_pci": {"drivers": [("pci", "vfio-pci", [])],
                 "nodes": [("vfio/vfio", 10, 196, "devices/virtual/misc/vfio")]},
    "snd_hda_intel": {"drivers": [("pci", "snd_hda_intel", ["1002:aaf8", "1002:aab0", "10de:1aef"])]},
    "xhci_pci": {"drivers": [("pci", "xhci_hcd", ["1022:145c"])]},
    "nvidia": {"drivers": [("pci", "nvidia", ["10de:2206"])],
               "nodes": [("nvidia0", NVIDIA_MAJOR, 0, None), ("nvidiactl", NVIDIA_MAJOR, 255, None)]},
    "nvidia_modeset": {"depends": ["nvidia"], "nodes": [("nvidia-modeset", NVIDIA_MAJOR, 254, None)]},
    "nvidia_uvm": {"depends": ["nvidia"], "nodes": [("nvidia-uvm", NVIDIA_UVM_MAJOR, 0, None),
                                                   ("nvidia-uvm-tools", NVIDIA_UVM_MAJOR, 1, None)]},
    "nvidia_drm": {"depends": ["nvidia_modeset"], "drm": "nvidia"},
}
NVIDIA_MODULES = ("nvidia", "nvidia_modeset", "nvidia_uvm", "nvidia_drm")

# The big GPU: (ids, subsystem, its audio's ids and subsystem).
GPUS = {"vega": ("1002:687f", "1002:0b36", "1002:aaf8", "1002:aaf8"),
        "nvidia": ("10de:2206", "10de:1467", "10de:1aef", "10de:1467")}


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
                 secondary_gpu="r5", audio_driver="vfio-pci", foreign=False, framebuffer=False,
                 fb_parent="gpu", firmware="ovmf", vfio_cdev=False, cpus=4, cpufreq="acpi", offline_cpus=(),
                 hugepage_memory_kb=512 * 1024, fragmented_kb=0, gigantic=True, hugepages=None, vendor_reset=False, gpu="vega"):
        """Variants:
        secondary_gpu  "r5": the R5 240 (1002:6613, radeon); "bochs": a QEMU bochs-display
                       (1234:1111) at the same address, whose display driver is bochs-drm,
                       registered by the module bochs: the name libkmod finds for its modalias is
                       not a driver name (write "bochs" to driver_override and nothing binds)
        framebuffer    False (default): efi-framebuffer.0 was removed by the boot GPU driver's
                       probe, as on every 6.1 boot with amdgpu. "bound" (or True) / "unbound": it
                       still exists over the Vega, bound or not: a boot GPU whose driver did not
                       take the aperture over (a proprietary driver without fbdev emulation, or
                       the GPU left without a DRM driver at boot), kept for tests of the hook's
                       framebuffer step. The next DRM or vfio-pci probe of the Vega removes it.
        fb_parent      "gpu": efi-framebuffer.0 under the Vega's device (Linux >= 6.3);
                       "platform": under devices/platform (6.1), found through boot_vga
        firmware       "ovmf": vtcon0 is "(S) dummy device", fbcon's vtcon follows; "seabios":
                       fbcon's vtcon is vtcon0, there is no dummy vtcon (and no EFI framebuffer)
        vfio_cdev      False (default): Linux 6.1, a function on vfio-pci has vfio-dev/vfioN
                       without a node; True: Linux >= 6.6 with the vfio cdev,
                       /dev/vfio/devices/vfioN too
        cpus           devices/system/cpu/cpu0..cpuN-1 (4); offline_cpus: those with online 0
        cpufreq        "acpi" (default): acpi-cpufreq's governors, schedutil set; "pstate":
                       intel_pstate's (performance powersave), powersave set; None: no CPU has
                       cpufreq/ (a VM guest, most TCG machines)
        hugepage_memory_kb  the memory huge pages can be had from (.fakesys/memory: 512 MiB);
                       fragmented_kb: of it, what only a compaction makes usable
        gigantic       whether the 1 GiB pool exists (a CPU with pdpe1gb)
        hugepages      {page kB: (nr, free[, surplus, resv])} pools at boot (default all 0), the
                       counts as the kernel shows them: nr all pages, surplus included (pages a
                       process overcommitted, in use), free the unused ones, resv included
        vendor_reset   False (default); True: the vendor_reset module is loaded (/sys/module/
                       vendor_reset), which makes device_specific a reset method the Vega supports
        gpu            "vega" (default): the big GPU at 0d:00.0 is the Vega 64 (1002:687f, amdgpu);
                       "nvidia": an RTX 3080 (10de:2206, audio 10de:1aef) on the proprietary
                       driver: vega_driver "amdgpu" (the default) means nvidia, the module nvidia,
                       with nvidia_modeset, nvidia_uvm and nvidia_drm (modeset=1, fbdev=1: a DRM
                       card and fbcon on it) loaded; its nodes /dev/nvidia0, nvidiactl,
                       nvidia-modeset, nvidia-uvm(-tools); /proc/driver/nvidia/gpus/ADDR/
                       information (fakeproc/driver, bind-mounted by fakehost) while bound
        The Vega has `resource` (its BARs): BAR 0 (256M, 256M-8G) and BAR 2 (2M,
        2M-256M) are resizable (resource0_resize, resource2_resize), its reset_method is "bus".
        """
        bochs = secondary_gpu == "bochs"
        if gpu not in GPUS:
            raise ValueError(f"gpu {gpu!r}")
        self.gpu = gpu
        self.gpu_ids, self.gpu_subsys, self.audio_ids, self.audio_subsys = GPUS[gpu]
        if gpu == "nvidia" and vega_driver == "amdgpu":
            vega_driver = "nvidia"
        gpu_driver = "nvidia" if gpu == "nvidia" else "amdgpu"
        self.secondary_ids = ("1234:1111", "1af4:1100", "0x038000") if bochs else ("1002:6613", "1028:2120", "0x030000")
        self.t = Tree(root)
        self.devs = {}          # name -> device dir (relative)
        self.drivers = [        # registration order, as the kernel would have them after boot
            # options vfio-pci ids=
            ("pci", "vfio-pci", "vfio_pci", [self.audio_ids, self.secondary_ids[0], "1002:aab0"]),
            ("pci", gpu_driver, gpu_driver, [self.gpu_ids]),
            ("pci", "bochs-drm", "bochs", ["1234:1111"]) if bochs else ("pci", "radeon", "radeon", ["1002:6613"]),
            ("pci", "snd_hda_intel", "snd_hda_intel", [self.audio_ids, "1002:aab0"]),
            ("pci", "pcieport", "pcieport", ["1022:1453", "1022:1471"]),
        ]
        if foreign:
            self.drivers.append(("pci", "xhci_hcd", "xhci_pci", ["1022:145c"]))
        self.drivers.append(("platform", "efi-framebuffer", "efifb", ["efi-framebuffer"]))
        if firmware not in ("ovmf", "seabios") or fb_parent not in ("gpu", "platform"):
            raise ValueError(f"firmware {firmware!r}, fb_parent {fb_parent!r}")
        if firmware == "seabios":
            framebuffer = False
        self.opts = dict(vega_driver=vega_driver, secondary=secondary, secondary_driver=secondary_driver,
                         cpus=cpus, cpufreq=cpufreq, offline_cpus=tuple(offline_cpus),
                         hugepage_memory_kb=hugepage_memory_kb, fragmented_kb=fragmented_kb, gigantic=gigantic,
                         hugepages=dict(hugepages or {}),
                         audio_driver=audio_driver, foreign=foreign, framebuffer=framebuffer,
                         fb_parent=fb_parent, firmware=firmware, vfio_cdev=vfio_cdev, vendor_reset=vendor_reset)

    def build(self):
        t, o = self.t, self.opts
        for rel in ("class/drm", "class/sound", "class/vtconsole", "class/vfio", "class/vfio-dev", "class/misc",
                    "kernel/iommu_groups", "bus/pci/devices", "bus/platform/devices", "devices/virtual/vtconsole"):
            t.dir(rel)
        # Made by the modules' init: the vfio container (misc 10:196), amdgpu's kfd; the bare nodes
        # (nvidia's) are fakesys's to make in DEV.
        for mod in self.loaded_modules():
            for devname, major, minor, d in MODULE_INIT.get(mod, {}).get("nodes", []):
                if d:
                    self.class_dev(d, None, d.split("/")[2], devname, major, minor)
        for bus in ("pci", "platform"):
            t.file(f"bus/{bus}/drivers_probe", "", 0o200)
            t.file(f"bus/{bus}/drivers_autoprobe", "1\n", 0o644)
            t.file(f"bus/{bus}/uevent", "", 0o200)
        t.file("bus/pci/rescan", "", 0o200)
        for bus, drv, mod, _ in self.drivers:
            for attr in ("bind", "unbind", "uevent") + (("new_id", "remove_id") if bus == "pci" else ()):
                t.file(f"bus/{bus}/drivers/{drv}/{attr}", "", 0o200)
            # the module that registered it (builtin ones too: no initstate there)
            t.link(f"module/{mod}/drivers/{bus}:{drv}", f"bus/{bus}/drivers/{drv}")
            t.link(f"bus/{bus}/drivers/{drv}/module", f"module/{mod}")
        for mod in self.loaded_modules():
            t.file(f"module/{mod}/initstate", "live\n")
            t.file(f"module/{mod}/refcnt", "0\n")
            t.dir(f"module/{mod}/holders")
            t.dir(f"module/{mod}/drivers")
            for dep in MODULE_INIT.get(mod, {}).get("depends", []):
                t.link(f"module/{dep}/holders/{mod}", f"module/{mod}")
        t.file(".fakesys/modules", self.module_lines(), 0o644)
        t.dir("fakeproc/driver")
        if self.gpu == "nvidia":
            t.file(f".fakesys/nvidia/{VEGA}", self.nvidia_information(VEGA, 0), 0o644)
        t.file("devices/pci0000:00/uevent", "", 0o644)

        root = "devices/pci0000:00"
        self.pci("0000:00:03.1", root, "1022:1471", "0x060400", "pcieport", 17)
        self.pci(VEGA, root + "/0000:00:03.1", self.gpu_ids, "0x030000", o["vega_driver"], 17,
                 subsys=self.gpu_subsys, boot_vga=1)
        # A Vega 64 (lspci -vv): BAR 0 256M and BAR 2 2M, 64-bit prefetchable, resizable to 8G and
        # 256M; I/O BAR 4, BAR 5 512K. The kernel shows reset_method only with a method: "bus".
        self.resources(VEGA, [(0xe0000000, 256 << 20, 0x14220c), None, (0xf0000000, 2 << 20, 0x14220c), None,
                              (0xe000, 256, 0x40101), (0xfcd00000, 512 << 10, 0x40200)])
        t.file(f"{self.devs[VEGA]}/resource0_resize", "%016x\n" % 0x3f00, 0o644)
        t.file(f"{self.devs[VEGA]}/resource2_resize", "%016x\n" % 0x1fe, 0o644)
        t.file(f"{self.devs[VEGA]}/reset_method", "bus\n", 0o644)
        self.pci(VEGA_AUDIO, root + "/0000:00:03.1", self.audio_ids, "0x040300", o["audio_driver"], 17,
                 subsys=self.audio_subsys)
        if o["foreign"]:
            self.pci(FOREIGN, root + "/0000:00:03.1", "1022:145c", "0x0c0330", "xhci_hcd", 17)
        if o["secondary"]:
            self.pci("0000:00:01.1", root, "1022:1453", "0x060400", "pcieport", 18)
            ids, subsys, cls = self.secondary_ids
            self.pci(R5, root + "/0000:00:01.1", ids, cls, o["secondary_driver"], 18, subsys=subsys, boot_vga=0)
            self.pci(R5_AUDIO, root + "/0000:00:01.1", "1002:aab0", "0x040300", "vfio-pci", 18,
                     subsys="1028:aab0")
        if o["framebuffer"]:
            self.efifb(o["framebuffer"] is True or o["framebuffer"] == "bound", o["fb_parent"])
        # fbcon has a vtcon while a framebuffer exists: a DRM card (fbdev emulation) or a bound
        # boot framebuffer; the dummy console under OVMF always.
        fbs = len([c for c in os.listdir(t.path("class/drm")) if c.startswith("card")])
        fbs += o["framebuffer"] in (True, "bound")
        if o["firmware"] == "ovmf":
            self.vtcon(0, "(S) dummy device")
        if fbs:
            self.vtcon(1 if o["firmware"] == "ovmf" else 0, "(M) frame buffer device")
        t.file(".fakesys/drivers", "".join(f"{b} {d} {' '.join(ids)}\n" for b, d, _, ids in self.drivers), 0o644)
        for name in ("log", "fail", "delay", "hang", "blocked", "kill"):
            t.file(".fakesys/" + name, "", 0o644)
        t.file(".fakesys/options", "vfio_cdev\n" if o["vfio_cdev"] else "", 0o644)
        self.tuning()
        # The Vega's reset: no FLR, no PM reset (the kernel's quirk for ATI VGA), a bus reset; with
        # vendor-reset loaded, device_specific too (its probe succeeds through the module's hook).
        if o["vendor_reset"]:
            t.file("module/vendor_reset/initstate", "live\n")
            t.file("module/vendor_reset/refcnt", "0\n")
        t.file(".fakesys/reset_methods", f"{VEGA} {'device_specific ' if o['vendor_reset'] else ''}bus\n", 0o644)
        return t.root

    def loaded_modules(self):
        """The modules loaded at boot: those of the registered drivers, nvidia's others with it,
        vendor_reset when asked."""
        mods = [mod for _, _, mod, _ in self.drivers if mod not in BUILTIN_MODULES]
        if "nvidia" in mods:
            mods += ["nvidia_modeset", "nvidia_uvm", "nvidia_drm"]
        if self.opts["vendor_reset"]:
            mods.append("vendor_reset")
        return list(dict.fromkeys(mods))

    def module_lines(self):
        """.fakesys/modules (fakesys.c): per module on disk, "NAME depends DEP...", then "NAME driver
        BUS DRIVER ID..." (this tree's ids for its registered drivers), "NAME node DEVNAME MAJOR
        MINOR [DIR]", "NAME drm DRIVER"."""
        lines = []
        for mod in KERNEL_MODULES:
            info = MODULE_INIT.get(mod, {})
            lines.append(" ".join([mod, "depends"] + info.get("depends", [])))
            mine = [(b, d, ids) for b, d, m, ids in self.drivers if m == mod] or info.get("drivers", [])
            lines += [" ".join([mod, "driver", bus, drv] + ids) for bus, drv, ids in mine]
            lines += [f"{mod} node {n} {ma} {mi}" + (f" {d}" if d else "") for n, ma, mi, d in info.get("nodes", [])]
            if info.get("drm"):
                lines.append(f"{mod} drm {info['drm']}")
        return "".join(line + "\n" for line in lines)

    @staticmethod
    def nvidia_information(name, minor):
        """/proc/driver/nvidia/gpus/NAME/information as driver 570 prints it."""
        return (f"Model: \t\t NVIDIA GeForce RTX 3080\nIRQ:   \t\t 137\n"
                f"GPU UUID: \t GPU-5a1e3b0c-7f2d-4c8e-9b1a-2d6f0e4c3a71\nVideo BIOS: \t 94.02.42.00.a9\n"
                f"Bus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\n"
                f"Bus Location: \t {name}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n")

    GOVERNORS = {"acpi": ("conservative ondemand userspace powersave performance schedutil", "schedutil"),
                 "pstate": ("performance powersave", "powersave")}

    def tuning(self):
        """Huge page pools, the compaction trigger (fakesys.c says where it is mounted), CPUs."""
        t, o = self.t, self.opts
        for kb in (2048, 1048576) if o["gigantic"] else (2048,):
            nr, free, surplus, resv = (tuple(o["hugepages"].get(kb, ())) + (0, 0, 0, 0))[:4]
            d = f"kernel/mm/hugepages/hugepages-{kb}kB"
            t.file(f"{d}/nr_hugepages", f"{nr}\n", 0o644)
            t.file(f"{d}/nr_overcommit_hugepages", f"{surplus}\n", 0o644)
            for name, v in (("free_hugepages", free), ("surplus_hugepages", surplus), ("resv_hugepages", resv)):
                t.file(f"{d}/{name}", f"{v}\n")
        t.file("fakeproc/sys/vm/compact_memory", "", 0o200)
        t.file(".fakesys/memory", f"hugepages {o['hugepage_memory_kb']}\nfragmented {o['fragmented_kb']}\n", 0o644)
        for n in range(o["cpus"]):
            d = f"devices/system/cpu/cpu{n}"
            if n:       # cpu0 cannot go offline on x86: no online file
                t.file(f"{d}/online", "0\n" if n in o["offline_cpus"] else "1\n", 0o644)
            else:
                t.dir(d)
            if o["cpufreq"]:
                avail, gov = self.GOVERNORS[o["cpufreq"]]
                t.file(f"{d}/cpufreq/scaling_available_governors", avail + "\n")
                t.file(f"{d}/cpufreq/scaling_governor", gov + "\n", 0o644)

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
            if driver not in PARKING and c >> 16 == 3:
                self.drm(d)
            if driver == "snd_hda_intel":
                self.sound(d)
            if driver == "vfio-pci":
                self.vfio(d, group)
            if driver == "nvidia":
                t.file(f"fakeproc/driver/nvidia/gpus/{name}/information", self.nvidia_information(name, 0))

    def resources(self, name, bars):
        """The function's `resource`: a "start end flags" line per BAR (None: unused), then the ROM
        and the rest unused, as pci-sysfs.c's resource_show prints them."""
        lines = [(s, s + size - 1, f) if s is not None else (0, 0, 0)
                 for s, size, f in ((b if b else (None, 0, 0)) for b in bars)]
        lines += [(0, 0, 0)] * (13 - len(lines))
        self.t.file(f"{self.devs[name]}/resource", "".join("0x%016x 0x%016x 0x%016x\n" % l for l in lines))

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
        if parent:      # none for a virtual device
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
        self.class_dev(f"{card}/pcmC{n}D3p", card, "sound", f"snd/pcmC{n}D3p", 116, 32 * n + 3)

    def vfio(self, d, group):
        """The group's char device, made by the first of its functions vfio-pci binds, with the
        lowest free minor (not the group number); the function's vfio-dev/vfioN."""
        t = self.t
        if not os.path.lexists(t.path(f"class/vfio/{group}")):
            minor = len(os.listdir(t.path("class/vfio")))      # none is ever freed while building
            self.class_dev(f"devices/virtual/vfio/{group}", None, "vfio", f"vfio/{group}", VFIO_GROUP_MAJOR, minor)
        n = 0
        while os.path.lexists(t.path(f"class/vfio-dev/vfio{n}")):
            n += 1
        self.class_dev(f"{d}/vfio-dev/vfio{n}", d, "vfio-dev", f"vfio/devices/vfio{n}" if self.opts["vfio_cdev"] else None,
                       VFIO_CDEV_MAJOR, n)

    def vtcon(self, n, name):
        t, d = self.t, f"devices/virtual/vtconsole/vtcon{n}"
        t.uevent(d, {})
        t.file(f"{d}/name", name + "\n")
        t.file(f"{d}/bind", "1\n", 0o644)
        t.link(f"{d}/subsystem", "class/vtconsole")
        t.link(f"class/vtconsole/vtcon{n}", d)

    def efifb(self, bound, parent):
        # Linux >= 6.3 parents the boot framebuffer to the PCI device that scans it out; 6.1 has
        # it under devices/platform (the GPU is then the boot_vga one).
        t, name = self.t, "efi-framebuffer.0"
        d = f"{self.devs[VEGA]}/{name}" if parent == "gpu" else f"devices/platform/{name}"
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
          gpu="nvidia" if "--nvidia" in args else "vega",
          secondary="--no-secondary" not in args,
          audio_driver="snd_hda_intel" if "--audio-on-hda" in args else "vfio-pci",
          foreign="--foreign" in args)
