"""qemu-hook's read-only views on the real system (issue 11 item 4): --status after a real
hand-over and after the hand-back, checked against the guest's own sysfs, journal, cgroups and
units, as root and as the desktop user; --dry-run without XML, which asks the real libvirtd."""
import glob
import json
import os
import re
import time

from lib import guest as g
from lib.registry import scenario

from scenarios.test_origin import vfio_holders
from scenarios.test_real import JOURNAL, STRACE_LOG, SYSFS_WRITE, cleanup, journal_steps, native

HOOK_BIN = "/usr/sbin/qemu-hook"
IN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))    # the share's in/
PID = re.compile(r"(?:^|, )(\d+) \(")


def status(*opts, user=None):
    """qemu-hook --status OPTS, as root or as user (runuser): (result, the JSON or None)."""
    argv = [HOOK_BIN, "--status"] + list(opts)
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    r = g.run(argv, timeout=60, env=dict(g.LIBVIRT_HOOK_ENV))
    try:
        parsed = json.loads(r.out) if "--json" in opts else None
    except ValueError:
        parsed = None
    return r, parsed


def nodes_of(addr):
    """The device nodes qemu-hook counts as the function's (host_func_nodes): its DRM, sound and
    framebuffer nodes, and its IOMMU group's /dev/vfio node while it is on vfio-pci."""
    sysdirs = [d for sub in ("drm", "sound", "graphics") for d in glob.glob(os.path.join(g.SYS_PCI, addr, sub, "*"))]
    sysdirs += glob.glob(os.path.join(g.SYS_PCI, addr, "sound", "card*", "*"))
    nodes = [n for d in sysdirs for n in (os.path.join("/dev/dri", os.path.basename(d)),
                                         os.path.join("/dev/snd", os.path.basename(d)),
                                         os.path.join("/dev", os.path.basename(d)))
             if os.path.exists(os.path.join(d, "dev")) and os.path.exists(n)]
    if g.pci_driver(addr) == "vfio-pci" and g.iommu_group(addr):
        nodes.append("/dev/vfio/" + g.iommu_group(addr))
    return sorted(set(nodes))


def holder_pids(addr):
    return {h["pid"] for h in g.holders(nodes_of(addr))}


def dm_names():
    """display-manager.service and the unit it is (greetd.service): --status names the latter."""
    dm = g.unit_properties([g.DISPLAY_MANAGER], ("Id",)).get(g.DISPLAY_MANAGER, {}).get("Id")
    return {g.DISPLAY_MANAGER, dm}


def text_matches_json(t, text, js, what):
    """Every value of the JSON is in the text as `key: value` ("-" for an empty one)."""
    missing = []
    for h in js.get("hand-overs", []):
        missing += ["%s: %s" % (k, v or "-") for k, v in h.items() if "%s: %s" % (k, v or "-") not in text]
    for f in js.get("functions", []):
        if "%s (%s)" % (f["address"], f["role"]) not in text:
            missing.append("%s (%s)" % (f["address"], f["role"]))
        # holders change between two calls (a process opening a node); the rest may not
        missing += ["%s: %s" % (k, v or "-") for k, v in f.items()
                    if k != "holders" and "%s: %s" % (k, v or "-") not in text]
    for sec in ("cpus", "desktop"):
        missing += ["%s: %s" % (k, v) for k, v in js.get(sec, {}).items() if "%s: %s" % (k, v) not in text]
    t.check(not missing, "%s: the text says what the JSON says, missing: %s" % (what, missing))


def check_functions(t, js, what):
    """The functions of --status --json against the guest's sysfs: drivers by their links,
    driver_override, and the holders by /proc."""
    funcs = {f["address"]: f for f in js.get("functions", [])}
    t.check(sorted(funcs) == sorted(g.FUNCTIONS), "%s: the functions are %s: %s" % (what, g.FUNCTIONS, sorted(funcs)))
    for addr in g.FUNCTIONS:
        f = funcs.get(addr, {})
        role = "secondary" if addr == g.WEAK_GPU else "GPU"
        t.check(f.get("role") == role, "%s: %s is the %s: %s" % (what, addr, role, f.get("role")))
        t.check(f.get("driver") == (g.pci_driver(addr) or ""), "%s: %s's driver is its sysfs link's, %r: %r"
                % (what, addr, g.pci_driver(addr), f.get("driver")))
        t.check(f.get("driver_override") == (g.driver_override(addr) or ""), "%s: %s's driver_override %r: %r"
                % (what, addr, g.driver_override(addr), f.get("driver_override")))
    return funcs


def check_holders(t, js_call, what):
    """The holders --status names are the processes /proc shows holding the function's nodes
    (read again until both agree: a desktop opening a node between the two reads is no error)."""
    last = {}

    def agree():
        r, js = js_call()
        funcs = {f["address"]: f for f in (js or {}).get("functions", [])}
        for addr in g.FUNCTIONS:
            seen = set(map(int, PID.findall(funcs.get(addr, {}).get("holders", ""))))
            last[addr] = (seen, holder_pids(addr))
        return all(a == b for a, b in last.values())
    try:
        g.wait_for(agree, 10, "holders", interval=0.5)
    except g.Timeout:
        t.check(False, "%s: the holders --status names are those /proc shows (pids by --status, by /proc): %s"
                % (what, last))
    return last


def check_cpus(t, js, restricted, what):
    allowed = g.allowed_cpus()
    for unit in g.CPU_CGROUPS:
        t.check(js.get("cpus", {}).get(unit) == (allowed.get(unit) or "all"),
                "%s: cpus %s is systemd's AllowedCPUs %r: %r" % (what, unit, allowed.get(unit), js.get("cpus", {}).get(unit)))
        t.check(g.cpuset(unit) == restricted, "%s: %s's cpuset.cpus is %r: %r" % (what, unit, restricted, g.cpuset(unit)))


def check_desktop(t, js, what):
    desktop = js.get("desktop", {})
    dm = [k for k in desktop if k in dm_names()]
    t.check(dm and desktop[dm[0]] == g.unit_state(g.DISPLAY_MANAGER) == "active",
            "%s: the display manager (%s) is active, as systemd says: %s" % (what, dm_names(), desktop))
    users = g.unit_states(g.AUDIO_UNITS, user=True)
    for u in g.AUDIO_UNITS:
        key = "%s: %s" % (g.DESK_USER, u)
        if key in desktop:
            t.check(desktop[key] == users[u], "%s: %s is %r as systemd --user says: %r" % (what, key, users[u],
                                                                                         desktop[key]))


def check_as_user(t, held):
    """--status as the desktop user, who may read neither /run/qemu-hook (root's, 0700) nor the
    open files of other users' processes (the VM's qemu runs as root): exit 0, what it can read
    as root's, and what it cannot read said, never "nothing is handed over"."""
    others = sorted({p for addr in (g.GPU, g.GPU_AUDIO, g.WEAK_GPU) for p in held.get(addr, (set(), set()))[1]
                     if os.path.exists("/proc/%d" % p) and os.stat("/proc/%d" % p).st_uid != g.DESK_UID})
    own = sorted({p for addr in held for p in held[addr][1]
                  if os.path.exists("/proc/%d" % p) and os.stat("/proc/%d" % p).st_uid == g.DESK_UID})
    t.log("holders of other users: %s, of %s: %s" % (others, g.DESK_USER, own))
    u, _ = status(user=g.DESK_USER)
    t.section("qemu-hook --status as %s (handed over)" % g.DESK_USER, u.describe())
    t.data["status_desk"] = {"rc": u.rc, "out": u.out, "err": u.err}
    t.check(u.ok, "as %s --status exits 0 (exit %s)" % (g.DESK_USER, u.rc))
    t.check("nothing is handed over" not in u.out, "as %s it does not claim that nothing is handed over"
            % g.DESK_USER)
    t.check("%s: handed over" % g.DOMAIN in u.out or
            "(cannot be read: /run/qemu-hook: Permission denied" in u.out,
            "as %s the hand-over is listed, or it says /run/qemu-hook cannot be read" % g.DESK_USER)
    t.check(not others or "(holders: the open files of " in u.out,
            "as %s, with holders of other users (%s), it says it could not read every process" % (g.DESK_USER, others))

    u, ujs = status("--json", user=g.DESK_USER)
    t.section("qemu-hook --status --json as %s (handed over)" % g.DESK_USER, u.describe())
    t.data["status_desk_json"] = {"rc": u.rc, "out": u.out, "err": u.err}
    if not t.check(u.ok and ujs is not None, "as %s --status --json exits 0 with JSON (exit %s): %r"
                   % (g.DESK_USER, u.rc, u.out[:300])):
        return
    what = "as " + g.DESK_USER
    text_matches_json(t, status(user=g.DESK_USER)[0].out, ujs, what)
    funcs = check_functions(t, ujs, what)
    check_desktop(t, ujs, what)
    check_cpus(t, ujs, "0", what)
    unreadable = ujs.get("unreadable", [])
    t.check([x.get("vm") for x in ujs["hand-overs"]] == [g.DOMAIN] or
            "hand-overs: /run/qemu-hook: Permission denied" in unreadable,
            "%s: the hand-over is listed, or unreadable says /run/qemu-hook: %s" % (what, unreadable))
    t.check(not others or any(x.startswith("holders: the open files of ") for x in unreadable),
            "%s: unreadable names the holders it could not see (%s): %s" % (what, others, unreadable))
    seen = {p for f in funcs.values() for p in map(int, PID.findall(f.get("holders", "")))}
    t.check(set(own) <= seen, "%s: the holders it can read (its own processes %s) are named: %s" % (what, own, seen))


@scenario(timeout=420)
def status_after_hand_over(t):
    """virsh start gaming, then qemu-hook --status and --status --json (as root and as the user
    desk) show the hand-over, its journal and steps, the GPU's functions on vfio-pci held by the
    VM's qemu, the weak GPU on bochs-drm, the CPUs and the desktop as the real sysfs, cgroups and
    systemd have them; after virsh destroy, nothing handed over and 03.0 back on bochs-drm."""
    conf = native(timeout="20s", extra="cpus = 0")
    g.write_kvm_conf(conf)
    t.section("kvm.conf", conf)
    try:
        r, js = status("--json")
        t.check(r.ok and js is not None and js["hand-overs"] == [], "before: exit 0, nothing handed over "
                "(exit %s): %s" % (r.rc, r.out[:400]))
        if js:
            check_functions(t, js, "before")

        r = g.run(["virsh", "start", g.DOMAIN], timeout=180)
        t.section("virsh start", r.describe())
        if not t.check(r.ok, "virsh start exits 0 (exit %s)" % r.rc):
            return
        t.wait_for(lambda: g.desktop_on(g.WEAK_GPU, audio=None), 90, "the desktop on the weak GPU",
                   report=g.desktop_report)
        t.wait_for(vfio_holders, 30, "the nested qemu holds /dev/vfio/%s" % g.iommu_group(g.GPU))

        text, _ = status()
        t.section("qemu-hook --status (root, handed over)", text.describe())
        r, js = status("--json")
        t.section("qemu-hook --status --json (root, handed over)", r.describe())
        t.data["status_text"] = text.out
        t.data["status_json"] = r.out
        if not t.check(text.ok and r.ok and js is not None, "--status and --status --json exit 0 with JSON "
                       "(exit %s, %s)" % (text.rc, r.rc)):
            return
        t.check(not text.err.strip() and not r.err.strip(), "as root nothing on stderr: %r %r" % (text.err, r.err))
        text_matches_json(t, text.out, js, "handed over")

        # The hand-over, against its journal file.
        steps = journal_steps()
        done = [s[0] for s in steps if s[5] == "done"]
        t.section("journal steps", "\n".join(map(str, steps)))
        hos = js["hand-overs"]
        t.check([h.get("vm") for h in hos] == [g.DOMAIN], "one hand-over, of %s: %s" % (g.DOMAIN, hos))
        h = hos[0] if hos else {}
        t.check(h.get("state") == "handed over", "its state is \"handed over\": %r" % h.get("state"))
        t.check(h.get("journal") == JOURNAL and os.path.exists(JOURNAL), "its journal is %s: %r" % (JOURNAL, h.get("journal")))
        t.check(done and h.get("steps done") == str(len(done)), "steps done: the journal's %d done steps: %r"
                % (len(done), h.get("steps done")))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(JOURNAL).st_mtime)) \
            if os.path.exists(JOURNAL) else None
        t.check(h.get("last written") == since, "last written: the journal's mtime %r: %r" % (since, h.get("last written")))
        # What a release would undo: every done step, last first, each under its journal number.
        left = [int(n) for n in re.findall(r"(?:^|; )(\d+)\. ", h.get("left to undo", ""))]
        t.check(left == done[::-1], "left to undo: the done steps %s in reverse: %s" % (done[::-1], left))
        t.check(not [s for s in steps if s[5] not in ("done", "skipped")],
                "the journal has nothing half done (every step done or skipped): %s" % steps)
        for addr in (g.GPU, g.GPU_AUDIO):
            t.check("move %s from vfio-pci to " % addr in h.get("left to undo", ""),
                    "left to undo moves %s back from vfio-pci: %s" % (addr, h.get("left to undo")))

        funcs = check_functions(t, js, "handed over")
        for addr, driver in ((g.GPU, "vfio-pci"), (g.GPU_AUDIO, "vfio-pci"), (g.WEAK_GPU, "bochs-drm")):
            t.check(funcs.get(addr, {}).get("driver") == driver == g.pci_driver(addr),
                    "%s on %s: %r" % (addr, driver, funcs.get(addr, {}).get("driver")))
        held = check_holders(t, lambda: status("--json"), "handed over")
        qemu = {v["pid"] for v in vfio_holders()}
        t.check(qemu and qemu <= held.get(g.GPU, (set(), set()))[0],
                "03.0's holders include the VM's qemu %s: %s" % (qemu, held.get(g.GPU)))
        t.check(re.search(r"\d+ \(qemu-system-x86, unit [^)]+\) holding /dev/vfio/%s" % g.iommu_group(g.GPU),
                          funcs.get(g.GPU, {}).get("holders", "")),
                "03.0's holders name qemu, its unit and /dev/vfio/%s: %r" % (g.iommu_group(g.GPU),
                                                                            funcs.get(g.GPU, {}).get("holders")))
        check_cpus(t, js, "0", "handed over")
        check_desktop(t, js, "handed over")

        t.check(js.get("unreadable") == [], "as root everything was read: %s" % js.get("unreadable"))
        check_as_user(t, held)

        d = g.run(["virsh", "destroy", g.DOMAIN], timeout=180)
        t.section("virsh destroy", d.describe())
        t.check(d.ok, "virsh destroy exits 0 (exit %s)" % d.rc)
        t.wait_for(lambda: g.desktop_on(g.GPU), 90, "the desktop back on the big GPU", report=g.desktop_report)
        text, _ = status()
        t.section("qemu-hook --status (root, handed back)", text.describe())
        r, js = status("--json")
        t.data["status_text_after"] = text.out
        if not t.check(text.ok and r.ok and js is not None, "after: exit 0 with JSON (exit %s, %s)" % (text.rc, r.rc)):
            return
        text_matches_json(t, text.out, js, "handed back")
        t.check(js.get("unreadable") == [], "after: as root everything was read: %s" % js.get("unreadable"))
        t.check(js["hand-overs"] == [] and "(none: nothing is handed over)" in text.out and not os.path.exists(JOURNAL),
                "after: nothing handed over, no journal: %s" % js["hand-overs"])
        funcs = check_functions(t, js, "handed back")
        t.check(funcs.get(g.GPU, {}).get("driver") == "bochs-drm", "after: 03.0 on bochs-drm: %r"
                % funcs.get(g.GPU, {}).get("driver"))
        check_holders(t, lambda: status("--json"), "handed back")
        check_cpus(t, js, None, "handed back")
        check_desktop(t, js, "handed back")
        t.expect_state(t.boot, g.snapshot(), "after virsh destroy, compared with the boot state")
    finally:
        if g.domain_state() == "running":
            g.run(["virsh", "destroy", g.DOMAIN], timeout=120)
        cleanup()


def plain_act():
    """Under --san the installed binaries are the ASan build. Not for a call that loads libvirt:
    libvirt opened with dlopen() calls xdr functions through ASan's interceptors, whose real
    targets were looked up before libtirpc was loaded (NULL: a SEGV in virNetMessageEncodeHeader,
    tests/integration/test_libvirt.py). Such a call gets the plain qemu-hook-act (a run with
    options goes straight to it): from the share's binaries, or out of the share's package.
    None when the installed build is the plain one."""
    if not os.path.exists(os.path.join(IN, "san", "qemu-hook")):
        return None
    act = os.path.join(IN, "bin", "qemu-hook-act")
    if os.path.exists(act):
        return act
    debs = sorted(glob.glob(os.path.join(IN, "*.deb")))
    if not debs:
        return None
    g.run(["dpkg-deb", "-x", debs[-1], "/tmp/plain-deb"], timeout=60)
    act = "/tmp/plain-deb/usr/libexec/qemu-hook/qemu-hook-act"
    return act if os.path.exists(act) else None


def traced(argv):
    """argv under strace with stdin /dev/null: (result, sysfs files opened for writing, every
    file opened)."""
    r = g.run(["strace", "-f", "-qq", "-e", "trace=openat", "-e", "signal=none", "-o", STRACE_LOG,
               "env", "--default-signal"] + argv, timeout=90,
              env=dict(g.LIBVIRT_HOOK_ENV, ASAN_OPTIONS="detect_leaks=0"))
    with open(STRACE_LOG) as f:
        opened = f.read()
    return r, [m.group(1) for m in map(SYSFS_WRITE.search, opened.splitlines()) if m], opened


@scenario(timeout=180)
def dry_run_asks_libvirt(t):
    """qemu-hook --dry-run gaming prepare begin with nothing on stdin reads gaming's XML from the
    real libvirtd (libvirt.so loaded, the hand-over of 03.0 and 03.1 printed) and changes nothing:
    no sysfs write, no journal, the state as before; a VM libvirt does not know: exit non-zero,
    the VM and libvirt's own error named."""
    g.write_kvm_conf(g.ORIGIN_KVM_CONF)
    act = plain_act()
    binary = act or HOOK_BIN
    if act:
        t.log("ASan build installed: --dry-run without XML runs the plain %s (ASan's xdr interceptors "
              "crash in the dlopened libvirt, tests/integration/test_libvirt.py)" % act)
    t.data["binary"] = binary
    try:
        before = g.snapshot()
        r, writes, opened = traced([binary, "--dry-run", g.DOMAIN, "prepare", "begin"])
        t.section("--dry-run %s prepare begin </dev/null" % g.DOMAIN, r.describe())
        t.data["dry_run"] = {"rc": r.rc, "secs": round(r.secs, 2), "out": r.out}
        t.check(r.ok, "exit 0 (exit %s)" % r.rc)
        t.check("libvirt.so" in opened, "libvirt.so was loaded (the XML came from libvirt's API)")
        t.check("hand-over of %s:" % g.DOMAIN in r.out, "the hand-over plan of %s is printed" % g.DOMAIN)
        for addr, driver in ((g.GPU, "bochs-drm"), (g.GPU_AUDIO, "snd_hda_intel")):
            t.check("move %s from %s to vfio-pci" % (addr, driver) in r.out,
                    "the plan moves %s from %s to vfio-pci" % (addr, driver))
        t.check(not writes, "not one sysfs write: %s" % writes)
        t.check(not os.path.exists(JOURNAL), "no journal was written")
        t.expect_state(before, g.snapshot(), "after --dry-run, compared with before")

        r, writes, opened = traced([binary, "--dry-run", "nosuchvm", "prepare", "begin"])
        t.section("--dry-run nosuchvm prepare begin </dev/null", r.describe())
        t.data["dry_run_unknown"] = {"rc": r.rc, "err": r.err}
        t.check(r.rc not in (0, None), "a VM libvirt does not know: exit non-zero (exit %s)" % r.rc)
        t.check("nosuchvm: reading the domain XML from libvirt:" in r.err,
                "the message names the VM and what was being done: %r" % r.err)
        # libvirt's own words: "Domain not found: no domain with matching name 'nosuchvm'"
        t.check("Domain not found" in r.err and "'nosuchvm'" in r.err, "libvirt's error is in it: %r" % r.err)
        t.check(r.err.count("Domain not found") == 1, "said once, by qemu-hook (not again by libvirt's default "
                "error handler): %r" % r.err)
        t.check(not writes and not r.out.strip(), "nothing written, nothing planned: %s %r" % (writes, r.out))
        t.expect_state(before, g.snapshot(), "after the unknown VM, compared with before")
    finally:
        cleanup()
