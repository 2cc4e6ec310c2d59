"""[gpu] reset_method and [vm NAME] bar_sizes on the real kernel. QEMU's bochs VGA (03.0) has no
reset method and no resizable BAR: the kernel shows no reset_method and no resource*_resize for
it, so what the hook must do there is refuse before the first step. And the kernel facts that
tests/host/fakesys.c emulates, read from this kernel: reset_method's format, a method a device
lacks refused with EINVAL and nothing changed."""
import glob
import os

from lib import guest as g
from lib.registry import scenario

from scenarios.test_real import cleanup, native, traced_hook

DEVICES = "/sys/bus/pci/devices"
KERNEL_METHODS = ["device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus"]


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "(%s)" % e.strerror


def write(path, value):
    """One write(2), as the hook makes it: 0 or the errno."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


@scenario(timeout=300)
def pci_keys_on_the_real_kernel(t):
    """Reset methods and resizable BARs as this kernel shows them; [gpu] reset_method and [vm]
    bar_sizes on a GPU without either are refused before the first step, nothing written."""
    files = {}
    for dev in sorted(os.listdir(DEVICES)):
        for name in ["reset_method"] + ["resource%d_resize" % i for i in range(6)]:
            path = "%s/%s/%s" % (DEVICES, dev, name)
            if os.path.exists(path):
                files["%s/%s" % (dev, name)] = read(path)
    t.section("reset_method and resource*_resize of every PCI device", "".join(
        "%s: %r\n" % kv for kv in files.items()))
    t.data["files"] = files
    if not any(k.endswith("/reset_method") for k in files):
        # QEMU's q35 devices here have no FLR, PM or bus reset: the EINVAL fact below is the
        # emulation's (fakesys), not checked on this kernel.
        t.section("no reset_method in this guest", "no PCI device of the guest has a reset method")
    t.check(not os.path.exists("%s/%s/reset_method" % (DEVICES, g.GPU)),
            "the bochs VGA shows no reset_method (the kernel found no reset method)")
    t.check(not glob.glob("%s/%s/resource*_resize" % (DEVICES, g.GPU)), "the bochs VGA has no resizable BAR")

    # The kernel's facts the emulation follows: a space-separated list ending in a newline; a
    # method the device lacks is EINVAL and changes nothing.
    for key, text in files.items():
        if not key.endswith("/reset_method") or not text.strip():
            continue
        path = "%s/%s" % (DEVICES, key)
        methods = text.split()
        t.check(text.endswith("\n") and " ".join(methods) + "\n" == text and
                all(m in KERNEL_METHODS for m in methods), "%s: %r is a space-separated list" % (key, text))
        lacking = next((m for m in KERNEL_METHODS if m not in methods and m != "device_specific"), None)
        if lacking:
            err = write(path, lacking)
            t.check(err == 22 and read(path) == text, "%s: writing %s (which it lacks): EINVAL (%s), unchanged (%r)"
                    % (key, lacking, err, read(path)))
        t.data.setdefault("einval_checked", []).append(key)

    xml = g.domain_xml()
    try:
        for extra, message in (("", None),
                               ("[vm gaming]\nbar_sizes = 0:32M\n",
                                "[vm gaming] bar_sizes: BAR 0 of %s is not resizable (no resource0_resize)" % g.GPU)):
            conf = native(extra=extra).replace("[secondary]", "reset_method = flr\n[secondary]") if not extra \
                else native(extra=extra)
            message = message or "%s has no reset_method (the kernel found no reset method for it)" % g.GPU
            g.write_kvm_conf(conf)
            r, writes = traced_hook(g.DOMAIN, "prepare", "begin", xml)
            t.section("prepare begin with %s" % (extra.strip() or "reset_method = flr"), r.describe())
            t.check(r.rc == 1 and message in r.err and "nothing was changed" in r.err and not writes,
                    "refused before the first step: exit 1, %r, no sysfs write (exit %s, writes %s)"
                    % (message, r.rc, writes))
            # The VMs' group is not what this is about: a URI that fails before any RPC, so the
            # ASan build (whose dlopened libvirt crashes in ASan's xdr interceptors) runs it too.
            c = g.run(["/usr/sbin/qemu-hook", "--check"], timeout=120,
                      env=dict(g.LIBVIRT_HOOK_ENV, LIBVIRT_DEFAULT_URI="test:///nonexistent.xml"))
            t.section("--check with %s" % (extra.strip() or "reset_method = flr"), c.out)
            t.check(c.rc == 1 and message in c.out, "--check: a FAIL naming it")
        t.expect_state(t.boot, g.snapshot(), "after the refusals")
    finally:
        cleanup()
