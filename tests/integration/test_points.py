"""Every point of a hand-over and of a hand-back, one generated test per point (issue 10, items 2
and 3), on the emulated host without D-Bus (test_desktop.py does the D-Bus calls):

- a failure injected at each write of the hand-back: the other steps are still undone, the exit
  is 1 naming the step, the journal keeps exactly what is left, and `--recover` finishes it;
- the hook SIGKILLed at each write of a hand-over and of a hand-back, just before the write is
  made and just after: then `release end` restores the host exactly.

The number of writes of each direction is fixed by test_the_points_are_these: when the hook
writes more or fewer, that test fails and the lists below are brought up to date, so no point
goes untested."""
import os

import fakehost
from fakehost import R5, VEGA
from hookcalls import Calls

CALLS = Calls("points", fakehost.domain_xml("win10", [VEGA]))
JOURNAL = CALLS.journal
prepare, release = CALLS.prepare, CALLS.release

# Each write of the origin's host, in order, as (sysfs path, value): fbcon's unbind, the Vega's
# move, the R5's move; and back. Every pair is written once per direction, so a fail line with
# the value hits exactly that write.
OVERRIDE = "bus/pci/devices/{}/driver_override"
HAND_OVER = [("class/vtconsole/vtcon1/bind", "0"), (OVERRIDE.format(VEGA), "vfio-pci"),
             ("bus/pci/drivers/amdgpu/unbind", VEGA), ("bus/pci/drivers_probe", VEGA),
             (OVERRIDE.format(R5), "radeon"), ("bus/pci/drivers/vfio-pci/unbind", R5), ("bus/pci/drivers_probe", R5)]
HAND_BACK = [("class/vtconsole/vtcon1/bind", "0"), (OVERRIDE.format(R5), "vfio-pci"),
             ("bus/pci/drivers/radeon/unbind", R5), ("bus/pci/drivers_probe", R5), (OVERRIDE.format(R5), ""),
             (OVERRIDE.format(VEGA), "amdgpu"), ("bus/pci/drivers/vfio-pci/unbind", VEGA),
             ("bus/pci/drivers_probe", VEGA), (OVERRIDE.format(VEGA), "")]
# The step each hand-back write belongs to, as the hook names it.
STEP_OF = {R5: "move 0000:08:00.0", VEGA: "move 0000:0d:00.0"}


def config():
    CALLS.write(fakehost.NATIVE_CONF + "[host]\ntimeout = 5s\n")


def writes(host):
    return [(w.path, w.value) for w in host.log()]


def matches(write, point):
    """Whether a logged write (canonical path) is the point's write (path through links)."""
    return os.path.realpath("/sys/" + point[0]) == "/sys/" + write[0] and write[1] == point[1]


def func_of(point):
    """The PCI function a write is about, or None (fbcon's)."""
    path, value = point
    return next((f for f in (R5, VEGA) if f in path or value == f), None)


def step_of(point):
    return STEP_OF.get(func_of(point), "fbcon")


def test_the_points_are_these(host):
    config()
    before = host.snapshot()
    assert prepare() == (0, ""), "the hand-over failed"
    got = writes(host)
    assert len(got) == len(HAND_OVER) and all(map(matches, got, HAND_OVER)), got
    host.clear_log()
    assert release() == (0, ""), "the hand-back failed"
    got = writes(host)
    assert len(got) == len(HAND_BACK) and all(map(matches, got, HAND_BACK)), got
    assert host.snapshot() == before


def unnumbered(snapshot):
    """The snapshot with DRM cards counted, not numbered: a card whose minor was taken while the
    other GPU kept its own comes back under another number, as on the kernel."""
    s = dict(snapshot, class_drm=len(snapshot["class_drm"]))
    s["pci"] = {f: dict(v, drm=len(v["drm"])) for f, v in snapshot["pci"].items()}
    return s


def bound(snapshot, func):
    """What a move decides of a function: its driver and override (card numbers are the kernel's)."""
    return {k: snapshot["pci"][func][k] for k in ("driver", "override", "uevent_driver")}


def failed_hand_back(k):
    """The hand-back's write k fails with EIO once. A move's write: exit 1 naming the step, every
    other step undone, the journal keeps what is left; --recover then finishes it exactly. fbcon's
    unbind is best effort: a warning naming it, and the hand-back goes on to its end."""
    point = HAND_BACK[k - 1]

    def test(host):
        config()
        before = host.snapshot()
        assert prepare()[0] == 0
        host.fail(point[0], "EIO", count=1, value=point[1])
        rc, err = release()
        step = step_of(point)
        if step == "fbcon":
            assert rc == 0 and "unbinding fbcon from vtcon1 failed" in err and "going on" in err, \
                f"exit {rc}: {err}"
            assert not os.path.exists(JOURNAL)
            assert host.snapshot() == before, host.snapshot()
            return
        assert rc == 1 and f"1 step could not be undone: {'5' if func_of(point) == R5 else '3'}. {step}" in err \
            and "--recover win10" in err, f"exit {rc}: {err}"
        assert os.path.exists(JOURNAL), "the journal must keep what is left"
        # Every other step was undone: the other GPU is back where it was.
        other = VEGA if func_of(point) == R5 else R5
        assert bound(host.snapshot(), other) == bound(before, other), host.snapshot()
        rc, out, err = CALLS.hook("--recover", "win10")
        assert out == "", f"--recover wrote to stdout: {out!r}"
        assert rc == 0, f"--recover: exit {rc}: {err}"
        assert unnumbered(host.snapshot()) == unnumbered(before), host.snapshot()
        assert not os.path.exists(JOURNAL)
    return test


def killed(direction, k, mode, park_override=None):
    """The hook SIGKILLed at write k of a hand-over or a hand-back, before or after the write;
    then release end puts the host back exactly. PARK_OVERRIDE: the R5 parked by a udev rule's
    driver_override, which the undo must put back however early the hook died (the real kernel
    showed it lost when the kill came during the R5's move)."""
    def test(host):
        config()
        if park_override:
            assert host.write(f"bus/pci/devices/{R5}/driver_override", park_override) == 0
        CALLS.killed_then_released(host, direction, k, mode)
    return test


for _k in range(1, len(HAND_BACK) + 1):
    globals()[f"test_hand_back_write_{_k}_fails"] = failed_hand_back(_k)
for _direction, _points in (("hand-over", HAND_OVER), ("hand-back", HAND_BACK)):
    for _k in range(1, len(_points) + 1):
        for _mode in ("before", "after"):
            globals()[f"test_killed_at_{_direction.replace('-', '_')}_write_{_k}_{_mode}"] = \
                killed(_direction, _k, _mode)
for _k in (5, 6, 7):        # the R5's move from its parking driver
    for _mode in ("before", "after"):
        globals()[f"test_killed_with_a_parking_override_at_hand_over_write_{_k}_{_mode}"] = \
            killed("hand-over", _k, _mode, park_override="vfio-pci")


def test_a_journal_of_0_1_0_keeps_its_parking_override(host):
    """qemu-hook 0.1.0 kept a parking override in the step's note ("override=vfio-pci"): a journal
    it wrote before an upgrade while the VM ran is handed back with that override all the same."""
    config()
    assert host.write(f"bus/pci/devices/{R5}/driver_override", "vfio-pci") == 0
    before = host.snapshot()
    assert prepare()[0] == 0
    with open(JOURNAL) as f:
        text = f.read()
    assert "override = vfio-pci\n" in text, text
    old = text.replace("note = \noverride = vfio-pci\n", "note = override=vfio-pci\n")
    assert old != text and "override = " not in old, old
    with open(JOURNAL, "w") as f:
        f.write(old)
    rc, err = release()
    assert rc == 0, err
    assert host.snapshot() == before, host.snapshot()
