#!/usr/bin/python3
"""`make bench`, beside the last release: the not-ours fast path of this tree's qemu-hook and of
0.1.0's, on the same emulated host (private mount namespace), called as libvirt does (no options,
bench.py's kvm.conf as the default one), the two binaries alternating run by run so that drift
(other work on the machine) falls on both alike; their peak RSS; and the libraries each binary
links (readelf -d NEEDED): libvirt is dlopened by qemu-hook-act for --dry-run alone.

0.1.0 is built from git (git archive of its commit into build/release-0.1.0/, with its own
Makefile), once: the directory is kept with the commit it was built from. If it cannot be built,
the section says why and is skipped. Numbers only; the exit status is non-zero only if a run
exited non-zero, said something, or wrote sysfs.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import bench  # noqa: E402
import elffacts  # noqa: E402
import fakehost  # noqa: E402
from bench import out, problems  # noqa: E402

RELEASE, RELEASE_COMMIT = "0.1.0", "fcb04c4"
RELEASE_DIR = os.path.join(REPO, "build", f"release-{RELEASE}")
STAMP = os.path.join(RELEASE_DIR, ".built-from")
N = 200
N_RSS = 5


def build_release():
    """The release's directory, built if it was not from the same commit; None (and why, printed)
    if it cannot be."""
    git = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", "-q", RELEASE_COMMIT + "^{commit}"],
                         capture_output=True, text=True)
    if git.returncode != 0:
        out(f"  skipped: commit {RELEASE_COMMIT} ({RELEASE}) is not in this clone (shallow?)")
        return None
    commit = git.stdout.strip()
    binaries = [os.path.join(RELEASE_DIR, b) for b in ("qemu-hook", "qemu-hook-act")]
    if os.path.exists(STAMP) and open(STAMP).read().strip() == commit and all(map(os.path.exists, binaries)):
        return RELEASE_DIR
    shutil.rmtree(RELEASE_DIR, ignore_errors=True)
    os.makedirs(RELEASE_DIR)
    # Its own Makefile's defaults, not whatever this make was given.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    archive = subprocess.Popen(["git", "-C", REPO, "archive", commit], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-f", "-", "-C", RELEASE_DIR], stdin=archive.stdout, capture_output=True,
                         text=True)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        out(f"  skipped: git archive {commit[:12]} into {RELEASE_DIR} failed: {tar.stderr.strip()[:300]}")
        return None
    make = subprocess.run(["make", "-C", RELEASE_DIR, "--no-print-directory", "qemu-hook", "qemu-hook-act"],
                          capture_output=True, text=True, env=env)
    if make.returncode != 0:
        why = (make.stderr.strip() or make.stdout.strip()).splitlines()[-5:]
        out(f"  skipped: {RELEASE} does not build here (make exited {make.returncode}):")
        for ln in why:
            out("    " + ln)
        return None
    with open(STAMP, "w") as f:
        f.write(commit + "\n")
    return RELEASE_DIR


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", subprocess.run(
        ["readelf", "-dW", path], capture_output=True, text=True, check=True).stdout)


def hardening(path):
    f = elffacts.facts(path)
    return ", ".join(f"{name} {'yes' if f[key] else 'no'}" for name, key in
                     (("PIE", "pie"), ("BIND_NOW", "bind_now"), ("stack protector", "stack_protector"))) + \
        f", {len(f['fortified'])} fortified functions"


def side_by_side(fronts, argv_tail, stdin_path):
    """N runs of each front end with ARGV_TAIL, alternating (A B, B A, ...); {label: [wall s]}."""
    times = {label: [] for label in fronts}
    for i in range(N):
        order = list(fronts.items()) if i % 2 == 0 else list(reversed(fronts.items()))
        for label, front in order:
            r = bench.spawn([front] + argv_tail, stdin_path, keep_stderr=True)
            times[label].append(r.wall)
            if r.rc != 0 or r.stderr:
                problems.append(f"{label} {' '.join(argv_tail)}: exit {r.rc}, stderr {r.stderr.strip()[:200]!r}")
    return times


def main():
    fakehost.enter_namespace()
    out(f"== the not-ours fast path beside the last release ({RELEASE}, {RELEASE_COMMIT}, built from git with its")
    out(f"   own Makefile in build/release-{RELEASE}/); {os.cpu_count()} CPUs, kernel {os.uname().release}")
    release = build_release()
    if not release:
        return 0
    fronts = {"this tree": bench.HOOK, RELEASE: os.path.join(release, "qemu-hook")}
    _, _, other, _ = bench.setup()
    with fakehost.Host() as h:
        fakehost.check_safe()
        h.delay(**bench.ZERO)
        h.clear_log()
        out(f"   the two alternate run by run, {N} runs each; wall times from Python (fork/exec/wait4)")
        for tail in (["other", "prepare", "begin", "-"], ["other", "started", "begin", "-"]):
            times = side_by_side(fronts, tail, other)
            out(f"  qemu-hook {' '.join(tail)}")
            for label, xs in times.items():
                out(f"    {label:<10} {bench.fmt_ms(xs)}")
            (a, xa), (b, xb) = times.items()
            out(f"    {a} - {b}: median {(statistics.median(xa) - statistics.median(xb)) * 1000:+.2f} ms, "
                f"min {(min(xa) - min(xb)) * 1000:+.2f} ms")
        writes = h.writes()
        out(f"  sysfs writes by all these runs: {writes}")
        if writes:
            problems.append(f"not-ours runs wrote sysfs {writes} times")

        out()
        out(f"== peak RSS of qemu-hook other prepare begin - (GNU time %M, median of {N_RSS} alternating runs)")
        rss = {label: [] for label in fronts}
        for i in range(N_RSS):
            for label, front in (fronts.items() if i % 2 == 0 else reversed(fronts.items())):
                kb = bench.maxrss_kb([front, "other", "prepare", "begin", "-"], other)
                if kb is not None:
                    rss[label].append(kb)
        if all(rss.values()):
            (a, ra), (b, rb) = ((label, statistics.median(kbs) / 1024) for label, kbs in rss.items())
            out(f"    {a:<10} {ra:6.2f} MB")
            out(f"    {b:<10} {rb:6.2f} MB")
            out(f"    {a} - {b}: {ra - rb:+.2f} MB")
        else:
            out("  /usr/bin/time is not installed")

    out()
    out("== shared libraries linked (readelf -d, NEEDED) and hardening (readelf, nm)")
    binaries = [(label, name, os.path.join(os.path.dirname(front), name))
                for name in ("qemu-hook", "qemu-hook-act") for label, front in fronts.items()]
    linked = False
    for label, name, path in binaries:
        libs = needed(path)
        linked = linked or any(lib.startswith("libvirt") for lib in libs)
        out(f"  {label:<10} {name:<14} {' '.join(libs)}")
        out(f"  {'':<10} {'':<14} {hardening(path)}")
    with open(os.path.join(REPO, "qemu-hook-act"), "rb") as f:
        dlopens = b"libvirt.so.0\0" in f.read()
    if linked:
        out("  libvirt IS among the NEEDED libraries above")
    else:
        out("  libvirt.so is NEEDED by neither front end (the binary libvirt runs for every call), nor by")
        out("  either qemu-hook-act" + (": this tree's names libvirt.so.0 for dlopen (--dry-run without XML only)"
                                        if dlopens else ""))

    out()
    if problems:
        out("PROBLEMS:")
        for p in problems:
            out("  - " + p)
        return 1
    out("every run exited 0, silent, without a sysfs write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
