"""Tests of the emulated host itself (build/fakesys + origin tree + fakehost harness): if these
fail, no result of the qemu-hook integration tests means anything."""
import errno
import os
import signal
import stat
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
    # what a 6.1 kernel leaves after boot: amdgpu's probe removed the boot framebuffer
    assert "fb" not in f, f
    assert not host.fb_exists() and os.listdir("/sys/bus/platform/devices") == []
    assert host.fbcon() == "vtcon1" and host.fbcon_bound()


@variant(framebuffer="bound")
def test_libudev_sees_the_boot_framebuffer_in_its_variant(host):
    f = udev_facts()
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


def test_vtconsole_bind_never_fails(host):
    """vt.c's store_bind returns success whatever it did: read the file back."""
    assert host.vtcon_bound(0) and host.vtcon_bound(1)
    # a bind the kernel cannot do (the old emulation's EBUSY): success, nothing changes
    host.fail("/sys/class/vtconsole/vtcon1/bind", "EBUSY", 2)
    assert host.write("class/vtconsole/vtcon1/bind", "0") == 0
    assert host.write("class/vtconsole/vtcon1/bind", "0") == 0
    assert host.vtcon_bound(1)
    assert host.write("class/vtconsole/vtcon1/bind", "0\n") == 0
    assert not host.vtcon_bound(1) and open("/sys/class/vtconsole/vtcon1/bind").read() == "0\n"
    assert host.write("class/vtconsole/vtcon1/bind", "1") == 0 and host.vtcon_bound(1)
    assert host.write("class/vtconsole/vtcon1/bind", "x") == 0 and not host.vtcon_bound(1)  # simple_strtoul: 0
    assert host.write("class/vtconsole/vtcon1/bind", "1") == 0 and host.vtcon_bound(1)
    # the system console (dummy, "(S)") ignores every write
    assert host.write("class/vtconsole/vtcon0/bind", "0") == 0 and host.vtcon_bound(0)
    assert all(w.result == "0" for w in host.log()), host.log()


def vtcons():
    return sorted(os.listdir("/sys/class/vtconsole"))


def test_fbcon_goes_with_the_last_framebuffer_and_comes_back_bound(host):
    assert vtcons() == ["vtcon0", "vtcon1"] and host.fbcon() == "vtcon1"
    assert host.write("class/vtconsole/vtcon1/bind", "0") == 0
    move(host, VEGA, "amdgpu", "vfio-pci")          # amdgpu's framebuffer was the last one
    assert vtcons() == ["vtcon0"] and host.fbcon() is None
    assert not os.path.lexists("/sys/devices/virtual/vtconsole/vtcon1")
    assert udev_facts()["vtcon"] == ["vtcon0"]
    assert open("/sys/class/vtconsole/vtcon0/name").read() == "(S) dummy device\n"
    # the next DRM driver's framebuffer: fbcon takes the consoles over again, bound, although
    # 0 was the last thing written to its bind; it comes with the card, not with the probe
    host.delay(drm=200)
    move(host, R5, "vfio-pci", "radeon")
    host.wait(lambda: host.driver(R5) == "radeon")
    assert host.fbcon() is None
    host.wait(lambda: host.drm_cards(R5) != [])
    assert host.fbcon() == "vtcon1" and host.fbcon_bound()
    assert os.path.realpath("/sys/class/vtconsole/vtcon1/subsystem") == "/sys/class/vtconsole"
    # a second framebuffer does not touch it; the last one going removes it, bound or not
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "amdgpu") == 0
    assert host.write("bus/pci/drivers_probe", VEGA) == 0
    host.wait(lambda: host.drm_cards(VEGA) != [])
    assert vtcons() == ["vtcon0", "vtcon1"] and host.fbcon_bound()
    assert host.write("bus/pci/drivers/radeon/unbind", R5) == 0
    assert host.fbcon() == "vtcon1"
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == 0
    assert vtcons() == ["vtcon0"]


@variant(vega_driver="vfio-pci")
def test_no_fbcon_vtcon_without_any_framebuffer(host):
    assert vtcons() == ["vtcon0"] and host.fbcon() is None


@variant(firmware="seabios")
def test_fbcon_is_vtcon0_under_seabios(host):
    assert vtcons() == ["vtcon0"] and host.fbcon() == "vtcon0" and host.fbcon_bound()
    assert not host.fb_exists()
    move(host, VEGA, "amdgpu", "vfio-pci")
    assert vtcons() == []
    move(host, R5, "vfio-pci", "radeon")
    host.wait(lambda: host.fbcon() == "vtcon0")
    assert host.fbcon_bound()


@variant(vega_driver=None, framebuffer="bound")
def test_efi_framebuffer_is_a_framebuffer_until_a_drm_probe_removes_it(host):
    """The Vega left without a driver at boot: efifb drives the screen and fbcon sits on it."""
    assert host.fb_driver() == "efi-framebuffer" and host.fbcon() == "vtcon1"
    assert host.write("bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0") == 0
    assert host.fb_driver() is None and host.fb_exists()
    assert host.write("bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0") == errno.ENODEV
    assert host.fbcon() is None                     # it was the only framebuffer
    assert host.write("bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0") == 0
    assert host.fb_driver() == "efi-framebuffer"
    assert "DRIVER=efi-framebuffer" in open("/sys/bus/platform/devices/efi-framebuffer.0/uevent").read()
    assert host.fbcon() == "vtcon1" and host.fbcon_bound()
    # amdgpu's probe takes the aperture over: the platform device is gone for good
    assert host.write("bus/pci/drivers/amdgpu/bind", VEGA) == 0
    host.wait(lambda: host.drm_cards(VEGA) == ["card0"])
    assert not host.fb_exists() and host.fbcon_bound()


def assert_no_boot_fb(host):
    assert not host.fb_exists()
    assert not os.path.lexists("/sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0")
    assert not any(n.startswith("efi-framebuffer") for _, dirs, _ in os.walk("/sys/devices") for n in dirs)
    assert host.write("bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0") == errno.ENODEV
    assert "fb" not in udev_facts()


@variant(framebuffer="bound")
def test_vfio_pci_probe_removes_the_boot_framebuffer(host):
    assert host.fb_driver() == "efi-framebuffer"
    move(host, R5, "vfio-pci", "radeon")            # another GPU's probe leaves it alone
    host.wait(lambda: host.drm_cards(R5) != [])
    assert host.fb_driver() == "efi-framebuffer"
    move(host, VEGA, "amdgpu", "vfio-pci")
    assert_no_boot_fb(host)
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "\n") == 0
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0
    assert host.write("bus/pci/drivers_probe", VEGA) == 0
    host.wait(lambda: host.drm_cards(VEGA) != [])
    assert_no_boot_fb(host)                         # it never comes back


@variant(framebuffer="unbound", fb_parent="platform")
def test_boot_framebuffer_under_devices_platform_goes_with_the_boot_vga_probe(host):
    """Linux 6.1 puts it under devices/platform: the GPU is the boot_vga one."""
    assert host.fb_exists() and host.fb_driver() is None
    assert os.path.realpath("/sys/bus/platform/devices/efi-framebuffer.0") == \
        "/sys/devices/platform/efi-framebuffer.0"
    move(host, R5, "vfio-pci", "radeon")            # boot_vga 0
    host.wait(lambda: host.drm_cards(R5) != [])
    assert host.fb_exists()
    assert host.write("bus/pci/drivers/amdgpu/unbind", VEGA) == 0
    assert host.write("bus/pci/drivers/amdgpu/bind", VEGA) == 0
    host.wait(lambda: not host.fb_exists())
    assert_no_boot_fb(host)


def test_hold_a_drm_node(host):
    st = os.stat("/dev/dri/card0")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(226, 0)
    assert os.stat("/dev/dri/renderD128").st_rdev == os.makedev(226, 128)
    with host.hold("/dev/dri/card0") as pid:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert "/dev/dri/card0" in fds
        assert any(os.stat(f"/proc/{pid}/fd/{fd}").st_rdev == os.makedev(226, 0) for fd in os.listdir(f"/proc/{pid}/fd"))
    assert not os.path.exists(f"/proc/{pid}/fd")


def test_drm_minor_stays_taken_while_a_process_holds_the_old_node(host):
    assert host.card_by_path(VEGA) == "/dev/dri/card0"
    assert os.path.realpath(f"/dev/dri/by-path/pci-{VEGA}-render") == "/dev/dri/renderD128"
    with host.hold("/dev/dri/card0") as pid:
        t0 = time.monotonic()
        move(host, VEGA, "amdgpu", "vfio-pci")      # a DRM holder does not block the unbind
        assert time.monotonic() - t0 < 0.5 and host.driver(VEGA) == "vfio-pci"
        assert not os.path.lexists("/dev/dri/card0") and host.card_by_path(VEGA) is None
        assert "/dev/dri/card0 (deleted)" in [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        move(host, R5, "vfio-pci", "radeon")
        host.wait(lambda: host.drm_cards(R5) != [])
        assert host.drm_cards(R5) == ["card1"] and host.card_by_path(R5) == "/dev/dri/card1"
        assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "amdgpu") == 0
        assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0
        assert host.write("bus/pci/drivers_probe", VEGA) == 0
        host.wait(lambda: host.drm_cards(VEGA) != [])
        assert host.drm_cards(VEGA) == ["card2"], host.drm_cards(VEGA)     # card0 is still taken
        assert host.card_by_path(VEGA) == "/dev/dri/card2"
        assert os.stat("/dev/dri/card2").st_rdev == os.makedev(226, 2)
        assert os.path.realpath(f"/dev/dri/by-path/pci-{VEGA}-render") == "/dev/dri/renderD130"
    # the last close frees it
    assert host.write("bus/pci/drivers/radeon/unbind", R5) == 0
    assert host.card_by_path(R5) is None and not os.path.lexists("/dev/dri/card1")
    assert host.write("bus/pci/drivers/radeon/bind", R5) == 0
    host.wait(lambda: host.drm_cards(R5) != [])
    assert host.drm_cards(R5) == ["card0"] and host.card_by_path(R5) == "/dev/dri/card0"


WRITER = """import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    os.write(fd, sys.argv[2].encode())
    print(0, flush=True)
except OSError as e:
    print(e.errno, flush=True)
"""


def spawn_write(rel, value):
    """A process writing VALUE to /sys/REL; its stdout says the errno (0) when write(2) returned."""
    fakehost.check_safe()
    return subprocess.Popen([fakehost.PY, "-c", WRITER, f"/sys/{rel}", value], stdout=subprocess.PIPE, text=True)


@variant(audio_driver="snd_hda_intel")
def test_sound_holder_blocks_the_unbind_until_it_exits(host):
    for node, minor in (("controlC0", 0), ("pcmC0D3p", 3)):
        st = os.stat(f"/dev/snd/{node}")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(116, minor), node
    assert os.path.realpath(f"/dev/snd/by-path/pci-{VEGA_AUDIO}") == "/dev/snd/controlC0"
    with host.hold("/dev/snd/pcmC0D3p") as pid:
        w = spawn_write("bus/pci/drivers/snd_hda_intel/unbind", VEGA_AUDIO)
        host.wait(lambda: host.blocked() != [])
        assert host.blocked() == [("bus/pci/drivers/snd_hda_intel/unbind", VEGA_AUDIO, w.pid)]
        time.sleep(0.3)
        assert w.poll() is None and host.driver(VEGA_AUDIO) == "snd_hda_intel"
        # the rest of the emulation goes on meanwhile (no lock held while blocked)
        t0 = time.monotonic()
        move(host, VEGA, "amdgpu", "vfio-pci")
        assert host.driver(VEGA) == "vfio-pci" and time.monotonic() - t0 < 0.5
        assert pid
    # the holder exited: the unbind completes, the writer returns success
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    assert host.driver(VEGA_AUDIO) is None and host.sound_cards(VEGA_AUDIO) == []
    assert host.blocked() == [] and not os.path.lexists("/dev/snd/controlC0")
    assert not os.path.lexists(f"/dev/snd/by-path/pci-{VEGA_AUDIO}")
    assert host.log()[-1] == fakehost.Write("bus/pci/drivers/snd_hda_intel/unbind", VEGA_AUDIO, "0")
    # nobody holding: no wait
    assert host.write("bus/pci/drivers/snd_hda_intel/bind", VEGA_AUDIO) == 0
    assert os.stat("/dev/snd/controlC0").st_rdev == os.makedev(116, 0)
    t0 = time.monotonic()
    assert host.write("bus/pci/drivers/snd_hda_intel/unbind", VEGA_AUDIO) == 0
    assert time.monotonic() - t0 < 0.2


def test_hang_blocks_a_write_until_released_and_sigkill_ends_the_writer(host):
    path = f"bus/pci/devices/{VEGA}/driver_override"
    canon = os.path.realpath(f"/sys/{path}")[len("/sys/"):]     # as the log names it
    host.hang(f"/sys/{path}", "vfio-pci")
    assert host.write(path, "amdgpu") == 0              # another value: not hung
    w = spawn_write(path, "vfio-pci")
    host.wait(lambda: host.blocked() != [])
    assert host.blocked() == [(canon, "vfio-pci", w.pid)]
    time.sleep(0.2)
    assert w.poll() is None and host.override(VEGA) == "amdgpu"
    assert host.driver(R5) == "vfio-pci"                # reads are served meanwhile
    t0 = time.monotonic()
    w.send_signal(signal.SIGKILL)
    assert w.wait(timeout=2) == -signal.SIGKILL and time.monotonic() - t0 < 1
    w.stdout.close()
    assert host.override(VEGA) == "amdgpu" and len(host.blocked()) == 1
    host.unhang()                                       # released: the write completes now
    host.wait(lambda: host.override(VEGA) == "vfio-pci")
    host.wait(lambda: host.blocked() == [])
    assert host.log()[-1] == fakehost.Write(canon, "vfio-pci", "0")
    # a writer that is not killed returns once released
    host.hang("bus/pci/drivers_probe")
    w = spawn_write("bus/pci/drivers_probe", VEGA)
    host.wait(lambda: host.blocked() != [])
    host.unhang()
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    w.stdout.close()


def test_modules_register_drivers_of_other_names(host):
    assert host.module_drivers("vfio_pci") == ["pci:vfio-pci"]
    assert os.path.realpath("/sys/module/vfio_pci/drivers/pci:vfio-pci") == "/sys/bus/pci/drivers/vfio-pci"
    assert os.path.realpath("/sys/bus/pci/drivers/vfio-pci/module") == "/sys/module/vfio_pci"
    assert open("/sys/module/vfio_pci/initstate").read() == "live\n"
    assert host.module_drivers("efifb") == ["platform:efi-framebuffer"]
    assert not os.path.exists("/sys/module/efifb/initstate")          # builtin
    for bus in ("pci", "platform"):
        for drv in os.listdir(f"/sys/bus/{bus}/drivers"):
            mod = os.path.basename(os.readlink(f"/sys/bus/{bus}/drivers/{drv}/module"))
            assert f"{bus}:{drv}" in host.module_drivers(mod), (bus, drv, mod)
    assert host.module_drivers("bochs") == []                       # on disk, not loaded


@variant(secondary_gpu="bochs")
def test_variant_bochs_secondary_module_is_not_its_driver(host):
    """bochs registers bochs-drm: the module name libkmod gives is not what driver_override
    takes."""
    modalias = host.uevent(R5)["MODALIAS"]
    out = subprocess.run(["modprobe", "-R", modalias], capture_output=True, text=True).stdout.split()
    assert out == ["bochs"], (modalias, out)
    assert host.module_drivers("bochs") == ["pci:bochs-drm"] and host.driver(R5) == "vfio-pci"
    assert not os.path.exists("/sys/bus/pci/drivers/bochs")
    move(host, R5, "vfio-pci", "bochs")                 # the module's name: nothing binds
    time.sleep(0.05)
    assert host.driver(R5) is None and host.drm_cards(R5) == []
    assert host.write("bus/pci/drivers/bochs-drm/bind", R5) == errno.ENODEV    # override decides
    assert host.write(f"bus/pci/devices/{R5}/driver_override", "bochs-drm") == 0
    assert host.write("bus/pci/drivers_probe", R5) == 0
    assert host.driver(R5) == "bochs-drm"
    host.wait(lambda: host.drm_cards(R5) != [])
    assert host.card_by_path(R5) == "/dev/dri/card1"


def test_fake_modules_for_libkmod():
    out = subprocess.run(["modprobe", "-R", "pci:v00001002d00006613sv00001028sd00002120bc03sc00i00"],
                         capture_output=True, text=True).stdout.split()
    assert out == ["radeon"], out
    out = subprocess.run(["modprobe", "-R", "pci:v00001002d0000687Fsv00001002sd00000B36bc03sc00i00"],
                         capture_output=True, text=True).stdout.split()
    assert out == ["amdgpu"], out
    assert subprocess.run(["modinfo", "vfio-pci"], capture_output=True).returncode == 0
    out = subprocess.run(["modprobe", "-R", "pci:v00001234d00001111sv00001AF4sd00001100bc03sc80i00"],
                         capture_output=True, text=True).stdout.split()
    assert out == ["bochs"], out


@variant(vega_driver="vfio-pci", secondary_driver="radeon")
def test_variant_vega_on_vfio(host):
    assert host.driver(VEGA) == "vfio-pci" and host.drm_cards(VEGA) == []
    assert host.driver(R5) == "radeon" and host.drm_cards(R5) == ["card0"]
    assert not host.fb_exists() and host.fbcon() == "vtcon1"


@variant(secondary=False, audio_driver="snd_hda_intel", foreign=True)
def test_variant_no_secondary_hda_foreign(host):
    assert R5 not in host.pci_devices()
    assert host.driver(VEGA_AUDIO) == "snd_hda_intel" and host.sound_cards(VEGA_AUDIO) == ["card0"]
    assert sorted(os.listdir("/sys/kernel/iommu_groups/17/devices")) == \
        ["0000:00:03.1", VEGA, VEGA_AUDIO, "0000:0e:00.0"]
    assert host.driver("0000:0e:00.0") == "xhci_hcd"
    assert stat.S_ISCHR(os.stat("/dev/snd/controlC0").st_mode)
    assert host.module_drivers("xhci_pci") == ["pci:xhci_hcd"]
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


READER = """import os, sys
try:
    print(open(sys.argv[1]).read().strip(), flush=True)
except OSError as e:
    print(e.errno, flush=True)
"""


def test_blocked_unbind_holds_the_device_lock(host):
    """device_lock(): a blocked unbind of the Vega (here in D state: SIGKILL does not end it)
    makes its drivers_probe, its driver_override writes and reads wait until it completes;
    another device and the driver link are served meanwhile."""
    host.hang("bus/pci/drivers/amdgpu/unbind", VEGA, killable=False)
    u = spawn_write("bus/pci/drivers/amdgpu/unbind", VEGA)
    host.wait(lambda: len(host.blocked()) == 1)
    probe = spawn_write("bus/pci/drivers_probe", VEGA)
    host.wait(lambda: len(host.blocked()) == 2)
    reader = subprocess.Popen([fakehost.PY, "-c", READER, f"/sys/bus/pci/devices/{VEGA}/driver_override"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert u.poll() is None and probe.poll() is None and reader.poll() is None
    assert [(p, v) for p, v, _ in host.blocked()] == [("bus/pci/drivers/amdgpu/unbind", VEGA),
                                                      ("bus/pci/drivers_probe", VEGA)]
    # another device: no wait (not through drivers_probe: FUSE serializes the writes to one
    # file, where kernfs would not)
    t0 = time.monotonic()
    assert host.write("bus/pci/drivers/vfio-pci/unbind", R5) == 0
    assert host.write("bus/pci/drivers/radeon/bind", R5) == 0
    host.wait(lambda: host.driver(R5) == "radeon")
    assert time.monotonic() - t0 < 0.5 and host.override(R5) is None
    assert host.driver(VEGA) == "amdgpu"
    u.kill()                                            # D state: the kill waits for the write
    time.sleep(0.3)
    assert u.poll() is None
    host.unhang()
    assert u.wait(timeout=5) == -signal.SIGKILL
    assert probe.stdout.readline().strip() == "0" and reader.stdout.readline().strip() == "(null)"
    for p in (u, probe, reader):
        p.wait(timeout=5)
        p.stdout.close()
    # the unbind first, then the probe that waited for it: amdgpu again
    vega = [w for w in host.log() if w.value == VEGA]
    assert vega == [fakehost.Write("bus/pci/drivers/amdgpu/unbind", VEGA, "0"),
                    fakehost.Write("bus/pci/drivers_probe", VEGA, "0")], vega
    host.wait(lambda: host.driver(VEGA) == "amdgpu")
    assert host.blocked() == []
    # a killable holder: a lock waiter killed is answered at once, its write done later
    host.hang("bus/pci/drivers/amdgpu/unbind", VEGA)
    u = spawn_write("bus/pci/drivers/amdgpu/unbind", VEGA)
    host.wait(lambda: len(host.blocked()) == 1)
    w = spawn_write(f"bus/pci/devices/{VEGA}/driver_override", "vfio-pci")
    host.wait(lambda: len(host.blocked()) == 2)
    time.sleep(0.1)
    assert w.poll() is None
    t0 = time.monotonic()
    w.kill()
    assert w.wait(timeout=2) == -signal.SIGKILL and time.monotonic() - t0 < 1
    host.unhang()
    assert u.stdout.readline().strip() == "0"
    u.wait(timeout=5)
    for p in (u, w):
        p.stdout.close()
    host.wait(lambda: host.blocked() == [])
    assert host.driver(VEGA) is None and host.override(VEGA) == "vfio-pci"


@variant(audio_driver="snd_hda_intel")
def test_sound_holder_through_another_node_blocks_the_unbind(host):
    """The kernel counts open files of the card, whatever path they were opened by (a
    container's own /dev): matched by device number."""
    alias = "/run/fakehost/sandbox-snd"
    st = os.stat("/dev/snd/controlC0")
    os.mknod(alias, 0o600 | stat.S_IFCHR, st.st_rdev)
    try:
        holder = subprocess.Popen([fakehost.PY, "-c", "import os, sys; os.open(sys.argv[1], os.O_PATH); "
                                   "print('ready', flush=True); sys.stdin.read()", alias],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "ready"
        w = spawn_write("bus/pci/drivers/snd_hda_intel/unbind", VEGA_AUDIO)
        host.wait(lambda: host.blocked() != [])
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
        assert w.stdout.readline().strip() == "0"
        w.wait(timeout=5)
        w.stdout.close()
        assert host.driver(VEGA_AUDIO) is None
    finally:
        os.unlink(alias)


# ---------------------------------------------------------------- vfio and kfd nodes

UDEV_NODE = r"""
import ctypes, os, sys
u = ctypes.CDLL("libudev.so.1")
u.udev_new.restype = ctypes.c_void_p
u.udev_device_new_from_subsystem_sysname.restype = ctypes.c_void_p
u.udev_device_new_from_subsystem_sysname.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
u.udev_device_get_devnum.restype = ctypes.c_ulong
u.udev_device_get_devnum.argtypes = [ctypes.c_void_p]
u.udev_device_get_devnode.restype = ctypes.c_char_p
u.udev_device_get_devnode.argtypes = [ctypes.c_void_p]
d = u.udev_device_new_from_subsystem_sysname(u.udev_new(), sys.argv[1].encode(), sys.argv[2].encode())
if d:
    n = u.udev_device_get_devnum(d)
    print(os.major(n), os.minor(n), (u.udev_device_get_devnode(d) or b"").decode())
"""


def udev_node(subsystem, sysname):
    """What qemu-hook asks libudev of a class device that is no child of a PCI function:
    (major, minor, devnode), or None when libudev finds no such device."""
    fakehost.check_safe()
    out = subprocess.run([fakehost.PY, "-c", UDEV_NODE, subsystem, sysname], capture_output=True, text=True,
                         env=fakehost.hook_env(), check=True).stdout.split()
    return (int(out[0]), int(out[1]), out[2]) if out else None


def char_node(path):
    st = os.stat(path)
    assert stat.S_ISCHR(st.st_mode), path
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def test_vfio_and_kfd_nodes_of_the_tree(host):
    """Groups 17 (the Vega's audio) and 18 (the R5 and its audio) have functions on vfio-pci:
    their char devices, with minors in the order they were made (not the group numbers), a
    vfio-dev/vfioN per function without a node (6.1), the container and kfd as their modules make
    them; libudev finds each by subsystem and name, with its node."""
    assert os.listdir("/sys/class/vfio") and sorted(os.listdir("/sys/class/vfio")) == ["17", "18"]
    assert open("/sys/class/vfio/17/dev").read() == "242:0\n" and open("/sys/class/vfio/18/dev").read() == "242:1\n"
    assert os.path.realpath("/sys/class/vfio/17") == "/sys/devices/virtual/vfio/17"
    assert "DEVNAME=vfio/17" in open("/sys/class/vfio/17/uevent").read()
    assert char_node("/dev/vfio/17") == (242, 0) and char_node("/dev/vfio/18") == (242, 1)
    assert udev_node("vfio", "17") == (242, 0, "/dev/vfio/17")
    assert udev_node("vfio", "19") is None
    assert char_node("/dev/vfio/vfio") == (10, 196)
    assert char_node("/dev/kfd") == (235, 0) and udev_node("kfd", "kfd") == (235, 0, "/dev/kfd")
    assert host.vfio_devs(VEGA_AUDIO) == ["vfio0"] and host.vfio_devs(R5) == ["vfio1"]
    assert host.vfio_devs(R5_AUDIO) == ["vfio2"] and host.vfio_devs(VEGA) == []
    assert not os.path.exists(f"/sys/bus/pci/devices/{VEGA_AUDIO}/vfio-dev/vfio0/dev")
    assert not os.path.exists("/dev/vfio/devices")
    assert host.vfio_group_node(R5) == "/dev/vfio/18"


def test_vfio_group_node_comes_with_the_first_function_and_goes_with_the_last(host):
    move(host, R5, "vfio-pci", "radeon")
    host.wait(lambda: host.driver(R5) == "radeon")
    assert host.vfio_devs(R5) == [] and os.path.exists("/dev/vfio/18")     # its audio is on vfio-pci
    assert host.write("bus/pci/drivers/vfio-pci/unbind", R5_AUDIO) == 0
    assert not os.path.lexists("/sys/class/vfio/18") and not os.path.exists("/sys/devices/virtual/vfio/18")
    assert not os.path.lexists("/dev/vfio/18") and os.path.exists("/dev/vfio/17")
    assert host.write("bus/pci/drivers/vfio-pci/bind", R5_AUDIO) == 0
    host.wait(lambda: host.driver(R5_AUDIO) == "vfio-pci")
    assert open("/sys/class/vfio/18/dev").read() == "242:1\n" and char_node("/dev/vfio/18") == (242, 1)
    assert host.vfio_devs(R5_AUDIO) == ["vfio1"]                          # the lowest free
    # group 17: the Vega joins its audio on vfio-pci; the audio leaving keeps the group
    move(host, VEGA, "amdgpu", "vfio-pci")
    host.wait(lambda: host.driver(VEGA) == "vfio-pci")
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA_AUDIO) == 0
    assert char_node("/dev/vfio/17") == (242, 0) and host.vfio_devs(VEGA) == ["vfio2"]
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0
    assert not os.path.lexists("/dev/vfio/17") and os.listdir("/sys/class/vfio") == ["18"]


def test_vfio_holder_blocks_the_unbind_until_it_exits(host):
    """A VM holding its group's node: vfio-pci's remove waits for it. The container node, open in
    every VM, blocks nothing."""
    with host.hold("/dev/vfio/vfio"):
        t0 = time.monotonic()
        assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA_AUDIO) == 0
        assert time.monotonic() - t0 < 0.2 and host.driver(VEGA_AUDIO) is None
    with host.hold("/dev/vfio/18") as pid:
        w = spawn_write("bus/pci/drivers/vfio-pci/unbind", R5)
        host.wait(lambda: host.blocked() != [])
        assert host.blocked() == [("bus/pci/drivers/vfio-pci/unbind", R5, w.pid)]
        time.sleep(0.2)
        assert w.poll() is None and host.driver(R5) == "vfio-pci" and pid
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    w.stdout.close()
    assert host.driver(R5) is None and host.blocked() == []


@variant(vfio_cdev=True)
def test_vfio_cdev_nodes_and_their_holders(host):
    """Linux >= 6.6: each function on vfio-pci has its own node, /dev/vfio/devices/vfioN; a holder
    of it blocks vfio-pci's remove too."""
    d = f"/sys/bus/pci/devices/{VEGA_AUDIO}/vfio-dev/vfio0"
    assert open(f"{d}/dev").read() == "241:0\n" and "DEVNAME=vfio/devices/vfio0" in open(f"{d}/uevent").read()
    assert char_node("/dev/vfio/devices/vfio0") == (241, 0) and char_node("/dev/vfio/devices/vfio2") == (241, 2)
    move(host, VEGA, "amdgpu", "vfio-pci")
    host.wait(lambda: host.driver(VEGA) == "vfio-pci")
    assert host.vfio_devs(VEGA) == ["vfio3"] and char_node("/dev/vfio/devices/vfio3") == (241, 3)
    with host.hold("/dev/vfio/devices/vfio0"):
        w = spawn_write("bus/pci/drivers/vfio-pci/unbind", VEGA_AUDIO)
        host.wait(lambda: host.blocked() != [])
        assert w.poll() is None
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    w.stdout.close()
    assert not os.path.lexists("/dev/vfio/devices/vfio0") and os.path.exists("/dev/vfio/devices/vfio3")


HUGE_NR = "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"


@variant(hugepages={2048: (6, 4, 2, 0)})
def test_hugepages_write_sets_the_persistent_count(host):
    """mm/hugetlb.c set_max_huge_pages: nr_hugepages counts surplus pages; a write sets the
    persistent count, turning surplus pages persistent before allocating new ones."""
    assert host.pool() == {"nr": 6, "free": 4, "surplus": 2, "resv": 0}
    assert host.write(HUGE_NR, "5") == 0            # persistent 4 -> 5: one surplus page converted
    assert host.pool() == {"nr": 6, "free": 4, "surplus": 1, "resv": 0}, host.pool()
    assert host.write(HUGE_NR, "10") == 0           # the last surplus one, then 4 new free pages
    assert host.pool() == {"nr": 10, "free": 8, "surplus": 0, "resv": 0}, host.pool()
    assert host.write(HUGE_NR, "0") == 0            # free pages go, the 2 in use become surplus
    assert host.pool() == {"nr": 2, "free": 0, "surplus": 2, "resv": 0}, host.pool()
    host.let_go_hugepages(2)                        # surplus pages let go leave the pool
    assert host.pool() == {"nr": 0, "free": 0, "surplus": 0, "resv": 0}, host.pool()
    assert host.write(HUGE_NR, "-1") == errno.EINVAL


@variant(hugepages={2048: (10, 10, 0, 6)})
def test_hugepages_lowering_keeps_the_reserved_pages(host):
    """Free pages are freed down to the reserved ones (min_count = resv + in use); the persistent
    count below that is made of surplus pages."""
    assert host.write(HUGE_NR, "2") == 0
    assert host.pool() == {"nr": 6, "free": 6, "surplus": 4, "resv": 6}, host.pool()


# ---------------------------------------------------------------- kernel modules (build/kmodtrap)

# The module syscalls themselves, as libkmod makes them; kmodtrap traps them and fakesys answers.
MODCALL = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "delete":         # kmod_module_remove_module: delete_module(name, O_NONBLOCK)
    r = libc.syscall(176, sys.argv[2].encode(), os.O_NONBLOCK)
else:                               # kmod_module_insert_module: finit_module(fd, "", 0)
    r = libc.syscall(313, os.open(sys.argv[2], os.O_RDONLY), b"", 0)
print(0 if r == 0 else ctypes.get_errno())
"""
KO = f"/usr/lib/modules/{os.uname().release}"


def modcall(verb, arg):
    """delete_module(ARG) or finit_module(open(ARG)) in a child process: its errno (0: done)."""
    fakehost.check_safe()
    out = subprocess.run([fakehost.PY, "-c", MODCALL, verb, arg], capture_output=True, text=True, check=True)
    return int(out.stdout)


def ko(name):
    return f"{KO}/{fakehost.origin.KERNEL_MODULES[name][0]}"


def modprobe(*args):
    fakehost.check_safe()
    return subprocess.run(["modprobe"] + list(args), capture_output=True, text=True)


def module_loaded(name):
    return os.path.exists(f"/sys/module/{name}/initstate")


def holders(name):
    return sorted(os.listdir(f"/sys/module/{name}/holders"))


def refcnt(name):
    return int(open(f"/sys/module/{name}/refcnt").read())


def test_module_syscalls_are_trapped():
    """The runner is under kmodtrap's filter (Seccomp 2). The kernel takes one listener per filter
    chain: a kmodtrap inside refuses to run anything."""
    assert fakehost.seccomp_mode() == 2
    p = subprocess.run([fakehost.KMODTRAP, "true"], capture_output=True, text=True)
    assert p.returncode == 127 and "already under" in p.stderr, p


def test_the_trap_answers_eperm_outside_an_emulated_sys(host):
    """A process whose namespace has no fakesys at /sys (a tmpfs there) gets EPERM: kmodtrap asks
    /proc/PID/root/sys/.fakesys/marker, the caller's own /sys."""
    script = f"mount -t tmpfs tmpfs /sys && exec {fakehost.PY} -c '{MODCALL}' delete amdgpu"
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) == errno.EPERM and module_loaded("amdgpu")
    assert modcall("init", ko("amdgpu")) == errno.EEXIST       # here, fakesys's answer


def test_unload_amdgpu_with_nobody_holding(host):
    """delete_module runs amdgpu's exit: pci_unregister_driver unbinds the Vega (its DRM card goes,
    with fbcon's vtcon: no framebuffer is left), the driver and module directories and kfd go."""
    assert holders("amdgpu") == [] and refcnt("amdgpu") == 0 and char_node("/dev/kfd") == (235, 0)
    assert modcall("delete", "amdgpu") == 0
    assert host.driver(VEGA) is None and host.drm_cards(VEGA) == [] and host.fbcon() is None
    assert not os.path.exists("/sys/bus/pci/drivers/amdgpu") and not os.path.exists("/sys/module/amdgpu")
    assert not os.path.lexists("/sys/class/kfd/kfd") and not os.path.exists("/dev/kfd")
    assert "amdgpu" not in open("/sys/.fakesys/drivers").read()
    assert host.uevent(VEGA).get("DRIVER") is None
    assert host.log()[-1] == fakehost.Write(".fakesys/module", "unload amdgpu", "0")
    assert modcall("delete", "amdgpu") == errno.ENOENT         # gone now


def test_unload_refused_while_a_node_is_open(host):
    """open() of a node takes a reference on the module of its fops: refcnt counts each open file
    of the DRM nodes of amdgpu's devices and of /dev/kfd; delete_module(O_NONBLOCK) is then
    EWOULDBLOCK and nothing changes. A test can also set refcnt in BACKING."""
    with host.hold("/dev/dri/card0"):
        assert refcnt("amdgpu") == 1
        assert modcall("delete", "amdgpu") == errno.EWOULDBLOCK
        assert host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA) == ["card0"] and module_loaded("amdgpu")
    with host.hold("/dev/kfd"), host.hold("/dev/dri/renderD128"):
        assert refcnt("amdgpu") == 2 and modcall("delete", "amdgpu") == errno.EWOULDBLOCK
    with open(f"{host.backing}/module/amdgpu/refcnt", "w") as f:
        f.write("1\n")
    assert modcall("delete", "amdgpu") == errno.EWOULDBLOCK
    with open(f"{host.backing}/module/amdgpu/refcnt", "w") as f:
        f.write("0\n")
    assert refcnt("amdgpu") == 0 and modcall("delete", "amdgpu") == 0


def test_builtin_and_unknown_modules(host):
    """A built-in module (/module/NAME without initstate) cannot be unloaded: ENOENT, as one not
    loaded; finit_module of a file no module on disk is named after: ENOENT; of a loaded one:
    EEXIST; init_module (an image in memory) is not supported: ENOSYS."""
    assert os.path.isdir("/sys/module/pcieport") and modcall("delete", "pcieport") == errno.ENOENT
    assert modcall("delete", "efifb") == errno.ENOENT and modcall("delete", "no_such_module") == errno.ENOENT
    assert host.driver("0000:00:03.1") == "pcieport"
    with open(f"{fakehost.SCRATCH}/no-such-module.ko", "w") as f:
        f.write("\x7fELF")
    assert modcall("init", f"{fakehost.SCRATCH}/no-such-module.ko") == errno.ENOENT
    assert modcall("init", ko("vfio_pci")) == errno.EEXIST
    code = "import ctypes; l = ctypes.CDLL(None, use_errno=True); l.syscall(175, None, 0, b''); print(ctypes.get_errno())"
    assert subprocess.run([fakehost.PY, "-c", code], capture_output=True, text=True).stdout.strip() == str(errno.ENOSYS)


def test_load_amdgpu_back_binds_what_it_matches(host):
    """finit_module: amdgpu registers its driver (bind unbind new_id remove_id uevent, module
    link), kfd comes back and driver_attach probes the unbound Vega: bound with its DRM card and
    fbcon's vtcon. Through libkmod (modprobe), which reads modules.dep."""
    assert modcall("delete", "amdgpu") == 0 and host.driver(VEGA) is None
    p = modprobe("amdgpu")
    assert p.returncode == 0, p.stderr
    assert module_loaded("amdgpu") and holders("amdgpu") == [] and refcnt("amdgpu") == 0
    assert sorted(os.listdir("/sys/bus/pci/drivers/amdgpu")) == \
        sorted([VEGA, "bind", "module", "new_id", "remove_id", "uevent", "unbind"])
    assert host.module_drivers("amdgpu") == ["pci:amdgpu"]
    assert host.driver(VEGA) == "amdgpu" and char_node("/dev/kfd") == (235, 0)
    host.wait(lambda: host.drm_cards(VEGA) == ["card0"])
    assert host.fbcon_bound() and host.card_by_path(VEGA) == "/dev/dri/card0"
    assert "pci amdgpu 1002:687f" in open("/sys/.fakesys/drivers").read().splitlines()


def test_load_amdgpu_leaves_a_vega_whose_override_names_another_driver(host):
    """What keeps the GPU on vfio-pci when the hook loads amdgpu back: a device whose
    driver_override names another driver does not match amdgpu, bound or not."""
    move(host, VEGA, "amdgpu", "vfio-pci")
    host.wait(lambda: host.driver(VEGA) == "vfio-pci")
    assert modcall("delete", "amdgpu") == 0
    assert modcall("init", ko("amdgpu")) == 0
    assert host.driver(VEGA) == "vfio-pci" and host.drm_cards(VEGA) == []
    assert modcall("delete", "amdgpu") == 0
    assert host.write("bus/pci/drivers/vfio-pci/unbind", VEGA) == 0         # unbound, override kept
    assert modcall("init", ko("amdgpu")) == 0
    time.sleep(0.05)
    assert host.driver(VEGA) is None and host.override(VEGA) == "vfio-pci"
    # an override naming it is a match
    assert modcall("delete", "amdgpu") == 0
    assert host.write(f"bus/pci/devices/{VEGA}/driver_override", "amdgpu") == 0
    assert modcall("init", ko("amdgpu")) == 0
    assert host.driver(VEGA) == "amdgpu"


def test_unload_vfio_pci_unbinds_its_functions(host):
    """vfio-pci's exit unbinds the functions on it (their groups' nodes go, with the container);
    held through a group node it is busy."""
    with host.hold("/dev/vfio/18"):
        assert refcnt("vfio_pci") == 1 and modcall("delete", "vfio_pci") == errno.EWOULDBLOCK
    assert modcall("delete", "vfio_pci") == 0
    assert host.driver(R5) is None and host.driver(VEGA_AUDIO) is None and os.listdir("/sys/class/vfio") == []
    assert not os.path.exists("/dev/vfio/vfio") and not os.path.exists("/dev/vfio/18")
    assert modcall("init", ko("vfio_pci")) == 0               # its ids (options vfio-pci ids=) bind again
    assert host.driver(R5) == "vfio-pci" and host.driver(R5_AUDIO) == "vfio-pci"
    assert char_node("/dev/vfio/vfio") == (10, 196)


# ---------------------------------------------------------------- the NVIDIA variant

def nvidia_nodes():
    return sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))


@variant(gpu="nvidia", audio_driver="snd_hda_intel")
def test_nvidia_variant_tree(host):
    """An RTX 3080 on the proprietary driver: nvidia with nvidia_modeset, nvidia_uvm and
    nvidia_drm (DRM card and fbcon), the bare nodes register_chrdev gives (no sysfs device), the
    driver's /proc file while bound."""
    assert host.driver(VEGA) == "nvidia" and host.uevent(VEGA)["PCI_ID"] == "10DE:2206"
    assert host.driver(VEGA_AUDIO) == "snd_hda_intel" and host.uevent(VEGA_AUDIO)["PCI_ID"] == "10DE:1AEF"
    assert host.module_drivers("nvidia") == ["pci:nvidia"] and host.module_drivers("nvidia_drm") == []
    assert holders("nvidia") == ["nvidia_modeset", "nvidia_uvm"] and holders("nvidia_modeset") == ["nvidia_drm"]
    assert holders("nvidia_drm") == [] and holders("nvidia_uvm") == []
    assert host.drm_cards(VEGA) == ["card0"] and host.fbcon_bound() and not module_loaded("amdgpu")
    assert nvidia_nodes() == ["nvidia-modeset", "nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidiactl"]
    assert char_node("/dev/nvidia0") == (195, 0) and char_node("/dev/nvidiactl") == (195, 255)
    assert char_node("/dev/nvidia-modeset") == (195, 254) and char_node("/dev/nvidia-uvm-tools") == (510, 1)
    assert not os.path.exists("/dev/kfd")
    info = open(f"/proc/driver/nvidia/gpus/{VEGA}/information").read()
    keys = [line.split(":")[0] for line in info.splitlines()]
    assert keys == ["Model", "IRQ", "GPU UUID", "Video BIOS", "Bus Type", "DMA Size", "DMA Mask", "Bus Location",
                    "Device Minor", "GPU Excluded"], info
    assert f"Bus Location: \t {VEGA}" in info and "Device Minor: \t 0" in info
    out = subprocess.run(["modprobe", "-R", host.uevent(VEGA)["MODALIAS"]], capture_output=True, text=True).stdout
    assert out.split() == ["nvidia"]
    out = subprocess.run(["modprobe", "--show-depends", "nvidia_drm"], capture_output=True, text=True).stdout
    assert [os.path.basename(line.split()[1]) for line in out.splitlines()] == \
        ["nvidia.ko", "nvidia-modeset.ko", "nvidia-drm.ko"], out


@variant(gpu="nvidia")
def test_nvidia_unbind_waits_for_the_holder_of_its_nodes(host):
    """nv_pci_remove waits for the GPU's usage count: an unbind blocks while /dev/nvidia0 (or a DRM
    node) is open, and the /proc file goes with the GPU."""
    with host.hold("/dev/nvidia0"):
        assert refcnt("nvidia") == 1
        w = spawn_write("bus/pci/drivers/nvidia/unbind", VEGA)
        host.wait(lambda: host.blocked() != [])
        time.sleep(0.1)
        assert w.poll() is None and host.driver(VEGA) == "nvidia"
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    w.stdout.close()
    assert host.driver(VEGA) is None and host.drm_cards(VEGA) == []
    assert not os.path.exists(f"/proc/driver/nvidia/gpus/{VEGA}")
    assert host.write("bus/pci/drivers/nvidia/bind", VEGA) == 0
    host.wait(lambda: host.drm_cards(VEGA) != [])
    with host.hold(f"/dev/dri/{host.drm_cards(VEGA)[0]}"):          # a DRM node: the same wait
        w = spawn_write("bus/pci/drivers/nvidia/unbind", VEGA)
        host.wait(lambda: host.blocked() != [])
        assert w.poll() is None
    assert w.stdout.readline().strip() == "0"
    w.wait(timeout=5)
    w.stdout.close()
    with host.hold("/dev/nvidiactl"):
        assert refcnt("nvidia") == 1       # the GPU gone, the control node still holds the module


@variant(gpu="nvidia")
def test_nvidia_unload_in_dependency_order(host):
    """nvidia is held by nvidia_modeset and nvidia_uvm (holders/): EWOULDBLOCK; a DRM node open is
    nvidia_drm's reference, not nvidia's. Removed dependents first (modprobe -r's order), each
    goes: the DRM card with nvidia_drm (and fbcon with it), the GPU unbound with nvidia, every
    node."""
    assert modcall("delete", "nvidia") == errno.EWOULDBLOCK and modcall("delete", "nvidia_modeset") == errno.EWOULDBLOCK
    with host.hold("/dev/dri/card0"):
        assert refcnt("nvidia_drm") == 1 and refcnt("nvidia") == 0
        assert modcall("delete", "nvidia_drm") == errno.EWOULDBLOCK
    p = modprobe("-r", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")
    assert p.returncode == 0, p.stderr
    for mod in origin_nvidia_modules():
        assert not os.path.exists(f"/sys/module/{mod}"), mod
    assert host.driver(VEGA) is None and host.drm_cards(VEGA) == [] and host.fbcon() is None
    assert nvidia_nodes() == [] and not os.path.exists("/sys/bus/pci/drivers/nvidia")
    assert not os.path.exists("/proc/driver/nvidia")
    unloads = [w.value for w in host.log() if w.path == ".fakesys/module" and w.result == "0"]
    assert unloads == ["unload nvidia_drm", "unload nvidia_modeset", "unload nvidia_uvm", "unload nvidia"], host.log()


def origin_nvidia_modules():
    return fakehost.origin.NVIDIA_MODULES


@variant(gpu="nvidia")
def test_nvidia_load_brings_dependencies_first(host):
    """finit_module of nvidia_drm without nvidia_modeset: ENOENT (unknown symbols). modprobe
    (kmod_module_probe_insert_module) loads nvidia, nvidia_modeset, then nvidia_drm: the GPU binds
    to nvidia at its load, its DRM card comes with nvidia_drm."""
    assert modprobe("-r", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia").returncode == 0
    host.clear_log()
    assert modcall("init", ko("nvidia_drm")) == errno.ENOENT and not module_loaded("nvidia_drm")
    p = modprobe("nvidia_drm")
    assert p.returncode == 0, p.stderr
    loads = [w.value for w in host.log() if w.path == ".fakesys/module" and w.result == "0"]
    assert loads == ["load nvidia", "load nvidia_modeset", "load nvidia_drm"], host.log()
    assert holders("nvidia") == ["nvidia_modeset"] and holders("nvidia_modeset") == ["nvidia_drm"]
    assert host.driver(VEGA) == "nvidia" and os.path.exists(f"/proc/driver/nvidia/gpus/{VEGA}/information")
    host.wait(lambda: host.drm_cards(VEGA) == ["card0"])
    assert host.fbcon_bound()
    assert nvidia_nodes() == ["nvidia-modeset", "nvidia0", "nvidiactl"]
