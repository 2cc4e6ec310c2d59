"""The emulated host for integration tests, demo and bench (stdlib only, run as root).

    enter_namespace()           call first: re-execs the script under `unshare -m`, then sets
                                up the private world (ro real /sys, tmpfs /run, fake modules,
                                overlay /dev); a no-op in children of a prepared process
    Host(**variant)             fresh BACKING tree + build/fakesys mounted over /sys
                                (variants: see origin.Origin); stop() or `with Host() as h:`
    check_safe()                exit 99 unless /sys is the emulation
    run_hook(args, xml, env_extra) -> (rc, stdout, stderr, seconds)
    domain_xml(name, addrs)     a libvirt domain passing the given PCI functions
    variant(**opts)             test decorator: the runner builds that test's Host with opts

Safety: the real /sys holds this machine's disk and network. Nothing here writes to /sys
before check_safe() has seen /sys/.fakesys/marker, a file only fakesys serves; the real /sys is
remounted read-only inside the namespace before the emulation is mounted over it. Module syscalls
(modprobe, rmmod, libkmod) must never reach this machine's kernel: everything runs under
build/kmodtrap (tests/integration/run.sh, tests/demo.sh, tests/bench.sh), which traps them and
has fakesys answer them; nothing runs unless this process is under a seccomp filter.
"""
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "host"))
import origin  # noqa: E402  (the tree builder lives beside fakesys.c)
from origin import VEGA, VEGA_AUDIO, R5, R5_AUDIO, FOREIGN  # noqa: E402,F401

FAKESYS = os.path.join(REPO, "build", "fakesys")
KMODTRAP = os.path.join(REPO, "build", "kmodtrap")
MARKER = "/sys/.fakesys/marker"
# /proc/sys/vm/compact_memory is the machine's even in the namespace: the emulation's own
# (fakesys.c) is bind-mounted over it while a Host runs, and nothing runs unless it is.
COMPACT = "/proc/sys/vm/compact_memory"
FAKE_COMPACT = "/sys/fakeproc/sys/vm/compact_memory"
# /proc/driver (the nvidia driver's gpus/ADDR/information) is the emulation's too while a Host runs.
PROC_DRIVER, FAKE_PROC_DRIVER = "/proc/driver", "/sys/fakeproc/driver"
NS_ENV = "FAKEHOST_NAMESPACE"
SCRATCH = "/run/fakehost"
LIBVIRT_ETC = "/etc/libvirt"
# Where the front end execs qemu-hook-act from (the Makefile's LIBEXECDIR, compiled in), and the
# qemu-hook under test (the Makefile sets QEMU_HOOK for the ASan pass).
LIBEXEC = os.environ.get("QEMU_HOOK_LIBEXECDIR", "/usr/local/libexec/qemu-hook")
HOOK = os.path.join(REPO, os.environ.get("QEMU_HOOK", "qemu-hook"))
PY = "/usr/bin/python3"

# Fake kernel modules for libkmod: name, file, aliases, dependencies (origin.KERNEL_MODULES and
# MODULE_INIT). Enough for kmod_module_new_from_lookup to map the GPUs' modaliases to their
# MODULES the way the real modules.alias does, and for kmod_module_probe_insert_module to load
# the dependencies first (modules.dep); the drivers a module registers are in
# /sys/module/NAME/drivers/.
MODULES = [(name, path, aliases, origin.MODULE_INIT.get(name, {}).get("depends", []))
           for name, (path, aliases) in origin.KERNEL_MODULES.items()]


# The native kvm.conf of the origin's GPUs without the desktop (no D-Bus needed); tests append
# what they vary.
NATIVE_CONF = """[gpu]
address = 0000:0d:00.0
[secondary]
address = 0000:08:00.0
[desktop]
display_manager = none
"""


def die(msg, code=99):
    sys.stderr.write(f"fakehost: {msg}\n")
    sys.exit(code)


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


# ---------------------------------------------------------------- namespace

def enter_namespace(dev=True, modules=True):
    """Re-exec this script in a private mount namespace (once), then make the world private:
    real /sys read-only, tmpfs /run (scratch lives in /run/fakehost), an overlay /usr/lib with
    fake modules for libkmod, an overlay /dev where /dev/dri/... nodes can be created."""
    if os.geteuid() != 0:
        die("must run as root (mount namespaces, FUSE)", 2)
    check_trapped()
    outer = os.environ.get(NS_ENV)
    if not outer:
        env = dict(os.environ, **{NS_ENV: _mntns()})
        env.pop(NS_ENV + "_READY", None)
        argv = ["unshare", "-m", "--propagation", "private", PY, os.path.abspath(sys.argv[0])] + sys.argv[1:]
        os.execvpe("unshare", argv, env)
    if outer == _mntns():
        # A leaked variable must not make us mount over the host's /run and /sys.
        die("FAKEHOST_NAMESPACE set but this is not a private mount namespace", 99)
    if os.environ.get(NS_ENV + "_READY") == "1":
        return          # a child of an already prepared process
    # In our own namespace now: nothing below reaches the host's mounts. The real /sys and
    # everything mounted below it (cgroups, debugfs...) read-only.
    sh("mount", "-o", "remount,bind,ro", "/sys")
    for point in _mounts_below("/sys"):
        sh("mount", "-o", "remount,bind,ro", point)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    os.makedirs(SCRATCH)
    # The machine's own hooks and kvm.conf must never run here: an /etc of our own, and an empty
    # /etc/libvirt in it (the hook's default kvm.conf and qemu.d are there).
    _overlay("/etc", "etc", "/etc")
    os.makedirs(LIBVIRT_ETC, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", LIBVIRT_ETC)
    if modules:
        _fake_modules()
    if dev:
        _private_dev()
    _overlay("/usr/local", "usrlocal", "/usr/local")
    install_act(os.path.join(os.path.dirname(HOOK), "qemu-hook-act"))
    os.environ[NS_ENV + "_READY"] = "1"


def install_act(path):
    """PATH becomes the qemu-hook-act the front end runs: linked at LIBEXEC, in this namespace's
    own /usr/local (an overlay of the machine's), never the machine's."""
    if not LIBEXEC.startswith("/usr/local/"):
        die(f"QEMU_HOOK_LIBEXECDIR={LIBEXEC}: the tests can only place qemu-hook-act under /usr/local", 2)
    if not any(point == "/usr/local" and fstype == "overlay" for point, fstype in _mounts()):
        die("/usr/local is the machine's: refusing to install qemu-hook-act there", 99)
    os.makedirs(LIBEXEC, exist_ok=True)
    act = os.path.join(LIBEXEC, "qemu-hook-act")
    if os.path.lexists(act):
        os.unlink(act)
    os.symlink(os.path.abspath(path), act)


def _overlay(lower, name, target):
    up, work = f"{SCRATCH}/{name}/upper", f"{SCRATCH}/{name}/work"
    os.makedirs(up)
    os.makedirs(work)
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={up},workdir={work}", target)


def _fake_modules():
    """/lib/modules does not exist here: give libkmod a /usr/lib/modules/$(uname -r) whose
    modules.alias (made by depmod from tiny objects with a .modinfo section) lists our drivers,
    and modules.dep their dependencies. depmod finds those by symbols, as modpost's depends=
    says them: each module exports NAME_export (__ksymtab_strings) and uses its dependencies'."""
    rel = os.uname().release
    build = f"{SCRATCH}/modbuild"
    os.makedirs(build)
    objs = []
    for name, path, aliases, depends in MODULES:
        src = f"{build}/{name}.c"
        infos = [f"alias={a}" for a in aliases] + [f"depends={','.join(depends)}", f"name={name}", "license=GPL",
                                                   "vermagic=" + rel + " SMP mod_unload "]
        with open(src, "w") as f:
            for i, s in enumerate(infos):
                f.write(f'static const char m{i}[] __attribute__((section(".modinfo"), used, aligned(1))) = "{s}";\n')
            f.write('char this_module[64] __attribute__((section(".gnu.linkonce.this_module"))) = { 0 };\n')
            f.write(f'static const char ks[] __attribute__((section("__ksymtab_strings"), used, aligned(1))) = '
                    f'"{name}_export";\n')
            for dep in depends:
                f.write(f"extern char {dep}_export[]; char *use_{dep} = {dep}_export;\n")
        sh("gcc", "-c", "-o", f"{build}/{name}.o", src)
        objs.append((f"{build}/{name}.o", path))
    _overlay("/usr/lib", "usrlib", "/usr/lib")
    base = f"/usr/lib/modules/{rel}"
    for obj, path in objs:
        os.makedirs(os.path.dirname(f"{base}/{path}"), exist_ok=True)
        shutil.copy(obj, f"{base}/{path}")
    # depmod wants these three
    with open(f"{base}/modules.order", "w") as f:
        f.write("".join(path + "\n" for _, path, _, _ in MODULES))
    with open(f"{base}/modules.builtin", "w") as f:
        f.write("kernel/drivers/pci/pcie/pcieport.ko\nkernel/drivers/video/fbdev/efifb.ko\n")
    open(f"{base}/modules.builtin.modinfo", "w").close()
    sh("depmod", rel)      # /lib is a link to usr/lib: this writes only into the overlay


def _private_dev():
    """An overlay over devtmpfs (tried: works) so tests can create /dev/dri/card0 and such
    without touching the real /dev; /dev/pts and /dev/shm are carried over."""
    target = f"{SCRATCH}/dev"
    os.makedirs(target)
    _overlay("/dev", "devov", target)
    for sub in ("pts", "shm", "mqueue", "hugepages"):
        if os.path.ismount(f"/dev/{sub}") and os.path.isdir(f"{target}/{sub}"):
            sh("mount", "--rbind", f"/dev/{sub}", f"{target}/{sub}")
    sh("mount", "--move", target, "/dev")


def _mounts():
    """(mount point, fs type) of this mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            yield fields[4], fields[fields.index("-") + 1]


def _mounts_below(top):
    return [p for p, _ in _mounts() if p.startswith(top + "/")]


def _mntns():
    return os.readlink("/proc/self/ns/mnt")


def in_namespace():
    """True in a namespace prepared by enter_namespace() (not the one we were started in)."""
    outer = os.environ.get(NS_ENV)
    return os.environ.get(NS_ENV + "_READY") == "1" and bool(outer) and outer != _mntns()


# ---------------------------------------------------------------- safety and running

def seccomp_mode():
    """This process's seccomp mode (/proc/self/status): 2 under a filter, kmodtrap's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0


def check_trapped():
    """Abort (exit 99) unless module syscalls are trapped: never let a test load or unload a module
    of this machine's kernel."""
    if seccomp_mode() != 2:
        die("not under a seccomp filter: module syscalls would reach this machine's kernel; run under "
            f"{KMODTRAP} (make build/kmodtrap; tests/integration/run.sh does), refusing to run anything", 99)


def check_safe():
    """Abort (exit 99) unless /sys is the emulation: never let a test write the real sysfs."""
    check_trapped()
    try:
        with open(MARKER) as f:
            ok = f.read().startswith("fakesys")
    except OSError:
        ok = False
    if not ok or not in_namespace():
        die(f"{MARKER} missing: /sys is not the emulated sysfs, refusing to run anything", 99)
    if not compact_is_fake():
        die(f"{COMPACT} is the machine's: the emulation's is not mounted over it; refusing to run anything", 99)
    if not any(point == LIBVIRT_ETC and fstype == "tmpfs" for point, fstype in _mounts()):
        die(f"{LIBVIRT_ETC} is the machine's: its hook scripts could run; refusing to run anything", 99)


def compact_is_fake():
    """Whether COMPACT is the emulation's: a mount of fakesys, the same file as FAKE_COMPACT."""
    try:
        a, b = os.stat(COMPACT), os.stat(FAKE_COMPACT)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and \
        any(point == COMPACT and fstype == "fuse.fakesys" for point, fstype in _mounts())


def hook_env(env_extra=None):
    """The scrubbed environment libvirt gives a hook, plus what libudev needs for a fake /sys."""
    env = {"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "USER": "root", "LOGNAME": "root", "SYSTEMD_DEVICE_VERIFY_SYSFS": "0"}
    env.update(env_extra or {})
    return env


def run_hook(args, xml="", env_extra=None, timeout=120, new_session=False):
    """Run ARGS (binary first) with XML on stdin like libvirt does; with new_session, in a session
    (and process group) of its own, which a kill line of fakesys may kill.
    Returns (rc, stdout, stderr, wall seconds)."""
    check_safe()
    t0 = time.monotonic()
    p = subprocess.run(args, input=xml, capture_output=True, text=True, env=hook_env(env_extra),
                       timeout=timeout, start_new_session=new_session)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def domain_xml(name, addrs):
    """A domain passing the PCI functions ADDRS ("0000:0d:00.0", ...) as managed hostdevs."""
    devs = []
    for a in addrs:
        dom, bus, rest = a.split(":")
        slot, fn = rest.split(".")
        devs.append("    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
                    f"      <source><address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/></source>\n"
                    "    </hostdev>\n")
    return (f"<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n"
            f"  <devices>\n{''.join(devs)}  </devices>\n</domain>\n")


# ---------------------------------------------------------------- hook scripts that record

RECORDING_SCRIPT = """#!/bin/sh
d=$(readlink /sys/bus/pci/devices/0000:0d:00.0/driver)
echo "{name} $* ${{d##*/}}" >> {record}
cat > {record}.{name}.stdin
{body}
"""


def recording_script(path, record, name=None, body="exit 0", mode=0o755, text=None):
    """A qemu.d script at PATH that appends "NAME ARGS... DRIVER" to RECORD (DRIVER: the big
    GPU's when it runs), keeps its stdin in RECORD.NAME.stdin, then runs BODY; or just TEXT."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w") as f:
        f.write(text if text is not None else
                RECORDING_SCRIPT.format(name=name or os.path.basename(path), record=record, body=body))
    os.chmod(path, mode)
    return path


def read_record(record):
    """The lines recording scripts wrote to RECORD, split into words."""
    try:
        with open(record) as f:
            return [line.split() for line in f]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------- the host

def variant(**opts):
    """Decorator for tests: the runner builds the test's Host with these origin options."""
    def mark(fn):
        fn.host_variant = opts
        return fn
    return mark


def _die_with_parent():
    """fakesys must not outlive a killed runner (it would keep the namespace alive)."""
    import ctypes
    import signal
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG


Write = collections.namedtuple("Write", "path value result")


class Host:
    """A fresh emulated host of origin/ mounted over /sys. Variant options are those of
    origin.Origin: vega_driver, secondary, secondary_driver, secondary_gpu, audio_driver,
    foreign, framebuffer, fb_parent, firmware, vfio_cdev, vendor_reset, gpu ("nvidia": an RTX 3080
    on the proprietary driver)."""
    count = 0

    def __init__(self, **variant):
        if not in_namespace():
            die("Host() outside the private namespace: call enter_namespace() first", 99)
        if not os.access(FAKESYS, os.X_OK):
            die(f"{FAKESYS} missing: run `make build/fakesys`", 2)
        Host.count += 1
        self.dir = f"{SCRATCH}/host{Host.count}"
        self.backing = origin.build(f"{self.dir}/backing", **variant)
        self.variant = variant
        self.stderr = open(f"{self.dir}/fakesys.stderr", "w")
        # With the private /dev, fakesys makes the nodes (devtmpfs) and by-path links (udev).
        dev = ["/dev"] if os.path.isdir(f"{SCRATCH}/devov") else []
        self.proc = subprocess.Popen([FAKESYS, self.backing, "/sys"] + dev, stdout=self.stderr, stderr=self.stderr,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while not os.path.exists(MARKER):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                die(f"fakesys did not mount (see {self.dir}/fakesys.stderr)", 99)
            time.sleep(0.005)
        sh("mount", "--bind", FAKE_COMPACT, COMPACT)
        sh("mount", "--bind", FAKE_PROC_DRIVER, PROC_DRIVER)
        if not compact_is_fake():
            self.stop()
            die(f"{COMPACT}: the emulation's could not be mounted over it", 99)

    def stop(self):
        if self.proc is None:
            return
        for point in (COMPACT, PROC_DRIVER):
            while any(p == point for p, _ in _mounts()):
                sh("umount", point)
        subprocess.run(["umount", "/sys"], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["umount", "-l", "/sys"], stderr=subprocess.DEVNULL)
        self.proc = None
        self.stderr.close()
        if os.path.exists(MARKER):
            die("fakesys still mounted after stop()", 99)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- state readers
    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                return f.read().rstrip("\n")
        except OSError:
            return None

    @staticmethod
    def _link(path):
        try:
            return os.path.basename(os.readlink(path))
        except OSError:
            return None

    def driver(self, name):
        """Driver bound to PCI function NAME ("0000:0d:00.0"), or None."""
        return self._link(f"/sys/bus/pci/devices/{name}/driver")

    def override(self, name):
        """driver_override of NAME, None when unset."""
        v = self._read(f"/sys/bus/pci/devices/{name}/driver_override")
        return None if v in (None, "", "(null)") else v

    def vtcon_bound(self, n):
        return self._read(f"/sys/class/vtconsole/vtcon{n}/bind") == "1"

    def fbcon(self):
        """fbcon's vtcon ("vtcon1"), found by name as the hook must; None when it has none."""
        for v in sorted(os.listdir("/sys/class/vtconsole")):
            if "frame buffer device" in (self._read(f"/sys/class/vtconsole/{v}/name") or ""):
                return v
        return None

    def fbcon_bound(self):
        v = self.fbcon()
        return v is not None and self._read(f"/sys/class/vtconsole/{v}/bind") == "1"

    def fb_driver(self):
        return self._link("/sys/bus/platform/devices/efi-framebuffer.0/driver")

    def fb_exists(self):
        return os.path.lexists("/sys/bus/platform/devices/efi-framebuffer.0")

    def module_drivers(self, module):
        """The drivers MODULE registered: ["pci:vfio-pci"], [] when it is not loaded."""
        try:
            return sorted(os.listdir(f"/sys/module/{module}/drivers"))
        except OSError:
            return []

    def card_by_path(self, name):
        """The node udev's /dev/dri/by-path/pci-NAME-card link points to, or None."""
        link = f"/dev/dri/by-path/pci-{name}-card"
        return os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link))) \
            if os.path.islink(link) else None

    def drm_cards(self, name):
        """Sorted cardN names under the function's drm/ directory."""
        try:
            return sorted(c for c in os.listdir(f"/sys/bus/pci/devices/{name}/drm") if c.startswith("card"))
        except OSError:
            return []

    def sound_cards(self, name):
        try:
            return sorted(os.listdir(f"/sys/bus/pci/devices/{name}/sound"))
        except OSError:
            return []

    def vfio_devs(self, name):
        """The function's vfio-dev/vfioN names (one while it is on vfio-pci)."""
        try:
            return sorted(os.listdir(f"/sys/bus/pci/devices/{name}/vfio-dev"))
        except OSError:
            return []

    def iommu_group(self, name):
        return self._link(f"/sys/bus/pci/devices/{name}/iommu_group")

    def vfio_group_node(self, name):
        """/dev/vfio/GROUP of the function's IOMMU group (it exists while a function of the group
        is on vfio-pci)."""
        return f"/dev/vfio/{self.iommu_group(name)}"

    def bar_sizes(self, name):
        """Each BAR's size in bytes (its line in `resource`), None without the file."""
        text = self._read(f"/sys/bus/pci/devices/{name}/resource")
        if text is None:
            return None
        sizes = []
        for line in text.splitlines()[:6]:
            start, end, _ = (int(x, 16) for x in line.split())
            sizes.append(end - start + 1 if end > start else 0)
        return sizes

    def pci_devices(self):
        return sorted(os.listdir("/sys/bus/pci/devices"))

    def uevent(self, name):
        text = self._read(f"/sys/bus/pci/devices/{name}/uevent") or ""
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def snapshot(self):
        """Everything a hand-over may change, as a comparable dict."""
        s = {"pci": {}, "vtcon": {}, "fb": self.fb_driver(), "fb_exists": self.fb_exists(),
             "class_drm": sorted(os.listdir("/sys/class/drm")),
             "class_sound": sorted(os.listdir("/sys/class/sound")),
             "class_vfio": sorted(os.listdir("/sys/class/vfio"))}
        for name in self.pci_devices():
            # vfio-dev/vfioN: whether, not its number (the lowest free at the bind, as the kernel's)
            s["pci"][name] = {"driver": self.driver(name), "override": self.override(name),
                              "uevent_driver": self.uevent(name).get("DRIVER"),
                              "drm": self.drm_cards(name), "sound": self.sound_cards(name),
                              "vfio_dev": bool(self.vfio_devs(name)),
                              "reset_method": self._read(f"/sys/bus/pci/devices/{name}/reset_method"),
                              "bars": self.bar_sizes(name)}
        for v in sorted(os.listdir("/sys/class/vtconsole")):
            s["vtcon"][v] = self._read(f"/sys/class/vtconsole/{v}/bind")
        s["driver_links"] = {d: sorted(e for e in os.listdir(f"/sys/bus/pci/drivers/{d}") if ":" in e)
                             for d in sorted(os.listdir("/sys/bus/pci/drivers"))}
        s["hugepages"] = {kb: self.pool(kb) for kb in (2048, 1048576)
                          if os.path.isdir(f"/sys/kernel/mm/hugepages/hugepages-{kb}kB")}
        s["governors"] = self.governors()
        return s

    # -- control files
    def log(self):
        """Every attribute write so far: [Write(path, value, result)], result "0" or "EBUSY"..."""
        out = []
        for line in (self._read("/sys/.fakesys/log") or "").splitlines():
            path, rest = line.split(" ", 1)
            value, result = rest.rsplit(" ", 1)
            out.append(Write(path, "" if value == '""' else value, result))
        return out

    def clear_log(self):
        with open("/sys/.fakesys/log", "w"):
            pass

    def writes(self):
        return len(self.log())

    def fail(self, path, errno_name, count=None, value=None):
        """Make the next COUNT (default: all) writes to PATH (of VALUE only, when given) fail with
        ERRNO_NAME, changing nothing. PATH may be /sys/... or relative, symlinked or not."""
        target = path if value is None else f"{path}={value}"
        with open("/sys/.fakesys/fail", "a") as f:
            f.write(f"{target} {errno_name}" + (f" {count}" if count is not None else "") + "\n")

    def kill_at(self, k, mode="before"):
        """SIGKILL the process group of the K-th attribute write from now, before the write is
        made ("before": it never happens) or right after it ("after"). Run the hook with
        run_hook(new_session=True): fakesys never kills its own group."""
        assert mode in ("before", "after")
        with open("/sys/.fakesys/kill", "w") as f:
            f.write(f"{k} {mode}\n")

    def clear_fail(self):
        with open("/sys/.fakesys/fail", "w"):
            pass

    def hang(self, path, value=None, killable=True):
        """Make writes to PATH (of VALUE only, when given) block until unhang(): the writer
        waits in write(2); SIGKILL ends the writer (EINTR) and the write completes once released.
        With killable=False the writer is in the kernel's D state: killed or not, it stays
        blocked until released. A blocked unbind, bind or drivers_probe of a PCI device holds its
        device lock: the device's other such writes and its driver_override wait meanwhile."""
        with open("/sys/.fakesys/hang", "a") as f:
            f.write((path if value is None else f"{path}={value}") + ("" if killable else " D") + "\n")

    def unhang(self):
        with open("/sys/.fakesys/hang", "w"):
            pass

    def blocked(self):
        """The writes now blocked (hang, a held sound card): [(path, value, writer pid)]."""
        out = []
        for line in (self._read("/sys/.fakesys/blocked") or "").splitlines():
            path, value, pid = line.rsplit(" ", 2)
            out.append((path, "" if value == '""' else value, int(pid)))
        return out

    # -- huge pages and CPUs
    def pool(self, kb=2048):
        """The huge page pool of KB: {"nr": .., "free": .., "surplus": .., "resv": ..}, as the kernel
        shows it (nr counts the surplus pages, free the reserved ones)."""
        d = f"/sys/kernel/mm/hugepages/hugepages-{kb}kB"
        return {k: int(self._read(f"{d}/{k}_hugepages")) for k in ("nr", "free", "surplus", "resv")}

    def _pool_set(self, kb, **counts):
        for k, v in counts.items():
            with open(f"{self.backing}/kernel/mm/hugepages/hugepages-{kb}kB/{k}_hugepages", "w") as f:
                f.write(f"{v}\n")

    def take_hugepages(self, n, kb=2048):
        """N free pages of the pool become used, as a VM takes them (written in BACKING)."""
        self._pool_set(kb, free=self.pool(kb)["free"] - n)

    def let_go_hugepages(self, n, kb=2048):
        """N pages in use are let go, as the kernel frees them (free_huge_page): a surplus page
        goes back to the system (nr and surplus drop), any other is free again."""
        p = self.pool(kb)
        back = min(n, p["surplus"])
        self._pool_set(kb, nr=p["nr"] - back, surplus=p["surplus"] - back, free=p["free"] + n - back)

    def memory(self, **values):
        """Set .fakesys/memory values (hugepages=KB, fragmented=KB); returns them all."""
        cur = dict(line.split() for line in (self._read("/sys/.fakesys/memory") or "").splitlines())
        cur.update({k: str(v) for k, v in values.items()})
        if values:
            with open("/sys/.fakesys/memory", "w") as f:
                f.write("".join(f"{k} {v}\n" for k, v in cur.items()))
        return {k: int(v) for k, v in cur.items()}

    def governors(self):
        """{cpuN: scaling_governor} of the CPUs with cpufreq that are online."""
        out = {}
        for c in sorted(os.listdir("/sys/devices/system/cpu")):
            v = self._read(f"/sys/devices/system/cpu/{c}/cpufreq/scaling_governor")
            if v is not None:
                out[c] = v
        return out

    def delay(self, probe=None, drm=None, unbind=None):
        """Milliseconds: probe (bind/drivers_probe until the driver link appears; the write
        returns at once), drm (bind until drm/cardN appears), unbind (the unbind write itself)."""
        cur = {}
        for line in (self._read("/sys/.fakesys/delay") or "").splitlines():
            k, v = line.split()
            cur[k] = v
        for k, v in (("probe", probe), ("drm", drm), ("unbind", unbind)):
            if v is not None:
                cur[k] = str(int(v))
        with open("/sys/.fakesys/delay", "w") as f:
            f.write("".join(f"{k} {v}\n" for k, v in cur.items()))

    def write(self, rel, value):
        """Write VALUE to /sys/REL in one write(2), like sysfs users. Returns 0 or the errno."""
        check_safe()
        try:
            fd = os.open(f"/sys/{rel}", os.O_WRONLY)
        except OSError as e:
            return e.errno
        try:
            os.write(fd, value.encode())
            return 0
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)

    def wait(self, cond, timeout=5.0):
        """Poll COND() every ms until true; returns seconds waited; raises on timeout."""
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(0.001)
        return time.monotonic() - t0

    # -- device nodes
    @staticmethod
    def node(devname):
        """/dev/DEVNAME. fakesys makes the nodes of the private /dev: char devices with the class
        device's numbers (226:N for dri/cardN...), as devtmpfs does, and udev's by-path links."""
        path = devname if devname.startswith("/dev/") else "/dev/" + devname
        if not os.path.isdir(f"{SCRATCH}/devov"):
            die("no private /dev: no device nodes here", 99)
        return path

    @contextlib.contextmanager
    def hold(self, node):
        """A child process holding NODE ("/dev/dri/card0" or "dri/card0") open; yields its pid.
        No driver is behind the nodes here, so it holds them with O_PATH: /proc/PID/fd shows
        the node and stat() its device number, as for a real holder."""
        path = self.node(node)
        child = subprocess.Popen([PY, "-c", "import os, sys; fd = os.open(sys.argv[1], os.O_PATH); "
                                  "print('ready', flush=True); sys.stdin.read()",
                                  path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"holder of {path} did not start")
            yield child.pid
        finally:
            child.stdin.close()
            child.wait()
