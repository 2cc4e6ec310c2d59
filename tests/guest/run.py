#!/usr/bin/env python3
"""Boots the qemu-hook test guest (tests/guest/README.md) once per scenario group and reports.

    tests/guest/run.py [--san] [--list] [GROUP|SCENARIO ...]

Each group is one boot of build/guest/ under qemu TCG with the GPU-shaped devices; its
scenarios run in order inside that boot (tests/guest/lib/harness.py). The share of a boot is
build/guest-run/GROUP/ (GROUP-san/ with --san): in/ (the harness, the scenarios, the package or
binaries, plan.json), out/ (what the guest wrote), serial.log. Every boot has an outer deadline
enforced here: qemu is killed on expiry and what hung is reported. Exit 1 when any scenario
failed.

Nothing here runs qemu-hook or writes sysfs: the hook runs only inside the guest.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from lib import registry  # noqa: E402  (registers scenarios only; runs none of them)

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# Outer deadlines: from qemu's start to the guest unit's start (TESTING.md: 24-28 s; measured
# 37 s of guest uptime here), and the boot's own work around its scenarios (install, libvirtd
# restart, waiting for the desktop, power off).
UNIT_DEADLINE = 180
BOOT_OVERHEAD = 240
PER_SCENARIO_SLACK = 15


def qemu_argv(image, share, serial, firmware, vars_copy):
    argv = ["qemu-system-x86_64", "-nodefaults", "-machine", "q35", "-accel", "tcg",
            "-cpu", "max", "-smp", "2", "-m", "2048"]
    if firmware == "ovmf":
        argv += ["-drive", "if=pflash,format=raw,readonly=on,file=" + OVMF_CODE,
                 "-drive", "if=pflash,format=raw,file=" + vars_copy]
    argv += ["-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
             "-append", "root=/dev/vda rw console=ttyS0 intel_iommu=on iommu=pt",
             # The IOMMU before the devices, so they get their groups.
             "-device", "intel-iommu,caching-mode=on",
             # The big GPU (bochs-drm) and its HDMI audio (snd_hda_intel): one slot, one group.
             "-vga", "none", "-device", "VGA,bus=pcie.0,addr=03.0,multifunction=on",
             "-device", "intel-hda,bus=pcie.0,addr=03.1", "-device", "hda-duplex,audiodev=snd0",
             "-audiodev", "none,id=snd0",
             # The weak GPU, parked on vfio-pci at boot.
             "-device", "bochs-display,bus=pcie.0,addr=04.0",
             "-drive", "file=%s,if=virtio,format=raw" % os.path.join(image, "root.img"), "-snapshot",
             "-virtfs", "local,path=%s,mount_tag=hostshare,security_model=none" % share,
             "-display", "none", "-serial", "file:" + serial, "-no-reboot"]
    return argv


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(%s: none)\n" % path


def read_results(out):
    res = []
    try:
        with open(os.path.join(out, "results.jsonl")) as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        res.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return res


def fill_share(share, group, scenarios, san, bindir):
    """san: None, or the directory of the ASan/UBSan qemu-hook and qemu-hook-act."""
    if os.path.exists(share):
        shutil.rmtree(share)
    inp = os.path.join(share, "in")
    os.makedirs(os.path.join(share, "out"))
    os.makedirs(inp)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy(os.path.join(HERE, "guest_tests.py"), inp)
    shutil.copytree(os.path.join(HERE, "lib"), os.path.join(inp, "lib"), ignore=ignore)
    shutil.copytree(os.path.join(HERE, "scenarios"), os.path.join(inp, "scenarios"), ignore=ignore)
    debs = [] if bindir else sorted(glob.glob(os.path.join(TOP, "build", "deb", "qemu-hook_*_amd64.deb")))
    if debs:
        shutil.copy(debs[-1], inp)
        install = "package " + os.path.relpath(debs[-1], TOP)
    else:
        os.makedirs(os.path.join(inp, "bin"))
        for b in ("qemu-hook", "qemu-hook-act"):
            src = os.path.join(bindir or TOP, b)
            if not os.path.exists(src):
                sys.exit("guest: %s missing: run make first" % src)
            shutil.copy(src, os.path.join(inp, "bin", b))
        install = ("the binaries of %s" % bindir) if bindir else \
            "FALLBACK: no build/deb/qemu-hook_*_amd64.deb; the binaries of the repo root"
        install += " are copied to /usr/sbin and the hook linked"
    if san:
        os.makedirs(os.path.join(inp, "san"))
        for b in ("qemu-hook", "qemu-hook-act"):
            src = os.path.join(san, b)
            if not os.path.exists(src):
                sys.exit("guest: %s missing: make build/san/qemu-hook first" % src)
            shutil.copy(src, os.path.join(inp, "san", b))
        install += " + the ASan/UBSan binaries of %s bind-mounted over them" % os.path.relpath(san, TOP)
    with open(os.path.join(inp, "plan.json"), "w") as f:
        json.dump({"group": group, "scenarios": [s.meta() for s in scenarios]}, f, indent=1)
    return install


def boot(group, info, image, san, bindir, verbose):
    """One boot of the guest for group: returns {"results": [...], "times": {...}, "error"}."""
    scenarios = info["scenarios"]
    firmware = info["firmware"]
    # An ASan run of a group has its own share: it may run beside the plain one (make guest).
    share = os.path.join(TOP, "build", "guest-run", group + ("-san" if san else ""))
    install = fill_share(share, group, scenarios, san, bindir)
    out = os.path.join(share, "out")
    serial = os.path.join(share, "serial.log")
    vars_copy = os.path.join(share, "OVMF_VARS_4M.fd")
    if firmware == "ovmf":
        shutil.copy(OVMF_VARS, vars_copy)
    deadline = BOOT_OVERHEAD + sum(s.timeout + PER_SCENARIO_SLACK for s in scenarios)
    if os.environ.get("QEMU_HOOK_GUEST_DEADLINE"):      # to try the deadline itself
        deadline = int(os.environ["QEMU_HOOK_GUEST_DEADLINE"])
    print("guest: boot %s (%s, %d scenario%s, deadline %d s): %s" % (
        group, firmware, len(scenarios), "" if len(scenarios) == 1 else "s", deadline, install),
        flush=True)
    argv = qemu_argv(image, share, serial, firmware, vars_copy)
    if verbose:
        print("guest: " + " ".join(argv), flush=True)
    qlog = open(os.path.join(share, "qemu.log"), "w")
    t0 = time.monotonic()
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                         start_new_session=True)
    times = {"group": group, "firmware": firmware}
    error = None
    printed = 0
    try:
        while True:
            now = time.monotonic() - t0
            if "unit" not in times and os.path.exists(os.path.join(out, "unit-started")):
                times["unit"] = now
                print("guest: %s: the test unit started %.1f s after qemu" % (group, now), flush=True)
            results = read_results(out)
            for r in results[printed:]:
                print_result(r)
            printed = len(results)
            rc = q.poll()
            if rc is not None:
                if rc != 0:
                    error = "qemu exited %d (%s)" % (rc, tail(os.path.join(share, "qemu.log"), 5).strip())
                break
            if "unit" not in times and now > UNIT_DEADLINE:
                error = "the guest did not start its test unit within %d s" % UNIT_DEADLINE
                break
            if now > deadline:
                error = "the boot's deadline of %d s expired" % deadline
                break
            time.sleep(0.25)
    finally:
        if q.poll() is None:
            os.killpg(q.pid, signal.SIGKILL)
            q.wait()
        qlog.close()
    times["total"] = time.monotonic() - t0
    results = read_results(out)
    for r in results[printed:]:
        print_result(r)
    try:
        with open(os.path.join(out, "boot.json")) as f:
            times["guest"] = json.load(f)
    except (OSError, ValueError):
        times["guest"] = {}
    done = {r["name"] for r in results}
    for s in scenarios:
        if s.name not in done:
            r = {"name": s.name, "ok": False, "secs": 0,
                 "reason": "no result: " + (error or "qemu exited (status %s) before the guest "
                                            "ran it (the harness's exit: %s)" % (
                                                q.returncode, read_or(os.path.join(out, "harness.rc"), "none")))}
            results.append(r)
            print_result(r)
    if error:
        print("guest: %s: %s; qemu killed" % (group, error))
        print("--- last lines of the serial console (%s)\n%s" % (os.path.relpath(serial, TOP), tail(serial, 30)))
        print("--- last lines of the guest harness (out/progress.log)\n%s" % tail(os.path.join(out, "progress.log"), 20))
        for h in sorted(glob.glob(os.path.join(out, "scenarios", "*.hang"))):
            print("--- %s\n%s" % (os.path.relpath(h, TOP), tail(h, 200)))
        for s in scenarios:
            if s.name not in {r["name"] for r in read_results(out)}:
                log = os.path.join(out, "scenarios", s.name + ".log")
                if os.path.exists(log):
                    print("--- %s (unfinished)\n%s" % (os.path.relpath(log, TOP), tail(log, 60)))
    return {"results": results, "times": times, "error": error, "share": share}


def read_or(path, default):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def print_result(r):
    if r.get("ok"):
        print("ok %s (%.1f s)" % (r["name"], r.get("secs", 0)), flush=True)
    else:
        print("FAIL %s: %s" % (r["name"], r.get("reason")), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("select", nargs="*",
                    help="groups or scenarios to run (default: all but the bench group)")
    ap.add_argument("--san", action="store_true", default=os.environ.get("QEMU_HOOK_SAN") == "1",
                    help="bind-mount the ASan/UBSan build (build/san/) over the installed binaries")
    ap.add_argument("--san-dir", metavar="DIR", default=os.path.join(TOP, "build", "san"),
                    help="where the ASan/UBSan qemu-hook and qemu-hook-act are (with --san)")
    ap.add_argument("--list", action="store_true", help="list groups and scenarios")
    ap.add_argument("--image", default=os.path.join(TOP, "build", "guest"))
    ap.add_argument("--bin", metavar="DIR",
                    help="install qemu-hook and qemu-hook-act from DIR instead of the package")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    try:
        groups = registry.groups(a.select or None, with_bench=a.list)
    except ValueError as e:
        sys.exit("guest: %s" % e)
    if a.list:
        for name, info in groups.items():
            print("%s (%s)" % (name, info["firmware"]))
            for s in info["scenarios"]:
                print("  %-28s %4d s%s%s  %s" % (s.name, s.timeout, " dirty" if s.dirty else "",
                                                 " bench (only when named)" if s.bench else "", s.doc))
        return 0
    for f in ("root.img", "vmlinuz", "initrd.img"):
        if not os.path.exists(os.path.join(a.image, f)):
            sys.exit("guest: %s/%s missing: run make guest-image" % (a.image, f))
    if shutil.which("qemu-system-x86_64") is None or not os.path.exists(OVMF_CODE):
        sys.exit("guest: qemu-system-x86 and ovmf are needed (tests/deps.sh)")
    t0 = time.monotonic()
    boots = [boot(name, info, a.image, a.san_dir if a.san else None, a.bin, a.verbose) for name, info in groups.items()]
    failed = [(b, r) for b in boots for r in b["results"] if not r.get("ok")]
    for b, r in failed:
        log = os.path.join(b["share"], "out", "scenarios", r["name"] + ".log")
        if os.path.exists(log):
            print("\n--- guest output of %s (%s)" % (r["name"], os.path.relpath(log, TOP)))
            print(tail(log, 400).rstrip())
        hang = os.path.join(b["share"], "out", "scenarios", r["name"] + ".hang")
        if os.path.exists(hang):
            print("\n--- what hung in %s (%s)" % (r["name"], os.path.relpath(hang, TOP)))
            print(tail(hang, 300).rstrip())
    print("\nguest: summary")
    for b in boots:
        t, gt = b["times"], b["times"].get("guest", {})
        ok = sum(1 for r in b["results"] if r.get("ok"))
        unit = gt.get("unit_start_uptime")
        desk = gt.get("desktop_up_uptime")
        print("  boot %-12s %-7s %d/%d ok; test unit %s after qemu start (guest uptime %s), "
              "desktop up at uptime %s, boot total %.1f s%s" % (
                  t["group"], t["firmware"], ok, len(b["results"]),
                  "%.1f s" % t["unit"] if "unit" in t else "never",
                  "%.1f s" % unit if unit else "?", "%.1f s" % desk if desk else "never",
                  t["total"], "; " + b["error"] if b["error"] else ""))
    n = sum(len(b["results"]) for b in boots)
    print("guest: %d/%d scenarios ok in %d boot%s, %.1f s" % (
        n - len(failed), n, len(boots), "" if len(boots) == 1 else "s", time.monotonic() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
