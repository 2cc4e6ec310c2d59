"""[gpu] reset_method and [vm NAME] bar_sizes (issue 12, items 3, 4 and 9) on the emulated host:
the Vega's reset methods and resizable BARs while the VM has it, put back exactly after; what the
kernel would refuse is refused before the first step; a failure or a kill at their steps leaves
the host as it was. The emulation follows the kernel's stores (tests/host/fakesys.c)."""
import os
import subprocess

import fakehost
from fakehost import VEGA, VEGA_AUDIO, variant
from hookcalls import HOOK, Calls

CALLS = Calls("pcikeys", fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO]))
JOURNAL = CALLS.journal
hook, prepare, release, dry_run = CALLS.hook, CALLS.prepare, CALLS.release, CALLS.dry_run
RESIZE0 = f"bus/pci/devices/{VEGA}/resource0_resize"
RESIZE2 = f"bus/pci/devices/{VEGA}/resource2_resize"
RESET = f"bus/pci/devices/{VEGA}/reset_method"
M = 1 << 20


def config(gpu="", vm=""):
    text = fakehost.NATIVE_CONF.replace("[gpu]\n", "[gpu]\n" + gpu) + "[host]\ntimeout = 5s\n"
    if vm:
        text += "[vm win10]\n" + vm
    CALLS.write(text)


def vega(host):
    s = host.snapshot()["pci"][VEGA]
    return s["driver"], s["reset_method"], s["bars"][0], s["bars"][2]


@variant(vendor_reset=True)
def test_reset_method_auto_with_vendor_reset(host):
    config(gpu="reset_method = auto\n")
    before = host.snapshot()
    assert vega(host) == ("amdgpu", "bus", 256 * M, 2 * M)
    assert f"set the reset method of {VEGA} to device_specific (now: bus)" in dry_run()
    rc, err = prepare()
    assert rc == 0, err
    assert vega(host) == ("vfio-pci", "device_specific", 256 * M, 2 * M)
    # set after the move to vfio-pci, undone before the move back
    writes = [(w.path.rsplit("/", 1)[-1], w.value) for w in host.log()]
    assert writes.index(("reset_method", "device_specific")) > writes.index(("drivers_probe", VEGA)), writes
    with open(JOURNAL) as f:
        assert "pci-reset-method" in f.read()
    host.clear_log()
    rc, err = release()
    assert rc == 0, err
    writes = [(w.path.rsplit("/", 1)[-1], w.value) for w in host.log()]
    assert writes.index(("reset_method", "bus")) < writes.index(("unbind", VEGA)), writes
    assert host.snapshot() == before


def test_reset_method_auto_without_vendor_reset_leaves_it(host):
    config(gpu="reset_method = auto\n")
    before = host.snapshot()
    assert "(skip) set the reset method of %s to auto (now: bus): auto: vendor-reset is not loaded" % VEGA \
        in dry_run()
    rc, err = prepare()
    assert rc == 0, err
    assert vega(host) == ("vfio-pci", "bus", 256 * M, 2 * M)
    assert not [w for w in host.log() if w.path.endswith("reset_method")]
    assert release()[0] == 0
    assert host.snapshot() == before


def test_reset_method_the_device_lacks_is_refused_before_the_first_step(host):
    config(gpu="reset_method = flr\n")
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 1 and f"{VEGA} does not support flr (its methods: bus)" in err and "nothing was changed" in err, err
    assert host.writes() == 0 and host.snapshot() == before
    # device_specific without vendor-reset: refused too, saying why
    config(gpu="reset_method = device_specific\n")
    rc, err = prepare()
    assert rc == 1 and "device_specific needs vendor-reset loaded" in err, err
    assert host.writes() == 0 and host.snapshot() == before


@variant(vendor_reset=True)
def test_reset_method_list(host):
    config(gpu="reset_method = device_specific bus\n")
    before = host.snapshot()
    assert prepare()[0] == 0
    assert vega(host)[1] == "device_specific bus"
    assert release()[0] == 0
    assert host.snapshot() == before


@variant(vendor_reset=True)
def test_reset_method_refused_by_the_kernel_rolls_back(host):
    config(gpu="reset_method = auto\n")
    before = host.snapshot()
    host.fail(RESET, "EINVAL", value="device_specific")
    rc, err = prepare()
    assert rc == 1 and "the kernel refuses it" in err and "the host was restored" in err, err
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def test_bar_sizes(host):
    config(vm="bar_sizes = 0:8G 2:256M\n")
    before = host.snapshot()
    out = dry_run()
    assert f"move {VEGA} from amdgpu to no driver" in out, out
    assert f"resize the BARs of {VEGA} from 0:256M 2:2M to 0:8G 2:256M (supported: BAR 0 256M-8G, " \
           "BAR 2 2M-256M)" in out, out
    assert f"move {VEGA} from no driver to vfio-pci" in out, out
    rc, err = prepare()
    assert rc == 0, err
    assert vega(host) == ("vfio-pci", "bus", 8192 * M, 256 * M)
    writes = [(w.path.rsplit("/", 1)[-1], w.value, w.result) for w in host.log()]
    # resized while bound to no driver: after the unbind from amdgpu, before vfio-pci's probe
    i = writes.index(("resource0_resize", "13", "0"))
    assert writes.index(("unbind", VEGA, "0")) < i < writes.index(("drivers_probe", VEGA, "0")), writes
    assert ("resource2_resize", "8", "0") in writes
    with open(JOURNAL) as f:
        text = f.read()
    assert "from = 0:256M 2:2M" in text and "to = 0:8G 2:256M" in text, text
    host.clear_log()
    rc, err = release()
    assert rc == 0, err
    writes = [(w.path.rsplit("/", 1)[-1], w.value, w.result) for w in host.log()]
    i = writes.index(("resource0_resize", "8", "0"))
    assert writes.index(("unbind", VEGA, "0")) < i < writes.index(("drivers_probe", VEGA, "0")), writes
    assert host.snapshot() == before


def test_bar_sizes_already_in_place_move_as_usual(host):
    config(vm="bar_sizes = 0:256M\n")
    before = host.snapshot()
    out = dry_run()
    assert f"(skip) resize the BARs of {VEGA} from 0:256M to 0:256M" in out and "no driver" not in out, out
    assert prepare()[0] == 0
    assert not [w for w in host.log() if "resize" in w.path]
    assert release()[0] == 0
    assert host.snapshot() == before


def test_bar_size_not_supported_is_refused_before_the_first_step(host):
    before = host.snapshot()
    for vm, message in (("bar_sizes = 0:16G\n", f"[vm win10] bar_sizes: BAR 0 of {VEGA} cannot be 16G (it supports 256M-8G)"),
                        ("bar_sizes = 2:128M 0:128M\n", f"BAR 0 of {VEGA} cannot be 128M (it supports 256M-8G)"),
                        ("bar_sizes = 5:1G\n", f"BAR 5 of {VEGA} is not resizable (no resource5_resize)")):
        config(vm=vm)
        rc, err = prepare()
        assert rc == 1 and message in err and "nothing was changed" in err, err
        assert host.writes() == 0 and host.snapshot() == before


def test_bar_resize_failing_rolls_back(host):
    config(vm="bar_sizes = 0:8G 2:256M\n")
    before = host.snapshot()
    # BAR 0 resized, BAR 2 refused (no room in the bridge's window): BAR 0 back, amdgpu back
    host.fail(RESIZE2, "ENOSPC", value="8")
    rc, err = prepare()
    assert rc == 1 and "resizing BAR 2" in err and "the host was restored" in err, err
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def test_a_refused_unbind_in_the_hand_back_keeps_the_bars_and_the_move_back_waiting(host):
    """The hand-back's unbind of the Vega from vfio-pci refused once: the resize back and the move
    back to amdgpu, earlier steps on the same device, wait in the journal (undone first, they would
    resize a bound BAR or bind amdgpu to a device still on vfio-pci); the rest is handed back, and
    --recover then finishes it exactly."""
    config(vm="bar_sizes = 0:8G 2:256M\n")
    before = host.snapshot()
    assert prepare()[0] == 0
    host.clear_log()
    host.fail("bus/pci/drivers/vfio-pci/unbind", "EBUSY", count=1, value=VEGA)
    rc, err = release()
    assert rc == 1 and "3 steps could not be undone" in err, err
    assert vega(host) == ("vfio-pci", "bus", 8192 * M, 256 * M), host.snapshot()["pci"][VEGA]
    assert not [w for w in host.log() if "resize" in w.path or w.path.endswith("amdgpu/bind")], host.log()
    assert host.snapshot()["pci"][VEGA_AUDIO] == before["pci"][VEGA_AUDIO]    # the rest handed back
    rc, out, err = hook("--recover", "win10")
    assert rc == 0, err
    assert host.snapshot() == before
    assert not os.path.exists(JOURNAL)


def test_bar_resize_while_bound_is_refused_by_the_emulation(host):
    """The emulation's EBUSY, as pci-sysfs.c's: what makes the plan unbind first."""
    assert host.write(RESIZE0, "13") != 0
    assert vega(host)[2] == 256 * M


def killed(k, mode, direction):
    """Killed at the k-th write of the BAR-resizing hand-over (or hand-back): release end restores."""
    def test(host):
        config(gpu="reset_method = auto\n", vm="bar_sizes = 0:8G 2:256M\n")
        CALLS.killed_then_released(host, direction, k, mode)
    return test


# Every write of the hand-over and of the hand-back with both keys at work (test_the_points pins
# them), killed just before and just after.
POINTS = {"hand-over": 11, "hand-back": 13}
for _direction, _n in POINTS.items():
    for _k in range(1, _n + 1):
        for _mode in ("before", "after"):
            globals()[f"test_killed_at_{_direction.replace('-', '_')}_write_{_k}_{_mode}"] = \
                variant(vendor_reset=True)(killed(_k, _mode, _direction))


@variant(vendor_reset=True)
def test_the_points_are_these(host):
    config(gpu="reset_method = auto\n", vm="bar_sizes = 0:8G 2:256M\n")
    assert prepare()[0] == 0
    over = [(w.path, w.value) for w in host.log()]
    host.clear_log()
    assert release()[0] == 0
    back = [(w.path, w.value) for w in host.log()]
    assert (len(over), len(back)) == (POINTS["hand-over"], POINTS["hand-back"]), (over, back)


def check(*opts):
    fakehost.check_safe()
    p = subprocess.run([HOOK, "--config", CALLS.conf, "--check", *opts], capture_output=True, text=True,
                       env=fakehost.hook_env(), timeout=120)
    return p.returncode, p.stdout, p.stderr


def finding(out, level, text):
    return any(line.startswith(f"  {level:<5} ") and text in line for line in out.splitlines())


@variant(vendor_reset=True)
def test_check_shows_the_live_values(host):
    config(gpu="reset_method = auto\n", vm="bar_sizes = 0:8G 2:256M\n")
    rc, out, err = check()
    assert host.writes() == 0, host.log()
    assert finding(out, "ok", f"{VEGA} reset_method: bus"), out
    assert finding(out, "info", f"{VEGA} BAR 0: 256M now, resizable to 256M-8G"), out
    assert finding(out, "info", f"{VEGA} BAR 2: 2M now, resizable to 2M-256M"), out
    assert finding(out, "ok", "[gpu] reset_method = auto: possible (vendor-reset loaded)"), out
    assert finding(out, "ok", "[vm win10] bar_sizes: possible"), out


def test_check_fails_what_could_never_work(host):
    config(gpu="reset_method = flr\n", vm="bar_sizes = 0:16G\n")
    rc, out, err = check()
    assert rc == 1 and host.writes() == 0, out
    assert finding(out, "FAIL", f"[gpu] reset_method = flr: {VEGA} does not support flr (its methods: bus)"), out
    assert finding(out, "FAIL", f"[vm win10] bar_sizes: BAR 0 of {VEGA} cannot be 16G (it supports 256M-8G)"), out
    assert finding(out, "info", "[gpu] reset_method = flr"), out
    assert finding(out, "info", "[vm win10] bar_sizes = 0:16G"), out


@variant(vendor_reset=True)
def test_hand_back_without_journal_restores_the_kernels_default(host):
    """Without the journal the old list is unknown: "default", the kernel's choice now (device_specific
    first while vendor-reset is loaded). The BARs keep their sizes (the old ones are unknown too)."""
    assert host.write(RESET, "\n") == 0     # every method disabled, to tell "default" from what it was
    config(gpu="reset_method = auto\n", vm="bar_sizes = 0:8G\n")
    assert vega(host)[1] == ""
    assert prepare()[0] == 0
    assert vega(host) == ("vfio-pci", "device_specific", 8192 * M, 2 * M)
    os.unlink(JOURNAL)
    out = hook("--dry-run", "win10", "release", "end", "-")[1]
    assert f"restore the reset method of {VEGA} to default" in out, out
    rc, err = release()
    assert rc == 0, err
    assert vega(host) == ("amdgpu", "device_specific bus", 8192 * M, 2 * M)


@variant(vendor_reset=True)
def test_reset_methods_all_disabled_come_back_disabled(host):
    assert host.write(RESET, "\n") == 0
    config(gpu="reset_method = auto\n")
    before = host.snapshot()
    assert "(now: none enabled)" in dry_run()
    assert prepare()[0] == 0
    assert vega(host)[1] == "device_specific"
    rc, err = release()
    assert rc == 0, err
    assert vega(host)[1] == "" and host.snapshot() == before
