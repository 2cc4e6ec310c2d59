"""Measurements on the real kernel (issue 9, item 5), group "bench": run only when named
(tests/guest/bench.py, `make bench`), never by a plain run.py or `make guest-check`. No
pass/fail on the numbers: the scenario fails only when the run itself breaks (a virsh command
fails, the desktop does not come back).

With the origin's kvm.conf and the domain gaming, ROUNDS rounds of `virsh start` then
`virsh destroy`:
- with qemu-hook: each virsh command's wall time; the hook's own split of each direction, from
  its journal message ("handed over in W ms (sysfs S ms, systemd ..., own O ms (P %))"); the
  desktop's downtime: from the display manager leaving active (PID 1's journal line) or its
  weston holding no DRM card (polled every POLL_INTERVAL in a thread), whichever comes first,
  to weston holding the new GPU's card with the display manager active;
- then, the desktop stopped (the display manager and the user's audio units: without the hook,
  libvirt's managed='yes' detaches the GPU itself, and unbinding snd_hda_intel while WirePlumber
  holds the card would block libvirtd in D state): /bin/true as the hook, then no hook at all
  (/etc/libvirt/hooks/qemu moved aside and libvirtd restarted each time). This part comes last
  and breaks the desktop; the hook, libvirtd and the desktop are restored at the end.
"""
import glob
import os
import re
import statistics
import stat
import threading
import time

from lib import guest as g
from lib.registry import scenario

ROUNDS = 5
POLL_INTERVAL = 0.02
DESKTOP_DEADLINE = 90
SAVED_HOOK = g.HOOK + ".bench-saved"

SPLIT = re.compile(r"handed (over|back) in ([0-9.]+) ms \((.*)\)\s*$")
PART = re.compile(r"([A-Za-z/]+) ([0-9.]+) ms")
OWN_PCT = re.compile(r"own [0-9.]+ ms \(([0-9.]+) %\)")


# --- the desktop's downtime -------------------------------------------------------------------
# The display manager's ActiveState changes are read from PID 1's journal lines for its unit
# ("Stopping X..." when it leaves active, "Started X" when it is active again), with their
# CLOCK_MONOTONIC timestamps, the clock of time.monotonic(): exact, and no `systemctl show`
# every 20 ms (a fork and exec under TCG took 0.5-1 s a sample and slowed the hook it measured).
# Whether weston holds a DRM card is polled in-process every POLL_INTERVAL, among the processes
# of the user's session scopes only.

def dm_unit():
    r = g.run(["systemctl", "show", "-p", "Id", "--value", g.DISPLAY_MANAGER], timeout=30)
    return r.out.strip() or g.DISPLAY_MANAGER


def dm_transitions(cursor, unit):
    """[(monotonic secs, "stopping"|"started"|...)] of PID 1's lines about unit after cursor."""
    out = []
    for e in g.journal_entries(cursor):
        if e.get("_PID") != "1" or e.get("UNIT") != unit:
            continue
        msg = e.get("MESSAGE") or ""
        word = msg.split(" ", 1)[0].lower()
        if word in ("stopping", "stopped", "starting", "started") and "__MONOTONIC_TIMESTAMP" in e:
            out.append((int(e["__MONOTONIC_TIMESTAMP"]) / 1e6, word))
    return out


def weston_cards():
    """Device numbers of the DRM card nodes (major 226, minor < 128) held by weston processes
    of the user's sessions (user-UID.slice/session-*.scope)."""
    out = set()
    for procs in glob.glob("/sys/fs/cgroup/user.slice/user-%d.slice/session-*.scope/cgroup.procs"
                           % g.DESK_UID):
        for pid in (g.read(procs) or "").split():
            if g.read("/proc/%s/comm" % pid) != "weston":
                continue
            for fd in glob.glob("/proc/%s/fd/*" % pid):
                try:
                    st = os.stat(fd)
                except OSError:
                    continue
                if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 226 and os.minor(st.st_rdev) < 128:
                    out.add(st.st_rdev)
    return out


def card_rdev(addr):
    card = g.drm_card(addr)
    try:
        return os.stat(card).st_rdev if card else None
    except OSError:
        return None


class Downtime(threading.Thread):
    """Samples weston's cards every POLL_INTERVAL: lost_at is the first sample where weston
    holds no card, up_at the first one after it where weston holds new_gpu's card (monotonic).
    downtime() adds the display manager's transitions from the journal."""

    def __init__(self, new_gpu):
        super().__init__(daemon=True)
        self.new_gpu = new_gpu
        self.lost_at = self.up_at = None
        self.samples = 0
        self.first = self.last = None
        self.done = threading.Event()
        self.halt = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.halt.is_set():
                t = time.monotonic()
                cards = weston_cards()
                self.samples += 1
                self.first = self.first or t
                self.last = t
                if self.lost_at is None:
                    if not cards:
                        self.lost_at = t
                else:
                    new = card_rdev(self.new_gpu)
                    if new is not None and new in cards:
                        self.up_at = t
                        break
                self.halt.wait(max(0.0, POLL_INTERVAL - (time.monotonic() - t)))
        except Exception as e:  # reported, never a hang
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            self.done.set()

    def period_ms(self):
        if self.samples < 2:
            return None
        return 1000.0 * (self.last - self.first) / (self.samples - 1)

    def finish(self, deadline):
        self.done.wait(deadline)
        self.halt.set()
        self.join(5)

    def downtime(self, transitions):
        """(down_at, up_at) or None: down from the display manager's leaving active (its
        "Stopping" line) or weston's losing its card, whichever came first; up when weston holds
        the new GPU's card with the display manager active ("Started" before it)."""
        if self.lost_at is None or self.up_at is None:
            return None
        stops = [ts for ts, w in transitions if w in ("stopping", "stopped")]
        starts = [ts for ts, w in transitions if w == "started"]
        down = min([self.lost_at] + stops[:1])
        up = max([self.up_at] + [ts for ts in starts if ts <= self.up_at][-1:])
        return down, up


# --- the hook's split -------------------------------------------------------------------------

def hook_split(cursor, direction):
    """The hook's "handed over/back in" message after cursor, parsed:
    {"wall_ms", "sysfs_ms", "systemd_ms", "udev/DRM_ms", ..., "own_ms", "own_pct", "message"}."""
    for e in g.hook_journal(cursor):
        if e.get("QEMU_HOOK_VM") not in (None, g.DOMAIN):
            continue
        m = SPLIT.search(e.get("MESSAGE") or "")
        if not m or m.group(1) != direction:
            continue
        out = {"wall_ms": float(m.group(2)), "message": e["MESSAGE"]}
        for name, ms in PART.findall(m.group(3)):
            out[name + "_ms"] = float(ms)
        p = OWN_PCT.search(m.group(3))
        if p:
            out["own_pct"] = float(p.group(1))
        return out
    return None


# --- libvirtd and the hook ----------------------------------------------------------------------

def restart_libvirtd(t):
    daemon = "libvirtd.service" if g.unit_state("libvirtd.service") == "active" else "virtqemud.service"
    r = g.run(["systemctl", "restart", daemon], timeout=120)
    t.check(r.ok, "systemctl restart %s: %s" % (daemon, r.describe()))
    g.wait_for(lambda: g.run(["virsh", "list", "--all"], timeout=30).ok, 60,
               "virsh answers after the restart of " + daemon)


def set_hook(t, target):
    """/etc/libvirt/hooks/qemu -> target (None: no hook), the original kept aside; libvirtd
    restarted (it looks for its hooks when it starts)."""
    if not os.path.lexists(SAVED_HOOK):
        os.rename(g.HOOK, SAVED_HOOK)
    elif os.path.lexists(g.HOOK):
        os.unlink(g.HOOK)
    if target:
        os.symlink(target, g.HOOK)
    restart_libvirtd(t)


def restore_hook(t):
    if os.path.lexists(SAVED_HOOK):
        if os.path.lexists(g.HOOK):
            os.unlink(g.HOOK)
        os.rename(SAVED_HOOK, g.HOOK)
        restart_libvirtd(t)


def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def round3(x):
    return None if x is None else round(x, 3)


# --- the rounds -------------------------------------------------------------------------------

def virsh(t, verb, samples):
    r = g.run(["virsh", verb, g.DOMAIN], timeout=180)
    if not t.check(r.ok, "virsh %s %s failed: %s" % (verb, g.DOMAIN, r.describe())):
        return None
    samples.append(round(r.secs, 3))
    return r


def hook_rounds(t, data):
    """ROUNDS start/destroy rounds with qemu-hook; the desktop back on the big GPU between."""
    d = data["with_hook"] = {"start_secs": [], "destroy_secs": [], "hand_over": [], "hand_back": [],
                             "downtime_start_secs": [], "downtime_destroy_secs": [],
                             "desktop_back_after_start_secs": [], "desktop_back_after_destroy_secs": [],
                             "poll_period_ms": []}
    unit = dm_unit()
    for i in range(ROUNDS):
        if not t.wait_for(lambda: g.desktop_on(g.GPU), DESKTOP_DEADLINE,
                          "round %d: the desktop on the big GPU" % (i + 1), report=g.desktop_report):
            return False
        for verb, new_gpu, direction, key in (("start", g.WEAK_GPU, "over", "start"),
                                              ("destroy", g.GPU, "back", "destroy")):
            cursor = g.journal_cursor()
            poll = Downtime(new_gpu)
            poll.start()
            if not t.check(g.wait_for(lambda: poll.samples or poll.done.is_set(), 10, "a sample")
                           and poll.lost_at is None,
                           "round %d: the poller sees weston holding a card before virsh %s "
                           "(error %s)" % (i + 1, verb, poll.error)):
                poll.halt.set()
                return False
            t0 = time.monotonic()
            r = virsh(t, verb, d[key + "_secs"])
            if r is None:
                poll.halt.set()
                return False
            poll.finish(DESKTOP_DEADLINE)
            transitions = dm_transitions(cursor, unit)
            span = poll.downtime(transitions)
            if not t.check(span is not None, "round %d, virsh %s: the desktop's downtime not seen "
                           "(weston's card lost at %s, the new one held at %s, %s: %s, poller "
                           "error %s)" % (i + 1, verb, poll.lost_at, poll.up_at, unit,
                                          transitions, poll.error)):
                return False
            down = span[1] - span[0]
            d["downtime_%s_secs" % key].append(round(down, 3))
            d["desktop_back_after_%s_secs" % key].append(round(span[1] - t0, 3))
            d["poll_period_ms"].append(round3(poll.period_ms()))
            d.setdefault("dm_transitions_%s" % key, []).append(
                [(round(ts - t0, 3), w) for ts, w in transitions])
            split = hook_split(cursor, direction)
            t.check(split is not None, "round %d: the hook's 'handed %s in' journal message"
                    % (i + 1, direction))
            d["hand_" + direction].append(split)
            t.log("round %d: virsh %s %.2f s, hook %s, desktop down %.2f s (poll %.0f ms; %s "
                  "after the command: %s)" % (
                      i + 1, verb, r.secs, split and split["message"], down,
                      poll.period_ms() or 0, unit,
                      ", ".join("%s %.2f s" % (w, ts - t0) for ts, w in transitions)))
    return t.wait_for(lambda: g.desktop_on(g.GPU), DESKTOP_DEADLINE,
                      "after the rounds: the desktop on the big GPU", report=g.desktop_report)


def plain_rounds(t, data, key):
    """ROUNDS start/destroy rounds with whatever hook libvirtd has (or none)."""
    d = data[key] = {"start_secs": [], "destroy_secs": []}
    for i in range(ROUNDS):
        if virsh(t, "start", d["start_secs"]) is None:
            return False
        if virsh(t, "destroy", d["destroy_secs"]) is None:
            return False
        t.log("%s round %d: virsh start %.2f s, destroy %.2f s" % (
            key, i + 1, d["start_secs"][-1], d["destroy_secs"][-1]))
    return True


def stop_desktop(t):
    """Stops the display manager and the user's audio units, so nothing holds the GPU's nodes
    when libvirt unbinds them itself."""
    r = g.run(["systemctl", "stop", g.DISPLAY_MANAGER], timeout=60)
    t.check(r.ok, "systemctl stop %s: %s" % (g.DISPLAY_MANAGER, r.describe()))
    r = g._systemctl(["stop"] + list(g.AUDIO_UNITS), user=True, timeout=60)
    t.check(r.ok, "systemctl --user stop the audio units: %s" % r.describe())
    return t.wait_for(lambda: not g.holders(g.drm_nodes(g.GPU) + g.sound_nodes(g.GPU_AUDIO)), 30,
                      "nothing holds the big GPU's DRM and sound nodes")


def restart_desktop(t):
    g._systemctl(["start"] + list(g.AUDIO_UNITS), user=True, timeout=60)
    g.run(["systemctl", "start", g.DISPLAY_MANAGER], timeout=60)
    try:
        g.wait_for(lambda: g.desktop_on(g.GPU), DESKTOP_DEADLINE, "the desktop back on the big GPU")
        return True
    except g.Timeout as e:
        t.log("after the bench: %s (not a failure of the bench)" % e)
        return False


def summarize(data):
    m = {}
    h = data.get("with_hook", {})
    for direction in ("over", "back"):
        splits = [s for s in h.get("hand_" + direction, []) if s]
        keys = []                       # in the message's order: wall, sysfs, ..., own, own %
        for s in splits:
            keys += [k for k in s if k != "message" and k not in keys]
        m["hand_" + direction] = {k: med(s.get(k) for s in splits) for k in keys}
    for key in ("with_hook", "true_hook", "no_hook"):
        for verb in ("start", "destroy"):
            m["%s_%s_secs" % (key, verb)] = med(data.get(key, {}).get(verb + "_secs", []))
    for verb in ("start", "destroy"):
        m["downtime_%s_secs" % verb] = med(h.get("downtime_%s_secs" % verb, []))
        m["desktop_back_after_%s_secs" % verb] = med(h.get("desktop_back_after_%s_secs" % verb, []))
    m["poll_period_ms"] = med(h.get("poll_period_ms", []))
    return m


def table(data):
    m = data["medians"]
    n = data["rounds"]
    lines = ["medians of %d rounds (virsh start then virsh destroy of %s, origin kvm.conf)" % (n, g.DOMAIN)]
    for direction, what in (("over", "hand-over (virsh start)"), ("back", "hand-back (virsh destroy)")):
        s = m.get("hand_" + direction) or {}
        parts = ", ".join("%s %.1f" % (k[:-3], v) for k, v in s.items()
                          if k.endswith("_ms") and k != "wall_ms" and v is not None)
        lines.append("  hook %-26s %8s ms: %s ms; own %s %%" % (
            what, s.get("wall_ms"), parts, s.get("own_pct")))
    for key, what in (("with_hook", "with qemu-hook"), ("true_hook", "hook /bin/true (desktop stopped)"),
                      ("no_hook", "no hook (desktop stopped)")):
        lines.append("  virsh start/destroy %-34s %s s / %s s" % (
            what, m.get(key + "_start_secs"), m.get(key + "_destroy_secs")))
    lines.append("  desktop downtime: start %s s, destroy %s s (poll period %s ms)" % (
        m.get("downtime_start_secs"), m.get("downtime_destroy_secs"), m.get("poll_period_ms")))
    return "\n".join(lines)


@scenario(group="bench", dirty=True, bench=True, timeout=1200)
def bench_start_destroy(t):
    """Bench: the hook's split per direction, virsh start/destroy with qemu-hook, /bin/true and
    no hook, the desktop's downtime (measurements only; the no-hook part stops the desktop)."""
    data = t.data
    data["rounds"] = ROUNDS
    data["poll_interval_ms"] = POLL_INTERVAL * 1000
    g.write_kvm_conf(g.ORIGIN_KVM_CONF)
    data["hook"] = "%s -> %s" % (g.HOOK, os.path.realpath(g.HOOK))
    try:
        ok = hook_rounds(t, data)
        if ok:
            t.log("now without qemu-hook: the desktop is stopped for the rest of the bench "
                  "(libvirt's managed='yes' detaches the GPU itself)")
            ok = stop_desktop(t)
        if ok:
            set_hook(t, "/bin/true")
            ok = plain_rounds(t, data, "true_hook")
        if ok:
            set_hook(t, None)
            plain_rounds(t, data, "no_hook")
    finally:
        if g.domain_state() == "running":
            g.run(["virsh", "destroy", g.DOMAIN], timeout=120)
        restore_hook(t)
        if os.path.exists(g.KVM_CONF):
            os.unlink(g.KVM_CONF)
        data["medians"] = summarize(data)
        t.section("bench", table(data))
        if "true_hook" in data:
            data["desktop_restored"] = restart_desktop(t)
