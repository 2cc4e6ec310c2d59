"""Tests of the emulated host itself (build/fakesys + origin tree + fakehost harness): if these
fail, no result of the qemu-hook integration tests means anything."""
import errno
import os
import subprocess
import time

import fakehost
from fakehost import variant

VEGA, VEGA_AUDIO, R5, R5_AUDIO = "0000:0d:00.0", "0000:0d:00.1", "0000:08:00.0", "0000:08:00.1"

# What qemu-hook asks libudev, asked through ctypes in a child with the hook's environment.
UDEV_PROBE = r"""
import ctypes, sys
u = ctypes.CDLL("libudev.so.1")
for f in ("udev_device_get_driver", "udev_device_get_property_value", "udev_device_get_sysname",
          "udev_device_get_devnode", "udev_list_entry_get_name"):
    getattr(u, f).restype = ctypes.c_char_p
for f in ("udev_new", "udev_device_new_from_syspath", "udev_enumerate_new", "udev_enumerate_get_list_entry",
          "udev_list_entry_get_next", "udev_device_get_parent_with_subsystem_devtype"):
    getattr(u, f).restype = ctypes.c_void_p
u.udev_device_new_from_syspath.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
u.udev_device_get_driver.argtypes = [ctypes.c_void_p]
u.udev_device_get_sysname.argtypes = [ctypes.c_void_p]
u.udev_device_get_devnode.argtypes = [ctypes.c_void_p]
u.udev_device_get_property_value.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
u.udev_device_get_parent_with_subsystem_devtype.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
u.udev_enumerate_new.argtypes = [ctypes.c_void_p]
for f in ("udev_enumerate_add_match_subsystem", "udev_enumerate_add_match_sysname", "udev_enumerate_add_match_parent"):
    getattr(u, f).argtypes = [ctypes.c_void_p, ctypes.c_char_p if "parent" not in f else ctypes.c_void_p]
u.udev_enumerate_scan_devices.argtypes = [ctypes.c_void_p]
u.udev_enumerate_get_list_entry.argtypes = [ctypes.c_void_p]
u.udev_list_entry_get_next.argtypes = [ctypes.c_void_p]
u.udev_list_entry_get_name.argtypes = [ctypes.c_void_p]
udev = u.udev_new()

def enum(subsystem, sysname=None, parent=None):
    e = u.udev_enumerate_new(udev)
    u.udev_enumerate_add_match_subsystem(e, subsystem.encode())
    if sysname: u.udev_enumerate_add_match_sysname(e, sysname.encode())
    if parent: u.udev_enumerate_add_match_parent(e, parent)
    u.udev_enumerate_scan_devices(e)
    out, l = [], u.udev_enumerate_get_list_entry(e)
    while l:
        out.append(u.udev_list_entry_get_name(l).decode()); l = u.udev_list_entry_get_next(l)
    return out

d = u.udev_device_new_from_syspath(udev, b"/sys/bus/pci/devices/0000:0d:00.0")
print("driver", (u.udev_device_get_driver(d) or b"").decode())
print("slot", u.udev_device_get_property_value(d, b"PCI_SLOT_NAME").decode())
print("driverprop", (u.udev_device_get_property_value(d, b"DRIVER") or b"").decode())
print("pci", " ".join(p.rsplit("/", 1)[1] for p in enum("pci", "0000:0d:00.*")))
print("vtcon", " ".join(p.rsplit("/", 1)[1] for p in enum("vtconsole")))
for p in enum("drm", parent=d):
    print("drm", (u.udev_device_get_devnode(u.udev_device_new_from_syspath(udev, p.encode())) or b"").decode())
for p in enum("platform", "efi-framebuffer.*"):
    fb = u.udev_device_new_from_syspath(udev, p.encode())
    parent = u.udev_device_get_parent_with_subsystem_devtype(fb, b"pci", None)
    print("fb", (u.udev_device_get_driver(fb) or b"").decode(), u.udev_device_get_sysname(parent).decode())
"""


def udev_facts():
    fakehost.check_safe()
    out = subprocess.run([fakehost.PY, "-c", UDEV_PROBE], capture_output=True, text=True,
                         env=fakehost.hook_env(), check=True).stdout
    facts = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        facts.setdefault(k, []).append(v)
    return facts


def move(host, name, old, new):
    """What qemu-hook does: override, unbind, drivers_probe."""
    assert host.write(f"bus/pci/devices/{name}/driver_override", new) == 0
    assert host.write(f"bus/pci/drivers/{old}/unbind", name) == 0
    assert host.write("bus/pci/drivers_probe", name) == 0


def test_marker_only_in_emulation(host):
    assert open("/sys/.fakesys/marker").read().startswith("fakesys")
    assert not os.path.exists(os.path.join(host.backing, ".fakesys", "marker"))
    assert "marker" in os.listdir("/sys/.fakesys")


def test_libudev_sees_the_tree(host):
    f = udev_facts()
    assert f["driver"] == ["amdgpu"], f
    assert f["driverprop"] == ["amdgpu"], f
    assert f["slot"] == [VEGA], f
    assert f["pci"] == [f"{VEGA} {VEGA_AUDIO}"], f
    assert f["vtcon"] == ["vtcon0 vtcon1"], f
    assert sorted(f["drm"]) == ["/dev/dri/card0", "/dev/dri/renderD128"], f
    assert f["fb"] == [f"efi-framebuffer {VEGA}"], f


def test_libudev_follows_a_rebind(host):
    move(host, VEGA, "amdgpu", "vfio-pci")
    host.wait(lambda: host.driver(VEGA) == "vfio-pci")
    f = udev_facts()
    assert f["driver"] == ["vfio-pci"] and f["driverprop"] == ["vfio-pci"] and "drm" not in f, f


def test_vega_to_vfio_and_back(host):
    before = host.snapshot()
    assert host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA) == ["card0"]
    move(host, VEGA, "amdgpu", "vfio-pci")
    assert host.driver(VEGA) == "vfio-pci"
    assert host.override(VEGA) == "vfio-pci"
    assert host.drm_cards(VEGA) == [] and "card0" not in os.listdir("/sys/class/drm")
    assert os.path.islink(f"/sys/bus/pci/drivers/vfio-pci/{VEGA}")
    assert not os.path.lexists(f"/sys/bus/pci/drivers/amdgpu/{VEGA}")
    # hand back: clear the override, unbind, probe: the id tables pick amdgpu again
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "\n") == 0
    assert open(f"/sys/bus/pci/devices/{VEGA}/driver_override").read() == "(null)\n"
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0
    assert host.write("bus/pci/drivers_probe", VEGA) == 0
    assert host.driver(VEGA) == "amdgpu"
    host.wait(lambda: host.drm_cards(VEGA) == ["card0"])
    assert host.snapshot() == before
    assert [w.result for w in host.log()] == ["0"] * 6
    assert not any(w.path.endswith("new_id") for w in host.log())


def test_bind_and_unbind_refusals(host):
    assert host.write("bus/pci/drivers/radeon/bind", VEGA) == errno.ENODEV      # ids do not match
    assert host.write("bus/pci/drivers/amdgpu/bind", VEGA) == errno.EBUSY       # already bound
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == errno.ENODEV  # not its driver
    assert host.write("bus/pci/drivers/amdgpu/unbind", "0000:99:00.0") == errno.ENODEV
    assert host.write("bus/pci/drivers/vfio-pci/bind", "0000:99:00.0") == errno.ENODEV
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == 0
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "vfio-pci") == 0
    assert host.write("bus/pci/drivers/amdgpu/bind", VEGA) == errno.ENODEV      # override decides
    assert host.write("bus/pci/drivers/vfio-pci/bind", VEGA) == 0
    assert host.driver(VEGA) == "vfio-pci"
    assert host.write(f"bus/pci/devices/{VEGA}/vendor", "0x1234") == errno.EACCES  # read-only
    assert [w.result for w in host.log()][:5] == ["ENODEV", "EBUSY", "ENODEV", "ENODEV", "ENODEV"]


def test_drivers_probe_rules(host):
    # no override: the first registered driver whose ids match (vfio-pci's ids= claim the R5)
    assert host.write("bus/pci/drivers/vfio-pci/unbind", R5) == 0
    assert host.write("bus/pci/drivers_probe", R5) == 0
    assert host.driver(R5) == "vfio-pci"
    # already bound: a no-op that succeeds
    assert host.write("bus/pci/drivers_probe", R5) == 0 and host.driver(R5) == "vfio-pci"
    # an override naming a driver that is not registered: stays unbound, still success
    assert host.write(f"bus/pci/devices/{R5}/driver_override", "nosuch") == 0
    assert host.write("bus/pci/drivers/vfio-pci/unbind", R5) == 0
    assert host.write("bus/pci/drivers_probe", R5) == 0
    assert host.driver(R5) is None and host.uevent(R5).get("DRIVER") is None
    assert host.write("bus/pci/drivers_probe", "0000:99:00.0") == errno.ENODEV


def test_new_id_is_only_logged(host):
    assert host.write("bus/pci/drivers/vfio-pci/new_id", "1002 687f") == 0
    assert host.driver(VEGA) == "amdgpu"
    assert host.log()[-1] == fakehost.Write("bus/pci/drivers/vfio-pci/new_id", "1002 687f", "0")
    assert host.writes() == 1
    host.clear_log()
    assert host.log() == [] and host.writes() == 0


def test_injected_failure_changes_nothing(host):
    before = host.snapshot()
    host.fail(f"/sys/bus/pci/devices/{VEGA}/driver_override", "EIO", 1)   # a symlinked path
    host.fail("bus/pci/drivers/amdgpu/unbind", "EBUSY", 2)
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "vfio-pci") == errno.EIO
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == errno.EBUSY
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == errno.EBUSY
    assert host.snapshot() == before
    assert open("/sys/.fakesys/fail").read() == ""          # counts used up
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == 0
    assert host.driver(VEGA) is None
    assert [w.result for w in host.log()] == ["EIO", "EBUSY", "EBUSY", "0"]
    # without a count it fails every time until the file is rewritten
    host.fail("bus/pci/drivers_probe", "ENOMEM")
    assert host.write("bus/pci/drivers_probe", VEGA) == errno.ENOMEM
    assert host.write("bus/pci/drivers_probe", VEGA) == errno.ENOMEM
    host.clear_fail()
    assert host.write("bus/pci/drivers_probe", VEGA) == 0 and host.driver(VEGA) == "amdgpu"


def test_delays_are_honoured(host):
    host.delay(probe=200, drm=300, unbind=150)
    t0 = time.monotonic()
    assert host.write("bus/pci/drivers/vfio-pci/unbind", R5) == 0
    assert time.monotonic() - t0 >= 0.15                    # the unbind write itself is slow
    assert host.write(f"bus/pci/devices/{R5}/driver_override", "radeon") == 0
    t0 = time.monotonic()
    assert host.write("bus/pci/drivers_probe", R5) == 0
    assert time.monotonic() - t0 < 0.15                     # async probe: returns at once (probe is 0.2 s)
    assert host.driver(R5) is None
    assert host.write("bus/pci/drivers/radeon/bind", R5) == errno.EBUSY   # probe in flight
    host.wait(lambda: host.driver(R5) == "radeon")
    assert 0.18 <= time.monotonic() - t0 < 1.0
    assert host.drm_cards(R5) == []
    host.wait(lambda: host.drm_cards(R5) != [])
    assert 0.45 <= time.monotonic() - t0 < 1.5


def test_drm_card_after_binding_radeon(host):
    move(host, R5, "vfio-pci", "radeon")
    assert host.driver(R5) == "radeon"
    assert host.drm_cards(R5) == ["card1"]                  # card0 is the Vega's
    card = f"/sys/bus/pci/devices/{R5}/drm/card1"
    assert "DEVNAME=dri/card1" in open(f"{card}/uevent").read()
    assert open(f"{card}/dev").read() == "226:1\n"
    assert os.path.realpath(f"{card}/device") == os.path.realpath(f"/sys/bus/pci/devices/{R5}")
    assert os.path.realpath(f"{card}/subsystem") == "/sys/class/drm"
    assert os.path.realpath("/sys/class/drm/card1") == os.path.realpath(card)
    assert "/dev/dri/card1" in udev_facts_for(R5)
    assert host.write("bus/pci/drivers/radeon/unbind", R5) == 0
    assert host.drm_cards(R5) == [] and "card1" not in os.listdir("/sys/class/drm")


def udev_facts_for(name):
    probe = UDEV_PROBE.replace("0000:0d:00.0", name)
    out = subprocess.run([fakehost.PY, "-c", probe], capture_output=True, text=True, env=fakehost.hook_env(),
                         check=True).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("drm ")]


def test_vtconsole_bind_with_ebusy(host):
    assert host.vtcon_bound(0) and host.vtcon_bound(1)
    host.fail("/sys/class/vtconsole/vtcon1/bind", "EBUSY", 2)
    assert host.write("class/vtconsole/vtcon1/bind", "0") == errno.EBUSY
    assert host.write("class/vtconsole/vtcon1/bind", "0") == errno.EBUSY
    assert host.vtcon_bound(1)
    assert host.write("class/vtconsole/vtcon1/bind", "0\n") == 0
    assert not host.vtcon_bound(1) and open("/sys/class/vtconsole/vtcon1/bind").read() == "0\n"
    assert host.write("class/vtconsole/vtcon1/bind", "x") == errno.EINVAL
    assert host.write("class/vtconsole/vtcon1/bind", "1") == 0 and host.vtcon_bound(1)


def test_efi_framebuffer(host):
    assert host.fb_driver() == "efi-framebuffer"
    assert host.write("bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0") == 0
    assert host.fb_driver() is None
    assert host.write("bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0") == errno.ENODEV
    assert host.write("bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0") == 0
    assert host.fb_driver() == "efi-framebuffer"
    assert "DRIVER=efi-framebuffer" in open("/sys/bus/platform/devices/efi-framebuffer.0/uevent").read()


def test_hold_a_drm_node(host):
    with host.hold("/dev/dri/card0") as pid:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert "/dev/dri/card0" in fds
    assert not os.path.exists(f"/proc/{pid}/fd")


def test_fake_modules_for_libkmod():
    out = subprocess.run(["modprobe", "-R", "pci:v00001002d00006613sv00001028sd00002120bc03sc00i00"],
                         capture_output=True, text=True).stdout.split()
    assert out == ["radeon"], out
    out = subprocess.run(["modprobe", "-R", "pci:v00001002d0000687Fsv00001002sd00000B36bc03sc00i00"],
                         capture_output=True, text=True).stdout.split()
    assert out == ["amdgpu"], out
    assert subprocess.run(["modinfo", "vfio-pci"], capture_output=True).returncode == 0


@variant(vega_driver="vfio-pci", secondary_driver="radeon", framebuffer="unbound")
def test_variant_vega_on_vfio(host):
    assert host.driver(VEGA) == "vfio-pci" and host.drm_cards(VEGA) == []
    assert host.driver(R5) == "radeon" and host.drm_cards(R5) == ["card0"]
    assert host.fb_driver() is None


@variant(secondary=False, audio_driver="snd_hda_intel", foreign=True)
def test_variant_no_secondary_hda_foreign(host):
    assert R5 not in host.pci_devices()
    assert host.driver(VEGA_AUDIO) == "snd_hda_intel" and host.sound_cards(VEGA_AUDIO) == ["card0"]
    assert sorted(os.listdir("/sys/kernel/iommu_groups/17/devices")) == \
        ["0000:00:03.1", VEGA, VEGA_AUDIO, "0000:0e:00.0"]
    assert host.driver("0000:0e:00.0") == "xhci_hcd"
    assert os.path.exists("/dev/snd/controlC0")
    # sound cards go with the driver and come back with it
    move(host, VEGA_AUDIO, "snd_hda_intel", "vfio-pci")
    assert host.sound_cards(VEGA_AUDIO) == [] and os.listdir("/sys/class/sound") == []
    # "\n" clears (a zero-length write(2) never reaches a sysfs store, here as in the kernel)
    assert host.write(f"bus/pci/devices/{VEGA_AUDIO}/driver_override", "\n") == 0
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA_AUDIO) == 0
    assert host.write("bus/pci/drivers/snd_hda_intel/bind", VEGA_AUDIO) == 0
    assert host.sound_cards(VEGA_AUDIO) == ["card0"]


def test_check_safe_refuses_the_real_sysfs():
    code = "import sys; sys.path.insert(0, 'tests/lib'); import fakehost; fakehost.run_hook(['/bin/true'])"
    # a process that did not enter_namespace() refuses even when the marker is visible
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEHOST")}
    with fakehost.Host():
        p = subprocess.run([fakehost.PY, "-c", code], env=env, capture_output=True)
    assert p.returncode == 99, p
    # and inside the namespace, once the emulation is gone
    h = fakehost.Host()
    h.stop()
    p = subprocess.run([fakehost.PY, "-c", code], capture_output=True)
    assert p.returncode == 99, p


def test_run_hook_environment(host):
    rc, out, err, secs = fakehost.run_hook(["/usr/bin/env"], "<domain/>")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert rc == 0 and set(env) == {"LC_ALL", "PATH", "HOME", "USER", "LOGNAME", "SYSTEMD_DEVICE_VERIFY_SYSFS"}
    xml = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])
    assert "bus='0x0d' slot='0x00' function='0x1'" in xml and "<name>win10</name>" in xml
    rc, out, _, _ = fakehost.run_hook(["/bin/cat"], xml)
    assert out == xml
