"""The front end (src/front.c) as libvirt runs it: no options, /etc/libvirt/hooks/kvm.conf (the
test namespace's own, empty /etc/libvirt). It must exit 0 by itself when nothing is to be done,
and hand everything else to qemu-hook-act beside it with the XML it read. A copy of the front
end alone in a directory, without qemu-hook-act, shows which calls it settles by itself: any
other call fails there with "cannot run"."""
import os
import shutil

import fakehost
from fakehost import R5, VEGA, VEGA_AUDIO

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
HOOKS = "/etc/libvirt/hooks"
ALONE = "/run/fakehost/front-alone"
OURS = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])
OTHER = fakehost.domain_xml("other", ["0000:05:00.0"])
PLAIN = fakehost.domain_xml("plain", [])


def setup(conf=fakehost.NATIVE_CONF):
    shutil.rmtree(HOOKS, ignore_errors=True)
    shutil.rmtree("/run/qemu-hook", ignore_errors=True)
    os.makedirs(HOOKS)
    if conf is not None:
        with open(HOOKS + "/kvm.conf", "w") as f:
            f.write(conf)
        os.chmod(HOOKS + "/kvm.conf", 0o644)
    os.makedirs(ALONE, exist_ok=True)
    shutil.copy(HOOK, ALONE + "/qemu-hook")


def call(vm, op, sub, xml, binary=HOOK):
    rc, out, err, _ = fakehost.run_hook([binary, vm, op, sub, "-"], xml)
    return rc, out, err


def alone(vm, op, sub, xml):
    return call(vm, op, sub, xml, ALONE + "/qemu-hook")


def test_settles_not_ours_calls_by_itself(host):
    setup()
    for vm, xml in (("other", OTHER), ("plain", PLAIN)):
        for op, sub in (("prepare", "begin"), ("release", "end"), ("started", "begin"), ("stopped", "end")):
            assert alone(vm, op, sub, xml) == (0, "", ""), (vm, op, sub, alone(vm, op, sub, xml))
    # the operations of an ours VM that are not a hand-over or a hand-back, too
    for op, sub in (("start", "begin"), ("started", "begin"), ("reconnect", "begin")):
        assert alone("win10", op, sub, OURS) == (0, "", "")
    assert host.writes() == 0


def test_hands_over_through_qemu_hook_act(host):
    """The front end read the XML to decide; qemu-hook-act gets it all the same."""
    setup()
    before = host.snapshot()
    rc, out, err = call("win10", "prepare", "begin", OURS)
    assert rc == 0 and out == "", err
    assert host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon", host.snapshot()
    rc, out, err = call("win10", "release", "end", OURS)
    assert rc == 0, err
    assert host.snapshot() == before
    # the same calls without qemu-hook-act: the front end knows they are not its to settle
    for op, sub in (("prepare", "begin"), ("release", "end")):
        rc, out, err = alone("win10", op, sub, OURS)
        assert rc == 2 and "qemu-hook: cannot run " + ALONE + "/qemu-hook-act" in err, (rc, err)
    assert host.snapshot() == before


def test_defers_whatever_it_cannot_settle(host):
    setup(fakehost.NATIVE_CONF + "[vm gaming]\nhandle = yes\n")
    cases = [("gaming", "prepare", "begin", PLAIN),        # named in the config
             ("other", "prepare", "begin", "<domain>"),    # malformed XML: qemu-hook-act says so
             ("other", "prepare", "begin", "")]            # no XML
    for vm, op, sub, xml in cases:
        assert alone(vm, op, sub, xml)[0] == 2, (vm, xml)
    rc, out, err = call("other", "prepare", "begin", "<domain>")
    assert rc == 2 and "domain XML on standard input" in err, err
    # a broken config: reported by qemu-hook-act, with its line
    setup("[gpu]\nadress = 0000:0d:00.0\n")
    assert alone("other", "prepare", "begin", OTHER)[0] == 2
    rc, out, err = call("other", "prepare", "begin", OTHER)
    assert rc == 2 and f"{HOOKS}/kvm.conf:2" in err, err
    # a script for the call, or a recorded hand-over at release
    setup()
    os.makedirs(HOOKS + "/qemu.d/other/started/begin")
    with open(HOOKS + "/qemu.d/other/started/begin/10-x", "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(HOOKS + "/qemu.d/other/started/begin/10-x", 0o755)
    rc, out, err = call("other", "started", "begin", OTHER)
    assert rc == 0 and "10-x exited with status 1" in err, err     # ran, and killed no VM
    assert alone("other", "started", "begin", OTHER)[0] == 0       # no qemu-hook-act: still no kill
    assert alone("other", "stopped", "end", OTHER) == (0, "", "")
    assert call("win10", "prepare", "begin", OURS)[0] == 0
    assert alone("win10", "release", "end", PLAIN)[0] == 2, "a journal exists: not the front end's"
    assert call("win10", "release", "end", PLAIN)[0] == 0
    assert host.driver(VEGA) == "amdgpu"


def test_options_go_to_qemu_hook_act(host):
    setup()
    rc, out, err = call("win10", "prepare", "begin", OURS, HOOK)
    assert rc == 0
    rc, out, err, _ = fakehost.run_hook([HOOK, "--dry-run", "win10", "release", "end", "-"], OURS)
    assert rc == 0 and "hand-back of win10:" in out, (out, err)
    rc, out, err, _ = fakehost.run_hook([HOOK, "--version"])
    assert rc == 0 and out.startswith("qemu-hook "), out
    assert call("win10", "release", "end", OURS)[0] == 0


def test_without_kvm_conf(host):
    setup(conf=None)
    assert alone("win10", "prepare", "begin", OURS) == (0, "", "")
    assert host.writes() == 0


def test_a_config_warning_is_not_swallowed(host):
    """The original format warns about keys it does not know: qemu-hook-act says so, even for a
    VM that is not ours, so the front end does not settle such calls."""
    setup('VIRSH_GPU_VIDEO="0000:0d:00.0"\nVIRSH_GPU_AUDIO="0000:0d:00.1"\nMY_OWN_VARIABLE="1"\n')
    assert alone("other", "prepare", "begin", OTHER)[0] == 2
    rc, out, err = call("other", "prepare", "begin", OTHER)
    assert rc == 0 and "MY_OWN_VARIABLE" in err, err
    assert host.writes() == 0


def test_as_libvirts_hook_a_vm_name_is_never_an_option(host):
    """libvirt runs /etc/libvirt/hooks/qemu with no options, and a VM may be called "-x": read
    as an option, every call would fail, `started` too, which kills the VM."""
    setup()
    link = "/run/fakehost/as-hook/qemu"
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(HOOK, link)
    os.makedirs(HOOKS + "/qemu.d/-x/started/begin")
    with open(HOOKS + "/qemu.d/-x/started/begin/10-x", "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" > {ALONE}/ran\n")
    os.chmod(HOOKS + "/qemu.d/-x/started/begin/10-x", 0o755)
    xml = fakehost.domain_xml("-x", [])
    assert call("-x", "prepare", "begin", xml, link) == (0, "", "")
    rc, out, err = call("-x", "started", "begin", xml, link)
    assert rc == 0, err
    with open(f"{ALONE}/ran") as f:
        assert f.read() == "-x started begin -\n"
    # run by hand, options are options: "-x" is not a VM name there
    rc, out, err = call("-x", "prepare", "begin", xml)
    assert rc == 2 and "invalid option" in err, err


def test_oversized_xml_is_reported_by_qemu_hook_act(host):
    setup()
    xml = OTHER.replace("</domain>", "<!--" + "x" * (17 << 20) + "--></domain>")
    rc, out, err = call("other", "prepare", "begin", xml)
    assert rc == 2 and "exceeds 16777216 bytes" in err, err


def teardown_module():
    shutil.rmtree(HOOKS, ignore_errors=True)
    shutil.rmtree(ALONE, ignore_errors=True)
