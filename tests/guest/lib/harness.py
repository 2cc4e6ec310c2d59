"""The guest side of a boot: install the project, wait for the desktop, run this boot's
scenarios one by one, each in its own process under its own deadline, and write the results
to the share (/mnt/share/out). Started by qemu-hook-test.service through guest_tests.py.

out/ (read by tests/guest/run.py on the host):
  progress.log          what the harness did, with uptimes (the runner shows its tail on a hang)
  boot.json             uptimes of the unit's start, the desktop being up, the install
  boot-snapshot.json    lib.guest.snapshot() once the desktop is up
  install.log           dpkg -i (or the fallback copy) and the libvirtd restart
  results.jsonl         one JSON object per scenario, in order: name, ok, secs, reason
  scenarios/NAME.log    the scenario's own output (printed by the runner on failure)
  scenarios/NAME.hang   on a scenario's deadline: ps and the kernel stacks of qemu-hook*
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

from lib import guest as g
from lib import registry

# Where qemu-hook-act is: built with the default PREFIX (fallback, ASan) or by the package.
LOCAL_LIBEXEC = "/usr/local/libexec/qemu-hook"
PACKAGE_ACT = "/usr/libexec/qemu-hook/qemu-hook-act"
DESKTOP_DEADLINE = 150   # boot: from the unit's start until the desktop is up


class Failed(AssertionError):
    pass


class Test:
    """What a scenario gets: the boot's snapshot, logging, soft checks, data for the results."""

    def __init__(self, name, boot, out_dir):
        self.name = name
        self.boot = boot               # lib.guest.snapshot() once the desktop was up
        self.out_dir = out_dir         # the scenario may write files here (out/scenarios/)
        self.failures = []
        self.data = {}                 # timings and facts: written to results.jsonl
        self.t0 = time.monotonic()

    def log(self, msg):
        print("[%7.2f] %s" % (time.monotonic() - self.t0, msg), flush=True)

    def section(self, title, text):
        print("\n=== %s\n%s" % (title, text.rstrip()), flush=True)

    def check(self, cond, what):
        """A soft assertion: records what failed and goes on. Returns cond."""
        if not cond:
            self.failures.append(what)
            self.log("CHECK FAILED: " + what)
        return cond

    def expect_state(self, expected, actual, what, keys=None):
        """Every key of expected equal in actual (lib.guest.compare); records the differences."""
        diffs = g.compare(expected, actual, keys)
        for d in diffs:
            self.check(False, "%s: %s" % (what, d))
        return not diffs

    def fail(self, msg):
        raise Failed(msg)

    def wait_for(self, cond, deadline, what, interval=0.05, report=None):
        """lib.guest.wait_for that records a timeout as a failure and returns None; on a
        timeout, report() (if given) says why, in the scenario's output."""
        t = time.monotonic()
        try:
            v = g.wait_for(cond, deadline, what, interval)
            self.log("%s after %.2f s" % (what, time.monotonic() - t))
            return v
        except g.Timeout as e:
            self.check(False, str(e))
            if report:
                self.section("why: " + what, report())
            return None


# --- the child: one scenario -------------------------------------------------------------------

def run_one(name, share):
    out = os.path.join(share, "out")
    s = registry.by_name(name)
    with open(os.path.join(out, "boot-snapshot.json")) as f:
        boot = json.load(f)
    t = Test(name, boot, os.path.join(out, "scenarios"))
    result = {"name": name, "ok": False, "reason": None, "failures": [], "data": t.data}
    try:
        s.fn(t)
        if t.failures:
            result["reason"] = t.failures[0] + (" (and %d more)" % (len(t.failures) - 1)
                                                if len(t.failures) > 1 else "")
        else:
            result["ok"] = True
    except Exception as e:
        traceback.print_exc()
        sys.stdout.flush()
        reason = "%s: %s" % (type(e).__name__, e)
        result["reason"] = t.failures[0] + "; then " + reason if t.failures else reason
    result["failures"] = t.failures
    with open(os.path.join(out, "scenarios", name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


# --- the parent: the whole boot -------------------------------------------------------------

class Boot:
    def __init__(self, share):
        self.share = share
        self.inp = os.path.join(share, "in")
        self.out = os.path.join(share, "out")
        os.makedirs(os.path.join(self.out, "scenarios"), exist_ok=True)
        self.times = {"unit_start_uptime": g.uptime()}
        self.progress = open(os.path.join(self.out, "progress.log"), "a", buffering=1)

    def say(self, msg):
        line = "[up %7.2f] %s" % (g.uptime(), msg)
        self.progress.write(line + "\n")
        os.fsync(self.progress.fileno())
        print(line, flush=True)

    def write_json(self, name, obj):
        tmp = os.path.join(self.out, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.out, name))

    def install(self):
        """The project as a Debian user installs it (dpkg -i of the package), or, until the
        package exists, the binaries copied to /usr/sbin and the hook linked; then libvirtd
        restarted so it finds the hook. ASan binaries from in/san/ are bind-mounted over the
        installed ones. Binaries built outside the package (fallback, ASan) look for
        qemu-hook-act in the default libexec directory, /usr/local/libexec/qemu-hook/."""
        log = open(os.path.join(self.out, "install.log"), "w")
        debs = sorted(glob.glob(os.path.join(self.inp, "*.deb")))
        if debs:
            r = g.run(["dpkg", "-i"] + debs, timeout=120)
            log.write(r.describe())
            method = "dpkg -i " + " ".join(os.path.basename(d) for d in debs)
            if not r.ok:
                raise RuntimeError("dpkg -i failed:\n" + r.describe())
        else:
            method = "fallback: no .deb in the share; binaries copied to /usr/sbin and " + LOCAL_LIBEXEC + ", hook linked"
            # -act first: a call must find it
            for b, where in (("qemu-hook-act", LOCAL_LIBEXEC), ("qemu-hook", "/usr/sbin")):
                os.makedirs(where, exist_ok=True)
                dest = os.path.join(where, b)
                shutil.copyfile(os.path.join(self.inp, "bin", b), dest + ".new")
                os.chmod(dest + ".new", 0o755)
                os.rename(dest + ".new", dest)
            os.makedirs("/etc/libvirt/hooks", exist_ok=True)
            if os.path.lexists(g.HOOK):
                os.unlink(g.HOOK)
            os.symlink("/usr/sbin/qemu-hook", g.HOOK)
        log.write("install: %s\n" % method)
        self.say("installed: " + method)
        san = os.path.join(self.inp, "san")
        if os.path.exists(os.path.join(san, "qemu-hook")):
            # The ASan front end finds its qemu-hook-act in /usr/local's libexec directory; the
            # package's place gets it too, so no call of either binary runs the plain one.
            os.makedirs(LOCAL_LIBEXEC, exist_ok=True)
            shutil.copyfile(os.path.join(san, "qemu-hook-act"), os.path.join(LOCAL_LIBEXEC, "qemu-hook-act"))
            os.chmod(os.path.join(LOCAL_LIBEXEC, "qemu-hook-act"), 0o755)
            targets = [("qemu-hook", "/usr/sbin/qemu-hook")]
            if os.path.exists(PACKAGE_ACT):
                targets.insert(0, ("qemu-hook-act", PACKAGE_ACT))
            for b, target in targets:
                r = g.run(["mount", "--bind", os.path.join(san, b), target])
                log.write(r.describe())
                if not r.ok:
                    raise RuntimeError("bind-mounting the ASan %s failed:\n%s" % (b, r.describe()))
            method += "; ASan/UBSan binaries bind-mounted over /usr/sbin/qemu-hook and the package's qemu-hook-act"
            self.say("ASan/UBSan build in place")
        self.times["install"] = method
        daemon = "libvirtd.service" if g.unit_state("libvirtd.service") == "active" else "virtqemud.service"
        r = g.run(["systemctl", "restart", daemon], timeout=120)
        log.write(r.describe())
        g.wait_for(lambda: g.run(["virsh", "list", "--all"], timeout=30).ok, 60,
                   "virsh answers after the restart of " + daemon)
        log.close()
        self.say("%s restarted, hook %s -> %s" % (daemon, g.HOOK, os.path.realpath(g.HOOK)))

    def wait_desktop(self):
        t = time.monotonic()
        try:
            g.wait_for(lambda: g.desktop_on(g.GPU), DESKTOP_DEADLINE,
                       "the desktop on the big GPU (weston holding its card, WirePlumber its "
                       "sound card, the audio units active)", interval=0.2)
            self.times["desktop_up_uptime"] = g.uptime()
            self.say("desktop up after %.1f s" % (time.monotonic() - t))
        except g.Timeout as e:
            self.times["desktop_up_uptime"] = None
            self.say("DESKTOP NOT UP: %s\n%s" % (e, g.desktop_report()))

    def run_scenario(self, name, timeout):
        log_path = os.path.join(self.out, "scenarios", name + ".log")
        res_path = os.path.join(self.out, "scenarios", name + ".json")
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            p = subprocess.Popen([sys.executable, os.path.join(self.inp, "guest_tests.py"),
                                  "--share", self.share, "--scenario", name],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            hung = False
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                hung = True
                diag = g.diagnose_hang()
                with open(os.path.join(self.out, "scenarios", name + ".hang"), "w") as f:
                    f.write(diag)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    rc = p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    rc = None
        secs = time.monotonic() - t0
        if hung:
            res = {"name": name, "ok": False,
                   "reason": "deadline of %d s: the scenario hung (out/scenarios/%s.hang has ps "
                             "and the stacks of qemu-hook*)" % (timeout, name)}
        elif os.path.exists(res_path):
            with open(res_path) as f:
                res = json.load(f)
        else:
            res = {"name": name, "ok": False, "reason": "the scenario process exited %s "
                   "without a result" % rc}
        res["secs"] = round(secs, 2)
        with open(os.path.join(self.out, "results.jsonl"), "a") as f:
            f.write(json.dumps(res) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.say("%s %s (%.1f s)%s" % ("ok" if res["ok"] else "FAIL", name, secs,
                                         "" if res["ok"] else ": " + str(res["reason"])))
        return hung

    def wedged(self):
        """A qemu-hook process left in D state: nothing more can be trusted in this boot."""
        return [p for p in g.processes("qemu-hook") if p["stat"] == "D"]

    def main(self):
        with open(os.path.join(self.inp, "plan.json")) as f:
            plan = json.load(f)
        self.say("group %s: %s" % (plan["group"], " ".join(s["name"] for s in plan["scenarios"])))
        try:
            self.install()
        except Exception as e:
            self.say("INSTALL FAILED: %s" % e)
            for s in plan["scenarios"]:
                with open(os.path.join(self.out, "results.jsonl"), "a") as f:
                    f.write(json.dumps({"name": s["name"], "ok": False, "secs": 0,
                                        "reason": "not run: installing the project failed (out/install.log)"}) + "\n")
            return 1
        self.times["installed_uptime"] = g.uptime()
        self.wait_desktop()
        snap = g.snapshot()
        self.write_json("boot-snapshot.json", snap)
        self.say("boot state:\n" + g.show(snap))
        self.write_json("boot.json", self.times)
        for i, s in enumerate(plan["scenarios"]):
            self.say("running %s (deadline %d s)" % (s["name"], s["timeout"]))
            self.run_scenario(s["name"], s["timeout"])
            stuck = self.wedged()
            if stuck:
                self.say("WEDGED: qemu-hook in D state: %s; the rest of this boot is not run"
                         % stuck)
                with open(os.path.join(self.out, "results.jsonl"), "a") as f:
                    for rest in plan["scenarios"][i + 1:]:
                        f.write(json.dumps({"name": rest["name"], "ok": False, "secs": 0,
                                            "reason": "not run: %s left qemu-hook in D state"
                                                      % s["name"]}) + "\n")
                break
        self.say("done")
        return 0


def main(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", default="/mnt/share")
    ap.add_argument("--scenario")
    a = ap.parse_args(argv)
    if a.scenario:
        return run_one(a.scenario, a.share)
    return Boot(a.share).main()
