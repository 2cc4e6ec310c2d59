#!/usr/bin/python3
"""`make bench`: timings of the real qemu-hook on the emulated host (private mount namespace).

Wall times are measured around the process from Python (fork+exec+wait4, stdin from a file,
stdout/stderr to files): the same helper timing /bin/true gives the spawn overhead included in
every number. The targets are printed beside the numbers; nothing here passes or fails on them.
The exit status is non-zero only if a hook run exited non-zero or a cycle did not restore the host.
"""
import json
import re
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import busmock  # noqa: E402
import fakehost  # noqa: E402
from fakehost import VEGA, VEGA_AUDIO, R5, R5_AUDIO  # noqa: E402

HOOK = os.path.join(REPO, "qemu-hook")
DEFAULT_CONF = "/etc/libvirt/hooks/kvm.conf"
USER = "liss"
REALISTIC = {"probe": 40, "drm": 60, "unbind": 10}
ZERO = {"probe": 0, "drm": 0, "unbind": 0}
N_FAST = 200
N_CYCLES = 20
N_REAL = 10
problems = []


def out(line=""):
    print(line, flush=True)


class Run:
    __slots__ = ("rc", "wall", "stderr")


def spawn(argv, stdin_path, keep_stderr=False):
    """fork/exec ARGV with the hook's scrubbed environment, stdin from STDIN_PATH; wall time
    around the process."""
    fakehost.check_safe()       # before every run, outside the timed part
    err = open(os.path.join(fakehost.SCRATCH, "bench.stderr"), "w+")
    with open(stdin_path) as fin:
        env = fakehost.hook_env()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=fin, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status = os.waitpid(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)   # reaped here: keep Popen quiet
    r = Run()
    r.rc, r.wall = p.returncode, wall
    if keep_stderr:
        err.seek(0)
        r.stderr = err.read()
    err.close()
    return r


def maxrss_kb(argv, stdin_path):
    """Peak RSS (KB) of ARGV measured by GNU time. Not ru_maxrss from Python's wait4: the child
    is vforked from Python and exec() carries the parent's RSS high-water mark into the child's
    (/bin/true then shows ~10 MB); GNU time's own pre-exec RSS is ~1 MB, shown as a baseline."""
    if not os.access("/usr/bin/time", os.X_OK):
        return None
    res = os.path.join(fakehost.SCRATCH, "time.out")
    with open(stdin_path) as fin:
        rc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", res] + argv, stdin=fin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fakehost.hook_env()).returncode
    if rc != 0:
        problems.append(f"{' '.join(argv)} under /usr/bin/time exited {rc}")
    with open(res) as f:
        return int(f.read().split()[-1])


def fmt_ms(xs):
    ms = sorted(x * 1000 for x in xs)
    return f"median {statistics.median(ms):7.2f} ms   min {ms[0]:7.2f}   max {ms[-1]:7.2f}   (n={len(ms)})"


def line(label, xs, target=""):
    out(f"  {label:<34} {fmt_ms(xs)}" + (f"   target {target}" if target else ""))


def check_rc(runs, what):
    bad = [r.rc for r in runs if r.rc != 0]
    if bad:
        problems.append(f"{what}: {len(bad)} of {len(runs)} runs exited non-zero ({sorted(set(bad))})")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def hyperfine_has_input(exe):
    return "--input" in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout


def hyperfine(argv, stdin_path, runs):
    """hyperfine -N inside this namespace, with the hook's environment; (median, min, max) s.
    hyperfine < 1.16 has no --input: then `sh -c 'exec ARGV < FILE'`, and the caller times
    /bin/true the same way for the baseline."""
    exe = shutil.which("hyperfine")
    if not exe:
        return None
    js = os.path.join(fakehost.SCRATCH, "hyperfine.json")
    if hyperfine_has_input(exe):
        opts, cmd = ["--input", stdin_path], " ".join(argv)
    else:
        opts, cmd = [], "sh -c 'exec " + " ".join(argv) + " < " + stdin_path + "'"
    p = subprocess.run(["env", "-i"] + [f"{k}={v}" for k, v in fakehost.hook_env().items()]
                       + [exe, "-N", "--runs", str(runs), "--warmup", "5"] + opts
                       + ["--export-json", js, "--style", "none", cmd],
                       capture_output=True, text=True)
    if p.returncode != 0:
        problems.append(f"hyperfine failed ({p.returncode}): {p.stderr.strip()[:300]}")
        return None
    r = json.load(open(js))["results"][0]
    return r["median"], r["min"], r["max"]


STEP = re.compile(r"^qemu-hook: (?:done|undone) (\d+)/\d+ (.*) \(([\d.]+) ms\)$")


def steps(text, into):
    """Per-step durations of a --verbose run added to INTO {(n, what): [ms]}; returns their sum."""
    total = 0.0
    for ln in text.splitlines():
        m = STEP.match(ln)
        if m:
            into.setdefault((int(m.group(1)), m.group(2)), []).append(float(m.group(3)))
            total += float(m.group(3))
    return total


def cycles(h, conf, xml_path, n, vm):
    """N hand-over + hand-back cycles (--verbose, for the per-step times), then one more under
    GNU time for the peak RSS; each cycle must end with the initial sysfs snapshot."""
    before = h.snapshot()
    r = {"over": [], "back": [], "wo": [], "wb": [], "rss": [], "steps_over": {}, "steps_back": {},
         "out_over": [], "out_back": [], "late": []}
    args = [HOOK, "--config", conf, "--verbose", vm]
    for i in range(n + 1):
        last = i == n
        h.clear_log()
        if last:
            r["rss"].append(maxrss_kb(args + ["prepare", "begin", "-"], xml_path))
        else:
            a = spawn(args + ["prepare", "begin", "-"], xml_path, keep_stderr=True)
            r["over"].append(a)
            r["out_over"].append(a.wall * 1000 - steps(a.stderr, r["steps_over"]))
        r["wo"].append(h.writes())
        h.clear_log()
        if last:
            r["rss_back"] = maxrss_kb(args + ["release", "end", "-"], xml_path)
        else:
            b = spawn(args + ["release", "end", "-"], xml_path, keep_stderr=True)
            r["back"].append(b)
            r["out_back"].append(b.wall * 1000 - steps(b.stderr, r["steps_back"]))
        r["wb"].append(h.writes())
        t0 = time.monotonic()
        same = h.snapshot() == before
        if not same:
            while h.snapshot() != before and time.monotonic() - t0 < 5:   # asynchronous probe/DRM
                time.sleep(0.002)
            same = h.snapshot() == before
            r["late"].append(time.monotonic() - t0)
        if not same:
            problems.append(f"cycle {i + 1} ({vm}): host not restored even 5 s after release end")
            break
    check_rc(r["over"], f"prepare begin ({vm})")
    check_rc(r["back"], f"release end ({vm})")
    return r


def breakdown(label, per_step, outside):
    out(f"  {label}: median per step (ms)")
    for (n, what), ms in sorted(per_step.items(), key=lambda kv: kv[0][0]):
        out(f"    {n:>2}. {what:<62} {statistics.median(ms):7.2f}")
    out(f"    {'outside the steps (exec, config, plan, journal, spawn)':<66} {statistics.median(outside):7.2f}")


def setup():
    """The bench's kvm.conf (original format), also as the default one, and the stdin files:
    (conf, win10.xml, other.xml, empty). Inside the namespace."""
    scratch = fakehost.SCRATCH
    pw = busmock.ensure_user(USER, scratch)
    conf = write(os.path.join(scratch, "kvm.conf"),
                 f'VIRSH_GPU_VIDEO="{VEGA}"\nVIRSH_GPU_AUDIO="{VEGA_AUDIO}"\n'
                 f'VIRSH_SECONDARY_GPU_VIDEO="{R5}"\nVIRSH_SECONDARY_GPU_AUDIO="{R5_AUDIO}"\n'
                 f'VIRSH_USER="{USER}"\nVIRSH_USER_DBUS_ADDR="unix:path=/run/user/{pw.pw_uid}/bus"\n')
    os.chown(conf, 0, 0)
    os.chmod(conf, 0o644)
    # The calls of the fast path come as libvirt makes them: no options, the default kvm.conf
    # (in the namespace's own /etc/libvirt).
    os.makedirs(os.path.dirname(DEFAULT_CONF), exist_ok=True)
    shutil.copy(conf, DEFAULT_CONF)
    ours = write(os.path.join(scratch, "win10.xml"), fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO]))
    other = write(os.path.join(scratch, "other.xml"), fakehost.domain_xml("other", ["0000:05:00.0"]))
    empty = write(os.path.join(scratch, "empty"), "")
    return conf, ours, other, empty


def main():
    fakehost.enter_namespace()
    scratch = fakehost.SCRATCH
    conf, ours, other, empty = setup()

    out(f"qemu-hook bench: {HOOK} on the emulated host ({os.cpu_count()} CPUs, "
        f"kernel {os.uname().release}); original kvm.conf format")
    out("Python wall times include fork/exec/wait4 from Python; the /bin/true line is that overhead.")

    with fakehost.Host() as h:
        fakehost.check_safe()
        h.delay(**ZERO)

        out()
        out("== spawn overhead and the not-ours fast path (VM 'other' passes 0000:05:00.0 only; the front end")
        out("   qemu-hook alone, called as libvirt does: no options, /etc/libvirt/hooks/kvm.conf)")
        true = [spawn(["/bin/true"], empty).wall for _ in range(N_FAST)]
        line("/bin/true (spawn overhead)", true)
        h.clear_log()
        fast = [spawn([HOOK, "other", "prepare", "begin", "-"], other) for _ in range(N_FAST)]
        check_rc(fast, "not-ours prepare begin")
        line("not-ours prepare begin", [r.wall for r in fast], "< 2 ms")
        out(f"  {'  minus /bin/true median':<34} {(statistics.median(r.wall for r in fast) - statistics.median(true)) * 1000:7.2f} ms")
        hf_true = hyperfine(["/bin/true"], empty, N_FAST)
        hf = hyperfine([HOOK, "other", "prepare", "begin", "-"], other, N_FAST)
        if hf:
            how = "--input" if hyperfine_has_input(shutil.which("hyperfine")) else "sh -c 'exec ... < xml'"
            out(f"  hyperfine {subprocess.run(['hyperfine', '--version'], capture_output=True, text=True).stdout.split()[-1]}"
                f" -N, stdin via {how}:")
            out(f"  {'hyperfine -N: /bin/true':<34} median {hf_true[0] * 1000:7.2f} ms   min {hf_true[1] * 1000:7.2f}   max {hf_true[2] * 1000:7.2f}   (n={N_FAST})")
            out(f"  {'hyperfine -N: not-ours':<34} median {hf[0] * 1000:7.2f} ms   min {hf[1] * 1000:7.2f}   max {hf[2] * 1000:7.2f}   (n={N_FAST})   target < 2 ms")
        else:
            out("  hyperfine: not installed or failed")
        n_writes = h.writes()
        out(f"  sysfs writes by {N_FAST} not-ours runs (+hyperfine's): {n_writes}   target 0")
        if n_writes:
            problems.append(f"not-ours runs wrote sysfs {n_writes} times")

        out()
        out("== other operations of an ours VM (win10, no hand-over in progress): no side effect expected")
        for op, sub in (("start", "begin"), ("started", "begin"), ("stopped", "end")):
            h.clear_log()
            rs = [spawn([HOOK, "win10", op, sub, "-"], ours) for _ in range(N_FAST)]
            check_rc(rs, f"{op} {sub}")
            line(f"{op} {sub}", [r.wall for r in rs], "< 2 ms")
            if h.writes():
                problems.append(f"{op} {sub} wrote sysfs {h.writes()} times")

        results = {}
        out()
        out(f"== hand-over + hand-back, zero emulated delays (the hook's own overhead), {N_CYCLES} cycles")
        out("   without buses: no system bus, user not logged in, so the D-Bus steps are skipped")
        results["zero, no buses"] = cycles(h, conf, ours, N_CYCLES, "win10")
        buslog = os.path.join(scratch, "buses.log")
        saved, fd = os.dup(2), os.open(buslog, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        try:
            buses = busmock.Buses.start(user=USER)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        try:
            units_before = {u: buses.unit_state(u, user=True) for u in busmock.USER_UNITS}
            units_before["gdm.service"] = buses.unit_state("gdm.service")
            results["zero, mocked buses"] = cycles(h, conf, ours, N_CYCLES, "win10")
            h.delay(**REALISTIC)
            results["realistic, mocked buses"] = cycles(h, conf, ours, N_REAL, "win10")
            h.delay(**ZERO)
            units_after = {u: buses.unit_state(u, user=True) for u in busmock.USER_UNITS}
            units_after["gdm.service"] = buses.unit_state("gdm.service")
            if units_after != units_before:
                problems.append(f"unit states changed: {units_before} -> {units_after}")
            calls = len(buses.system_calls()), len(buses.user_calls())
        finally:
            buses.stop()

        for name, r in results.items():
            if name.startswith("realistic"):
                out()
                out(f"== the same with the realistic delay profile (probe {REALISTIC['probe']} ms, DRM card "
                    f"{REALISTIC['drm']} ms, unbind {REALISTIC['unbind']} ms), {N_REAL} cycles")
                out("   (the original scripts sleep 8 s per direction)")
                tgt = ""
            else:
                tgt = "< 20 ms"
            out(f"  [{name}]")
            line("hand-over  (prepare begin)", [a.wall for a in r["over"]], tgt)
            line("hand-back  (release end)", [b.wall for b in r["back"]], tgt)
            if tgt:
                t = statistics.median(true)
                out(f"  {'  medians minus /bin/true':<34} hand-over {(statistics.median(a.wall for a in r['over']) - t) * 1000:.2f} ms, "
                    f"hand-back {(statistics.median(b.wall for b in r['back']) - t) * 1000:.2f} ms")
            if r["late"]:
                out(f"  !! in {len(r['late'])} of {len(r['back']) + 1} cycles the sysfs was not yet back when release end "
                    f"returned; it got there {statistics.median(r['late']) * 1000:.0f} ms later (median)")
        for name, r in results.items():
            out()
            out(f"== where the time goes [{name}]")
            breakdown("hand-over", r["steps_over"], r["out_over"])
            breakdown("hand-back", r["steps_back"], r["out_back"])
        out()
        out("== peak RSS (GNU time %M, one run each; baseline: /usr/bin/time /bin/true)")
        base = maxrss_kb(["/bin/true"], empty)
        out(f"  {'/bin/true (baseline)':<34} {base / 1024:6.2f} MB")
        out(f"  {'not-ours prepare begin':<34} {maxrss_kb([HOOK, 'other', 'prepare', 'begin', '-'], other) / 1024:6.2f} MB   target < 5 MB")
        for name, r in results.items():
            out(f"  {'hand-over, ' + name:<34} {r['rss'][0] / 1024:6.2f} MB   target < 5 MB   (hand-back {r['rss_back'] / 1024:.2f} MB)")
        out()
        out("== sysfs writes per cycle (from the fakesys log)")
        for name, r in results.items():
            out(f"  {name:<34} hand-over {sorted(set(r['wo']))}   hand-back {sorted(set(r['wb']))}")
        out(f"  D-Bus method calls seen by the mocks over all cycles: system {calls[0]}, user {calls[1]}")

    out()
    if problems:
        out("PROBLEMS:")
        for p in problems:
            out("  - " + p)
        return 1
    out("every hook run exited 0 and every cycle restored the host")
    return 0


if __name__ == "__main__":
    sys.exit(main())
