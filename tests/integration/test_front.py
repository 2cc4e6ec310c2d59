"""The front end (src/front.c) as libvirt runs it: no options, /etc/libvirt/hooks/kvm.conf (the
test namespace's own, empty /etc/libvirt). It must exit 0 by itself when nothing is to be done,
and hand everything else to qemu-hook-act, at the libexec path compiled in, with the XML it read.
A copy of the front end in a directory of its own (a hook installed as a copy), with a stand-in
qemu-hook-act at that path that records its arguments and standard input and exits 42, shows
which calls it settles by itself (the stand-in never runs) and what it hands on (exactly the
arguments and the XML libvirt gave)."""
import os
import shutil

import fakehost
from fakehost import R5, VEGA, VEGA_AUDIO

HOOK = fakehost.HOOK
ACT = os.path.join(os.path.dirname(HOOK), "qemu-hook-act")
INSTALLED_ACT = os.path.join(fakehost.LIBEXEC, "qemu-hook-act")
HOOKS = "/etc/libvirt/hooks"
ALONE = "/run/fakehost/front-alone"
OURS = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])
OTHER = fakehost.domain_xml("other", ["0000:05:00.0"])
PLAIN = fakehost.domain_xml("plain", [])


STAND_IN = f"""#!/bin/sh
# qemu-hook-act's stand-in: records that it ran, with what, and exits 42
printf '%s\\n' "$@" > {ALONE}/act-args
cat > {ALONE}/act-stdin
exit 42
"""


def setup(conf=fakehost.NATIVE_CONF, stand_in=True):
    """HOOKS with CONF as kvm.conf (None: no kvm.conf), no journal; ALONE with a copy of the
    front end and, unless not stand_in, the recording stand-in for qemu-hook-act, which alone()
    puts at the libexec path (without it, none is there)."""
    fakehost.check_safe()
    shutil.rmtree(HOOKS, ignore_errors=True)
    shutil.rmtree("/run/qemu-hook", ignore_errors=True)
    os.makedirs(HOOKS)
    if conf is not None:
        with open(HOOKS + "/kvm.conf", "w") as f:
            f.write(conf)
        os.chmod(HOOKS + "/kvm.conf", 0o644)
    shutil.rmtree(ALONE, ignore_errors=True)
    os.makedirs(ALONE)
    shutil.copy(HOOK, ALONE + "/qemu-hook")
    if stand_in:
        with open(ALONE + "/qemu-hook-act", "w") as f:
            f.write(STAND_IN)
        os.chmod(ALONE + "/qemu-hook-act", 0o755)


def call(vm, op, sub, xml, binary=HOOK):
    rc, out, err, _ = fakehost.run_hook([binary, vm, op, sub, "-"], xml)
    return rc, out, err


def alone(vm, op, sub, xml, *options):
    """The front end in ALONE: (rc, stdout, stderr, what the stand-in got: None when it did not
    run, else (its arguments, its standard input))."""
    for f in ("act-args", "act-stdin"):
        if os.path.exists(f"{ALONE}/{f}"):
            os.unlink(f"{ALONE}/{f}")
    stand_in = ALONE + "/qemu-hook-act"
    if os.path.exists(stand_in):
        fakehost.install_act(stand_in)
    else:
        os.unlink(INSTALLED_ACT)
    try:
        rc, out, err, _ = fakehost.run_hook([ALONE + "/qemu-hook", *options, vm, op, sub, "-"], xml)
    finally:
        fakehost.install_act(ACT)
    if not os.path.exists(f"{ALONE}/act-args"):
        return rc, out, err, None
    with open(f"{ALONE}/act-args") as f:
        args = f.read().splitlines()
    with open(f"{ALONE}/act-stdin") as f:
        return rc, out, err, (args, f.read())


def settled(vm, op, sub, xml):
    """The front end exits 0 by itself: no output, qemu-hook-act not run."""
    result = alone(vm, op, sub, xml)
    assert result == (0, "", "", None), (vm, op, sub, result)


def handed_on(vm, op, sub, xml, *options):
    """The front end runs qemu-hook-act with the same arguments and the domain XML it was given."""
    rc, out, err, got = alone(vm, op, sub, xml, *options)
    assert got is not None, (f"{vm} {op} {sub}: qemu-hook-act not run", rc, out, err)
    assert got == ([*options, vm, op, sub, "-"], xml), (vm, op, sub, got)
    assert (rc, out, err) == (42, "", ""), (rc, out, err)


def test_settles_not_ours_calls_by_itself(host):
    setup()
    for vm, xml in (("other", OTHER), ("plain", PLAIN)):
        for op, sub in (("prepare", "begin"), ("release", "end"), ("started", "begin"), ("stopped", "end")):
            settled(vm, op, sub, xml)
    # the operations of an ours VM that are not a hand-over or a hand-back, too
    for op, sub in (("start", "begin"), ("started", "begin"), ("reconnect", "begin")):
        settled("win10", op, sub, OURS)
    # and what it settles, qemu-hook-act settles the same way
    for vm, xml in (("other", OTHER), ("plain", PLAIN)):
        assert call(vm, "prepare", "begin", xml, ACT) == (0, "", ""), vm
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
    # the same calls before the stand-in: the front end hands them on, the XML it read included
    for op, sub in (("prepare", "begin"), ("release", "end")):
        handed_on("win10", op, sub, OURS)
    assert host.snapshot() == before


def test_a_broken_installation_never_kills_a_running_vm(host):
    """No qemu-hook-act where the front end looks: what it cannot settle fails with exit 2 naming
    the missing file, but on started and reconnect (where libvirt kills the VM) it exits 0."""
    setup(stand_in=False)
    for op, sub in (("prepare", "begin"), ("release", "end")):
        rc, out, err, _ = alone("win10", op, sub, OURS)
        assert (rc, out) == (2, "") and err.startswith(f"qemu-hook: cannot run {INSTALLED_ACT}: "), (rc, err)
    for op, sub in (("started", "begin"), ("reconnect", "begin")):
        # a script, so that the call is not the front end's to settle
        fakehost.recording_script(f"{HOOKS}/qemu.d/win10/{op}/{sub}/10-x", ALONE + "/scripts")
        rc, out, err, _ = alone("win10", op, sub, OURS)
        assert (rc, out) == (0, "") and err.startswith(f"qemu-hook: cannot run {INSTALLED_ACT}: "), (rc, err)
    assert host.writes() == 0


def test_defers_whatever_it_cannot_settle(host):
    setup(fakehost.NATIVE_CONF + "[vm gaming]\nhandle = yes\n")
    cases = [("gaming", "prepare", "begin", PLAIN),        # named in the config
             ("other", "prepare", "begin", "<domain>"),    # malformed XML: qemu-hook-act says so
             ("other", "prepare", "begin", "")]            # no XML
    for vm, op, sub, xml in cases:
        handed_on(vm, op, sub, xml)
    rc, out, err = call("other", "prepare", "begin", "<domain>")
    assert rc == 2 and "domain XML on standard input" in err, err
    # a broken config: reported by qemu-hook-act, with its line
    setup("[gpu]\nadress = 0000:0d:00.0\n")
    handed_on("other", "prepare", "begin", OTHER)
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
    handed_on("other", "started", "begin", OTHER)
    settled("other", "stopped", "end", OTHER)
    assert call("win10", "prepare", "begin", OURS) == (0, "", "")
    assert host.driver(VEGA) == "vfio-pci"
    handed_on("win10", "release", "end", PLAIN)                     # a journal exists: not the front end's
    assert call("win10", "release", "end", PLAIN) == (0, "", "")
    assert host.driver(VEGA) == "amdgpu" and not os.path.exists("/run/qemu-hook/win10.state")


def test_options_go_to_qemu_hook_act(host):
    setup()
    # even for a call it would settle by itself without them
    handed_on("other", "started", "begin", OTHER, "--verbose")
    handed_on("win10", "prepare", "begin", OURS, "--dry-run")
    assert call("win10", "prepare", "begin", OURS) == (0, "", "")
    assert host.driver(VEGA) == "vfio-pci"
    host.clear_log()
    rc, out, err, _ = fakehost.run_hook([HOOK, "--dry-run", "win10", "release", "end", "-"], OURS)
    assert rc == 0 and "hand-back of win10:" in out and host.writes() == 0, (out, err)
    rc, out, err, _ = fakehost.run_hook([HOOK, "--version"])
    assert rc == 0 and out.startswith("qemu-hook "), out
    assert call("win10", "release", "end", OURS) == (0, "", "")
    assert host.driver(VEGA) == "amdgpu"


def test_without_kvm_conf(host):
    setup(conf=None)
    for op, sub in (("prepare", "begin"), ("release", "end")):
        settled("win10", op, sub, OURS)
        assert call("win10", op, sub, OURS) == (0, "", "")
    assert host.writes() == 0 and not os.path.exists("/run/qemu-hook/win10.state")


def test_a_config_warning_is_not_swallowed(host):
    """The original format warns about keys it does not know: qemu-hook-act says so, even for a
    VM that is not ours, so the front end does not settle such calls."""
    setup('VIRSH_GPU_VIDEO="0000:0d:00.0"\nVIRSH_GPU_AUDIO="0000:0d:00.1"\nMY_OWN_VARIABLE="1"\n')
    handed_on("other", "prepare", "begin", OTHER)
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
