"""The guest's real state, read by meaning, and waiting on it (runs as root in the guest only).

Everything here reads: sysfs, /proc, /dev, systemd, the journal, libvirt. The only writers are
write_kvm_conf() and the commands a scenario runs itself (virsh, the hook).

Devices of the guest (tests/guest/run.py builds them): the big GPU is a VGA at 0000:00:03.0
(bochs-drm) with its HDMI audio, an intel-hda at 0000:00:03.1 (snd_hda_intel), both in one
IOMMU group; the weak GPU is a bochs-display at 0000:00:04.0, parked on vfio-pci at boot by a
udev rule (driver_override). Both GPUs are 1234:1111.
"""
import glob
import json
import os
import subprocess
import time

GPU = "0000:00:03.0"
GPU_AUDIO = "0000:00:03.1"
WEAK_GPU = "0000:00:04.0"
FUNCTIONS = (GPU, GPU_AUDIO, WEAK_GPU)
DESK_USER = "desk"
DESK_UID = 1000
DOMAIN = "gaming"
HOOK = "/etc/libvirt/hooks/qemu"
KVM_CONF = "/etc/libvirt/hooks/kvm.conf"
DISPLAY_MANAGER = "display-manager.service"
AUDIO_UNITS = ("pipewire.socket", "pipewire.service", "pipewire-pulse.socket",
               "pipewire-pulse.service", "wireplumber.service")
CPU_CGROUPS = ("user.slice", "system.slice", "init.scope")
SYS_PCI = "/sys/bus/pci/devices"

# The origin's kvm.conf (original format, tests/guest/../shared ORIGINAL-SCRIPTS.md) with the
# guest's addresses.
ORIGIN_KVM_CONF = """\
VIRSH_GPU_VIDEO="0000:00:03.0"
VIRSH_GPU_AUDIO="0000:00:03.1"
VIRSH_SECONDARY_GPU_VIDEO="0000:00:04.0"
VIRSH_USER="desk"
VIRSH_USER_DBUS_ADDR="unix:path=/run/user/1000/bus"
"""


# --- commands -------------------------------------------------------------------------------

class Result:
    """What a command did: rc (None when its deadline killed it), out, err, secs."""

    def __init__(self, argv, rc, out, err, secs, timed_out=False):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        self.secs, self.timed_out = secs, timed_out

    @property
    def ok(self):
        return self.rc == 0

    def __repr__(self):
        return "Result(%s rc=%s %.2fs)" % (" ".join(self.argv), self.rc, self.secs)

    def describe(self):
        s = "$ %s\nexit %s after %.2f s%s\n" % (" ".join(self.argv), self.rc, self.secs,
                                               " (deadline: killed)" if self.timed_out else "")
        if self.out.strip():
            s += "stdout:\n" + self.out.rstrip() + "\n"
        if self.err.strip():
            s += "stderr:\n" + self.err.rstrip() + "\n"
        return s


def run(argv, timeout=60, input=None, env=None):
    """Run argv (a list) with a deadline; never raises for a failing or hung command.

    The child gets every signal at its default (subprocess restores SIGPIPE, which Python
    ignores) and its own session, so a deadline kills it with what it started."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(input.encode() if isinstance(input, str) else input,
                                 timeout=timeout)
        return Result(argv, p.returncode, out.decode(errors="replace"),
                      err.decode(errors="replace"), time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child in D state keeps the pipes open
            out, err = b"", b""
        return Result(argv, None, out.decode(errors="replace"), err.decode(errors="replace"),
                      time.monotonic() - t0, timed_out=True)


def sh(cmd, timeout=60):
    return run(["/bin/sh", "-c", cmd], timeout=timeout)


# Exactly what libvirt gives its hook: LC_ALL, PATH, HOME, USER, LOGNAME, every signal at its
# default (env --default-signal), the domain XML on stdin.
LIBVIRT_HOOK_ENV = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": "/root", "USER": "root", "LOGNAME": "root"}


def call_hook(vm, operation, sub_operation, xml, extra="-", timeout=60, hook=HOOK):
    """Call the installed hook as libvirt does (a direct call: no libvirtd in between)."""
    return run(["env", "--default-signal", hook, vm, operation, sub_operation, extra],
               timeout=timeout, input=xml, env=LIBVIRT_HOOK_ENV)


def domain_xml(name=DOMAIN):
    return run(["virsh", "dumpxml", name], timeout=30).out


def domain_state(name=DOMAIN):
    r = run(["virsh", "domstate", name], timeout=30)
    return r.out.strip() if r.ok else None


def write_kvm_conf(text, path=KVM_CONF):
    """The hook's config, root-owned and 0644 as qemu-hook demands (written atomically)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


# --- sysfs ----------------------------------------------------------------------------------

def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def pci_driver(addr):
    """The PCI driver bound to addr (the kernel's driver name, e.g. bochs-drm), or None."""
    link = os.path.join(SYS_PCI, addr, "driver")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def driver_override(addr):
    """addr's driver_override, None when unset (the kernel prints "(null)" or an empty line)."""
    v = read(os.path.join(SYS_PCI, addr, "driver_override"))
    return None if v in (None, "", "(null)") else v


def iommu_group(addr):
    link = os.path.join(SYS_PCI, addr, "iommu_group")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def drm_card(addr):
    """/dev/dri/cardN of addr, through /dev/dri/by-path (never a number), checked against sysfs:
    the card must exist under the device. None when addr has no card."""
    link = "/dev/dri/by-path/pci-%s-card" % addr
    if not os.path.lexists(link):
        return None
    node = os.path.realpath(link)
    if not os.path.exists(node):
        return None
    if not os.path.isdir(os.path.join(SYS_PCI, addr, "drm", os.path.basename(node))):
        return None
    return node


def _dev_nodes(sysdirs, devdir):
    nodes = []
    for d in sysdirs:
        if os.path.exists(os.path.join(d, "dev")):
            n = os.path.join(devdir, os.path.basename(d))
            if os.path.exists(n):
                nodes.append(n)
    return sorted(nodes)


def drm_nodes(addr):
    """Every DRM node of addr (cardN and renderDN)."""
    return _dev_nodes(glob.glob(os.path.join(SYS_PCI, addr, "drm", "*")), "/dev/dri")


def sound_card(addr):
    """The ALSA card number of addr (its sound/cardN in sysfs), or None."""
    cards = glob.glob(os.path.join(SYS_PCI, addr, "sound", "card*"))
    return int(os.path.basename(cards[0])[4:]) if cards else None


def sound_nodes(addr):
    """Every /dev/snd node of addr's card (controlC, pcmC, hwC)."""
    return _dev_nodes(glob.glob(os.path.join(SYS_PCI, addr, "sound", "card*", "*")), "/dev/snd")


def fbcon():
    """fbcon's vtconsole, found by its name ("frame buffer device"): {"vtcon", "bound"}, or
    None when there is none (the kernel removes it when the last framebuffer goes)."""
    for d in sorted(glob.glob("/sys/class/vtconsole/vtcon*")):
        if "frame buffer device" in (read(os.path.join(d, "name")) or ""):
            return {"vtcon": os.path.basename(d), "bound": read(os.path.join(d, "bind")) == "1"}
    return None


def boot_framebuffers():
    """The boot framebuffer platform devices still there: {name: driver or None}."""
    out = {}
    for d in glob.glob("/sys/bus/platform/devices/*-framebuffer.*"):
        link = os.path.join(d, "driver")
        out[os.path.basename(d)] = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
    return out


# --- processes ------------------------------------------------------------------------------

def comm(pid):
    return read("/proc/%s/comm" % pid)


def unit_of(pid):
    """The systemd unit (last cgroup component) of pid, e.g. session-1.scope."""
    cg = read("/proc/%s/cgroup" % pid) or ""
    for line in cg.splitlines():
        if line.startswith("0::"):
            return line[3:].rstrip("/").rsplit("/", 1)[-1] or "-"
    return None


def holders(nodes):
    """Processes holding any of the device nodes open, matched by device number:
    [{"pid", "comm", "unit", "node"}]."""
    want = {}
    for n in nodes:
        try:
            st = os.stat(n)
            want[st.st_rdev] = n
        except OSError:
            pass
    found = []
    if not want:
        return found
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            st = os.stat(fd)
        except OSError:
            continue
        if st.st_rdev in want and (st.st_mode & 0o170000) == 0o020000:
            pid = fd.split("/")[2]
            h = {"pid": int(pid), "comm": comm(pid), "unit": unit_of(pid), "node": want[st.st_rdev]}
            if h not in found:
                found.append(h)
    return found


def processes(name_prefix):
    """[{"pid", "comm", "stat", "cmd"}] of processes whose comm starts with name_prefix."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        c = read(d + "/comm")
        if c and c.startswith(name_prefix):
            stat = read(d + "/stat") or ""
            state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
            cmd = (read(d + "/cmdline") or "").replace("\0", " ").strip()
            out.append({"pid": int(d[6:]), "comm": c, "stat": state, "cmd": cmd})
    return sorted(out, key=lambda p: p["pid"])


def diagnose_hang():
    """What is hung: ps with wait channels, and the kernel stack of every qemu-hook* process."""
    s = sh("ps -eo pid,stat,wchan:32,etimes,cmd", timeout=20).out
    for p in processes("qemu-hook") + processes("virsh") + processes("libvirtd"):
        s += "\n--- %s %s (state %s)\n" % (p["pid"], p["cmd"], p["stat"])
        s += "wchan: %s\n" % read("/proc/%d/wchan" % p["pid"])
        s += "stack:\n%s\n" % read("/proc/%d/stack" % p["pid"])
    return s


# --- systemd --------------------------------------------------------------------------------

def _user_env():
    return {"XDG_RUNTIME_DIR": "/run/user/%d" % DESK_UID,
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/%d/bus" % DESK_UID,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _systemctl(args, user=False, timeout=30):
    if user:
        argv = ["runuser", "-u", DESK_USER, "--", "env"] + \
            ["%s=%s" % kv for kv in _user_env().items()] + ["systemctl", "--user"] + args
    else:
        argv = ["systemctl"] + args
    return run(argv, timeout=timeout)


def unit_properties(units, props=("ActiveState",), user=False):
    """{unit: {prop: value}} via one `systemctl show` (the desktop user's manager if user)."""
    units = list(units)
    r = _systemctl(["show", "-p", ",".join(props)] + ["--"] + units, user=user)
    # systemctl shows one block per unit, in the order asked (an alias such as
    # display-manager.service shows its target's Id: match by position, not by Id).
    blocks, cur = [], {}
    for line in r.out.splitlines() + [""]:
        if not line.strip():
            if cur:
                blocks.append(cur)
            cur = {}
            continue
        k, _, v = line.partition("=")
        cur[k] = v
    return dict(zip(units, blocks)) if len(blocks) == len(units) else {}


def unit_states(units, user=False):
    """{unit: ActiveState}; None for a unit systemctl could not tell about."""
    props = unit_properties(units, user=user)
    return {u: props.get(u, {}).get("ActiveState") for u in units}


def unit_state(unit, user=False):
    return unit_states([unit], user=user)[unit]


def cpuset(cgroup):
    """cpuset.cpus of a cgroup under /sys/fs/cgroup (None when absent: never restricted)."""
    v = read("/sys/fs/cgroup/%s/cpuset.cpus" % cgroup)
    return v if v else None


def allowed_cpus(units=CPU_CGROUPS):
    return {u: p.get("AllowedCPUs") for u, p in unit_properties(units, ("AllowedCPUs",)).items()}


def journal_cursor():
    r = run(["journalctl", "-n", "0", "--show-cursor", "-q"], timeout=30)
    for line in (r.out + r.err).splitlines():
        if line.startswith("-- cursor: "):
            return line[len("-- cursor: "):].strip()
    return None


def journal_entries(after_cursor=None, match=()):
    """The journal's entries after the cursor (or the boot's, with the journalctl MATCH
    arguments), oldest first, as dicts of their fields."""
    # Callers filter the entries themselves: journalctl 252 given both a match and
    # --after-cursor skips the first matching entry when the cursor's entry does not match.
    argv = ["journalctl", "-o", "json", "--no-pager"]
    argv += ["--after-cursor", after_cursor] if after_cursor else list(match)
    out = []
    for line in run(argv, timeout=30).out.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def hook_journal(after_cursor=None):
    """The hook's journal entries (identifier qemu-hook), oldest first, as dicts with
    MESSAGE, QEMU_HOOK_VM, QEMU_HOOK_STEP, PRIORITY, _PID, __REALTIME_TIMESTAMP."""
    return [{k: e.get(k) for k in ("MESSAGE", "QEMU_HOOK_VM", "QEMU_HOOK_STEP", "PRIORITY",
                                   "_PID", "__REALTIME_TIMESTAMP") if k in e}
            for e in journal_entries(after_cursor, ["-t", "qemu-hook"])
            if e.get("SYSLOG_IDENTIFIER") == "qemu-hook"]


# --- the desktop ----------------------------------------------------------------------------

def display_session_on(addr):
    """The display session's weston processes holding addr's DRM card (through logind)."""
    card = drm_card(addr)
    return [h for h in holders([card]) if h["comm"] == "weston"] if card else []


def audio_on(addr):
    """WirePlumber/PipeWire processes holding a /dev/snd node of addr's card."""
    return [h for h in holders(sound_nodes(addr)) if h["comm"] in ("wireplumber", "pipewire")]


def desktop_on(gpu, audio=GPU_AUDIO):
    """True when the desktop runs on gpu: display manager active, its weston holding gpu's card,
    the audio units active and WirePlumber holding the audio card (if audio is not None)."""
    if unit_state(DISPLAY_MANAGER) != "active" or not display_session_on(gpu):
        return False
    if audio is None:
        return True
    if any(s != "active" for s in unit_states(AUDIO_UNITS, user=True).values()):
        return False
    return bool(audio_on(audio))


def desktop_report():
    """Why the desktop may not be up: the display manager's and the session's own words."""
    out = ""
    for cmd in ("loginctl list-sessions --no-legend",
                "ps -eo pid,user,stat,etimes,cmd | grep -E 'greetd|weston|agreety|wireplumber|pipewire' | grep -v grep",
                "ls -l /dev/dri /dev/dri/by-path",
                "journalctl -b -u greetd.service -u display-manager.service -o short-monotonic --no-pager | tail -n 25",
                "journalctl -b -u systemd-logind.service -o short-monotonic --no-pager | tail -n 15",
                "tail -n 25 /tmp/weston-desk.log"):
        out += "$ %s\n%s\n" % (cmd, sh(cmd, timeout=20).out.rstrip())
    return out


# --- snapshots ------------------------------------------------------------------------------

def snapshot():
    """The whole state by meaning: {key: value}, keys stable across boots (no card numbers or
    pids; those are under "details", which compare() ignores)."""
    s, details = {}, {}
    for a in FUNCTIONS:
        short = a[8:]          # 0000:00:03.0 -> 03.0
        s[short + " driver"] = pci_driver(a)
        s[short + " override"] = driver_override(a)
        card = drm_card(a)
        s[short + " drm card"] = card is not None
        s[short + " card held by weston"] = bool(display_session_on(a)) if card else False
        details[short + " drm card"] = card
        details[short + " drm holders"] = holders(drm_nodes(a))
    s["03.1 sound card"] = sound_card(GPU_AUDIO) is not None
    snd = holders(sound_nodes(GPU_AUDIO))
    s["03.1 sound held by wireplumber"] = any(h["comm"] == "wireplumber" for h in snd)
    details["03.1 sound holders"] = snd
    fb = fbcon()
    s["fbcon"] = "absent" if fb is None else ("bound" if fb["bound"] else "unbound")
    details["fbcon"] = fb
    s["boot framebuffers"] = sorted(boot_framebuffers())
    s[DISPLAY_MANAGER] = unit_state(DISPLAY_MANAGER)
    for u, st in unit_states(AUDIO_UNITS, user=True).items():
        s["user " + u] = st
    for cg in CPU_CGROUPS:
        s["cpuset " + cg] = cpuset(cg)
    s["domain " + DOMAIN] = domain_state()
    s["qemu-hook processes"] = [p["cmd"] for p in processes("qemu-hook")]
    s["details"] = details
    return s


def compare(expected, actual, keys=None):
    """Differences between two snapshots (or a dict of expected values), by meaning:
    ["KEY: expected X, is Y"]."""
    diffs = []
    for k in keys or [k for k in expected if k != "details"]:
        if expected.get(k) != actual.get(k):
            diffs.append("%s: expected %r, is %r" % (k, expected.get(k), actual.get(k)))
    return diffs


def show(snap):
    """A snapshot as readable lines."""
    lines = ["  %-36s %s" % (k, v) for k, v in snap.items() if k != "details"]
    for k, v in snap.get("details", {}).items():
        lines.append("  (%s: %s)" % (k, json.dumps(v)))
    return "\n".join(lines)


# --- waiting --------------------------------------------------------------------------------

class Timeout(AssertionError):
    pass


def wait_for(cond, deadline, what, interval=0.05):
    """Poll cond() until it returns something true; return that value. On expiry raise Timeout
    naming what and cond's last value. Never a bare sleep as a wait."""
    end = time.monotonic() + deadline
    last = None
    while True:
        try:
            last = cond()
        except Exception as e:  # a state that can not be read yet is not true yet
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= end:
            raise Timeout("%s: still not true after %.1f s (last: %r)" % (what, deadline, last))
        time.sleep(interval)


def uptime():
    return float((read("/proc/uptime") or "0").split()[0])
