#!/usr/bin/env python3
"""The real-kernel bench (issue 9, item 5): boots the test guest for the group "bench"
(tests/guest/scenarios/test_zbench.py, through tests/guest/run.py) and prints its numbers.

    tests/guest/bench.py [--bin DIR] [--image DIR] [--results FILE]

Per direction: the hook's wall time and its split (sysfs writes, systemd jobs, udev/DRM,
holders, scripts, own overhead and its share), `virsh start`/`virsh destroy` with qemu-hook,
with /bin/true as the hook and with no hook, and the desktop's downtime. No pass/fail on the
numbers: exit 1 only when the run itself broke (the boot, a virsh command, the desktop).
--results FILE prints an earlier run's build/guest-run/bench/out/results.jsonl without booting.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
SCENARIO = "bench_start_destroy"
RESULTS = os.path.join(TOP, "build", "guest-run", "bench", "out", "results.jsonl")
PART = re.compile(r"([A-Za-z/]+) [0-9.]+ ms")


def load(path):
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("name") == SCENARIO:
                    return r
    except OSError:
        pass
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def samples(xs, spec="%.2f"):
    return " ".join(fmt(x, spec) for x in xs) if xs else "-"


def print_table(r):
    d = r.get("data") or {}
    h = d.get("with_hook") or {}
    n = d.get("rounds")
    print("qemu-hook on the real kernel (tests/guest: Debian guest under qemu TCG, 2 vCPUs), "
          "origin kvm.conf, domain gaming: medians of %s rounds (virsh start, then virsh destroy)"
          % n)
    if d.get("hook"):
        print("hook: %s" % d["hook"])

    print("\nThe hook per direction, from its journal message (ms; own = wall - the rest):")
    splits = {k: [s for s in h.get("hand_" + k, []) if s] for k in ("over", "back")}
    cols = []
    for s in splits["over"] + splits["back"]:
        for name in PART.findall(s.get("message", "").split("(", 1)[-1]):
            if name not in cols:
                cols.append(name)
    print("  %-24s %9s" % ("direction", "wall") + "".join(" %9s" % c for c in cols) + " %7s" % "own %")
    for k, what in (("over", "hand-over (virsh start)"), ("back", "hand-back (virsh destroy)")):
        ss = splits[k]
        row = "  %-24s %9s" % (what, fmt(med(s.get("wall_ms") for s in ss), "%.1f"))
        row += "".join(" %9s" % fmt(med(s.get(c + "_ms") for s in ss), "%.1f") for c in cols)
        row += " %7s" % fmt(med(s.get("own_pct") for s in ss), "%.1f")
        print(row + "   (n=%d)" % len(ss))
    print("  own target: under 10 % of the wall time")

    print("\nvirsh (s; median, then every sample):")
    print("  %-36s %8s %8s   %s" % ("", "start", "destroy", "samples start | destroy"))
    for key, what in (("with_hook", "with qemu-hook"), ("true_hook", "hook /bin/true (*)"),
                      ("no_hook", "no hook (*)")):
        v = d.get(key) or {}
        print("  %-36s %8s %8s   %s | %s" % (
            what, fmt(med(v.get("start_secs", []))), fmt(med(v.get("destroy_secs", []))),
            samples(v.get("start_secs")), samples(v.get("destroy_secs"))))
    hover = med(s.get("wall_ms") for s in splits["over"])
    hback = med(s.get("wall_ms") for s in splits["back"])
    if hover is not None and h.get("start_secs"):
        print("  with qemu-hook, the hook's hand-over is %.2f s of virsh start, its hand-back "
              "%s s of virsh destroy" % (hover / 1000, fmt(hback / 1000 if hback is not None else None)))
    print("  (*) measured last, with the desktop stopped: without qemu-hook libvirt's "
          "managed='yes' detaches the GPU itself\n      (unbinding snd_hda_intel under WirePlumber "
          "would block libvirtd), so the desktop is broken in that part")

    print("\nDesktop downtime (s): from the display manager leaving active (its journal line) or "
          "weston holding no DRM card,\nwhichever is first, until weston holds the new GPU's card "
          "with the display manager active:")
    for k, what in (("start", "virsh start (to 04.0)"), ("destroy", "virsh destroy (to 03.0)")):
        xs = h.get("downtime_%s_secs" % k, [])
        back = h.get("desktop_back_after_%s_secs" % k, [])
        print("  %-24s %6s   samples %s; back %s s after the command was issued" % (
            what, fmt(med(xs)), samples(xs), fmt(med(back))))
    print("  weston's cards polled every %s ms (measured period %s ms: the resolution)" % (
        fmt(d.get("poll_interval_ms"), "%.0f"), fmt(med(h.get("poll_period_ms", [])), "%.0f")))
    if "desktop_restored" in d:
        print("  after the bench the desktop %s" % (
            "came back on the big GPU" if d["desktop_restored"] else "did not come back (see the log)"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--results", metavar="FILE", help="print FILE (a results.jsonl) without booting")
    ap.add_argument("--bin", metavar="DIR", help="passed to run.py: binaries of DIR, not the package")
    ap.add_argument("--image", metavar="DIR", help="passed to run.py")
    a = ap.parse_args()
    rc = 0
    path = a.results or RESULTS
    if not a.results:
        argv = [sys.executable, os.path.join(HERE, "run.py"), "bench"]
        if a.bin:
            argv += ["--bin", a.bin]
        if a.image:
            argv += ["--image", a.image]
        if os.path.exists(path):
            os.unlink(path)
        rc = subprocess.call(argv)
        print()
    r = load(path)
    if r is None:
        print("guest bench: no result of %s in %s: the run broke (run.py exit %s)" % (
            SCENARIO, os.path.relpath(path, TOP), rc))
        return 1
    print_table(r)
    if not r.get("ok"):
        print("\nguest bench: the run broke: %s" % r.get("reason"))
        return 1
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
