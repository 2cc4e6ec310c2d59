"""A real libvirtd calling the installed qemu-hook, for the end-to-end tests (stdlib only, root,
inside the namespace of fakehost.enter_namespace()).

    lv = Libvirt.start()        once: `make install DESTDIR=...` becomes overlay layers of /etc and
                                /usr/local, libvirt gets its config, virtlogd and libvirtd start
    lv.define(name, hostdevs)   a TCG domain (64 MiB, no disk), optionally passing PCI functions
    lv.virsh(*args) -> (rc, stdout, stderr, seconds)
    lv.restart_daemon()         libvirtd killed and started again; running VMs reconnect
    lv.stop()                   VMs destroyed, daemons stopped

Two namespaces. The runner's (N) has the emulated /sys of the current test and the D-Bus mocks.
libvirtd runs in one of its own (L), made from N, where /sys is the machine's real sysfs, read-only
(fakesys is unmounted there): libvirt and qemu read /sys, and must not see or write the emulation.
L also has a network namespace of its own: nothing libvirt does reaches the machine's network.
Both share /run (virsh in N reaches libvirtd's socket) and the overlays of /etc, /var, /usr/local.
/etc/libvirt holds only what `make install` put there and the test configs, and /var/lib/libvirt
and /var/log/libvirt are empty tmpfs: the machine's own VMs, networks and hooks are not seen.
libvirt passes its hook nothing but LC_ALL, PATH, HOME, USER, LOGNAME, so the installed binary
/usr/local/sbin/qemu-hook is moved to qemu-hook.real and a wrapper takes its place: it enters N,
checks that /sys there is the emulation (or refuses, exit 99), sets SYSTEMD_DEVICE_VERIFY_SYSFS=0
and execs the real binary (or the one given to start(), like the ASan/UBSan build). /etc/libvirt/hooks/qemu stays the link `make install` made.

In L a keeper process (this file run with --keeper) is a child subreaper: libvirtd, virtlogd and
qemu daemonize, and their orphans are reaped at once (PID 1 may reap late, and `virsh destroy`
waits for its qemu to be reaped). It starts and restarts the daemons on request (a line on its
stdin) and kills everything when its stdin closes, so nothing outlives the runner.
"""
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fakehost  # noqa: E402

ROOT = f"{fakehost.SCRATCH}/libvirt"
DEST = f"{ROOT}/destdir"
CAPS_CACHE = "/var/cache/libvirt/qemu"
CAPS_KEEP = os.path.join(fakehost.REPO, "build", "libvirt-caps")
URI = "qemu:///system"
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "USER": "root", "LOGNAME": "root"}
QEMU_CONF = """# qemu-hook's end-to-end tests: no cgroups, no security driver, qemu as root
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
# qemu's private /dev would move /dev/pts, which the runner's overlay /dev carries as a bind mount
namespaces = [ ]
"""
WRAPPER = """#!/bin/sh
# Test wrapper (tests/lib/libvirthost.py): the real hook, in the test runner's namespace, where
# /sys is the emulation; refuses to run it anywhere else.
exec /usr/bin/nsenter --mount=/proc/{pid}/ns/mnt --wd=/ -- /usr/bin/env SYSTEMD_DEVICE_VERIFY_SYSFS=0 \\
    /bin/sh -c 'grep -qs ^fakesys {marker} || {{ echo "test wrapper: /sys is not the emulation" >&2; exit 99; }}
                exec {binary} "$@"' qemu "$@"
"""


def _sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def _overlay(name, target, lower):
    up, work = f"{ROOT}/{name}/upper", f"{ROOT}/{name}/work"
    os.makedirs(up)
    os.makedirs(work)
    _sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={up},workdir={work}", target)


def domain_xml(name, hostdevs=()):
    """A TCG domain that starts in a fraction of a second: 64 MiB, one vCPU, no disk, no network,
    no graphics; with managed hostdevs for the PCI functions HOSTDEVS."""
    devs = "".join(
        "    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
        f"      <source><address domain='0x{a[0:4]}' bus='0x{a[5:7]}' slot='0x{a[8:10]}' function='0x{a[11]}'/>"
        "</source>\n    </hostdev>\n" for a in hostdevs)
    return (f"<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n"
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n"
            f"    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{devs}  </devices>\n</domain>\n")


class Libvirt:
    def __init__(self, keeper):
        self.keeper = keeper

    @classmethod
    def start(cls, binary=None):
        """BINARY: run that qemu-hook (the sanitizer build) instead of the installed one."""
        if not fakehost.in_namespace():
            fakehost.die("libvirthost: call fakehost.enter_namespace() first", 99)
        shutil.rmtree(ROOT, ignore_errors=True)
        os.makedirs(ROOT)
        _sh("make", "--no-print-directory", "-s", "install", f"DESTDIR={DEST}", cwd=fakehost.REPO,
            stdout=subprocess.DEVNULL)
        # The installed tree becomes the lowest layer of what both namespaces see; /etc/libvirt
        # is fakehost's empty tmpfs below it, not the machine's.
        _overlay("etc-libvirt", fakehost.LIBVIRT_ETC, f"{DEST}/etc/libvirt")
        _overlay("usrlocal", "/usr/local", f"{DEST}/usr/local:/usr/local")
        _overlay("var", "/var", "/var")
        for d in ("/var/log/libvirt", "/var/lib/libvirt", CAPS_CACHE):
            os.makedirs(d, exist_ok=True)
        for d in ("/var/log/libvirt", "/var/lib/libvirt"):
            _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d)
        os.makedirs(CAPS_KEEP, exist_ok=True)   # QEMU's capabilities take seconds to probe
        _sh("mount", "--bind", CAPS_KEEP, CAPS_CACHE)
        with open("/etc/libvirt/qemu.conf", "w") as f:
            f.write(QEMU_CONF)
        with open("/etc/libvirt/libvirtd.conf", "w") as f:
            f.write('log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        cls._add_user("libvirt-qemu", 64055)       # libvirtd wants it even with user = "root"
        if binary:      # its own qemu-hook-act, where the installed front end looks too
            fakehost.install_act(os.path.join(os.path.dirname(binary), "qemu-hook-act"))
        os.rename("/usr/local/sbin/qemu-hook", "/usr/local/sbin/qemu-hook.real")
        with open("/usr/local/sbin/qemu-hook", "w") as f:
            f.write(WRAPPER.format(pid=os.getpid(), marker=fakehost.MARKER,
                                   binary=binary or "/usr/local/sbin/qemu-hook.real"))
        os.chmod("/usr/local/sbin/qemu-hook", 0o755)
        keeper = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", sys.executable,
                                   os.path.abspath(__file__), "--keeper"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                  preexec_fn=fakehost._die_with_parent)
        lv = cls(keeper)
        lv._ask("start")
        return lv

    @staticmethod
    def _add_user(name, uid):
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        with open("/etc/group", "a") as f:
            f.write(f"{name}:x:{uid}:\n")
        with open("/etc/passwd", "a") as f:
            f.write(f"{name}:x:{uid}:{uid}:{name}:/var/lib/libvirt:/usr/sbin/nologin\n")

    def _ask(self, command):
        self.keeper.stdin.write(command + "\n")
        reply = self.keeper.stdout.readline().strip()
        if reply != "ok":
            raise AssertionError(f"libvirt keeper: {command}: {reply or 'died'} (see /var/log/libvirt)")

    def virsh(self, *args, timeout=120):
        t0 = time.monotonic()
        p = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True,
                           env=DAEMON_ENV, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t0

    def ok(self, *args):
        rc, out, err, secs = self.virsh(*args)
        if rc != 0:
            raise AssertionError(f"virsh {' '.join(args)}: exit {rc}: {err.strip()}")
        return out, secs

    def define(self, name, hostdevs=()):
        path = f"{ROOT}/{name}.xml"
        with open(path, "w") as f:
            f.write(domain_xml(name, hostdevs))
        self.ok("define", path)

    def state(self, name):
        return self.ok("domstate", name)[0].strip()

    def qemu_pid(self, name):
        with open(f"/run/libvirt/qemu/{name}.pid") as f:
            return int(f.read())

    def restart_daemon(self):
        self._ask("restart")

    def stop(self):
        if self.keeper.poll() is None:
            self.keeper.stdin.close()
            self.keeper.wait(timeout=60)


# ---------------------------------------------------------------- the keeper, in L

def _pidfile(name):
    try:
        with open(f"/run/{name}.pid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _kill_and_wait(pid, timeout=10):
    """Kills a daemon of the keeper's (which reaps it) and waits until it is gone."""
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.02)


def _start_daemons():
    env = dict(DAEMON_ENV)
    if _pidfile("virtlogd") is None:
        subprocess.run(["virtlogd", "-d"], env=env, check=True)
    subprocess.run(["libvirtd", "-d"], env=env, check=True)
    deadline = time.monotonic() + 90
    # The socket is there at once; the first call returns once the drivers are up.
    while subprocess.run(["virsh", "-c", URI, "version"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd not ready after 90 s")
        time.sleep(0.05)


def _stop_all():
    env = dict(DAEMON_ENV)
    if _pidfile("libvirtd"):
        names = subprocess.run(["virsh", "-q", "-c", URI, "list", "--name"], env=env, capture_output=True,
                               text=True).stdout.split()
        for name in names:
            subprocess.run(["virsh", "-c", URI, "destroy", name], env=env, capture_output=True)
    _kill_and_wait(_pidfile("libvirtd"))
    if os.path.isdir("/run/libvirt/qemu"):
        for f in os.listdir("/run/libvirt/qemu"):
            if f.endswith(".pid"):
                _kill_and_wait(int(open(f"/run/libvirt/qemu/{f}").read() or 0) or None)
    _kill_and_wait(_pidfile("virtlogd"))
    for name in ("libvirtd", "virtlogd"):
        if os.path.exists(f"/run/{name}.pid"):
            os.unlink(f"/run/{name}.pid")


def _children():
    me = str(os.getpid())
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(p))
            except (OSError, IndexError):
                pass
    return found


def _worker():
    """Serves the runner's requests; on end of input (or SIGTERM) stops everything."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for line in sys.stdin:
            try:
                if line.strip() == "restart":
                    _kill_and_wait(_pidfile("libvirtd"))
                    if os.path.exists("/run/libvirtd.pid"):
                        os.unlink("/run/libvirtd.pid")
                _start_daemons()
                print("ok", flush=True)
            except Exception as e:      # the runner gets the reason on its side
                print(f"failed: {e}", flush=True)
    finally:
        _stop_all()


def _keeper():
    # In L now. The current test's fakesys is mounted over /sys: take it away here, so that
    # libvirt and qemu see the real sysfs, which the runner's namespace made read-only.
    while any(point == fakehost.COMPACT for point, _ in fakehost._mounts()):
        _sh("umount", "-l", fakehost.COMPACT)
    while os.path.exists(fakehost.MARKER):
        _sh("umount", "-l", "/sys")
    with open("/proc/self/mountinfo") as f:
        writable = [m[4] for m in (line.split() for line in f)
                    if (m[4] == "/sys" or m[4].startswith("/sys/")) and "ro" not in m[5].split(",")]
    if writable:
        sys.exit(f"libvirt keeper: {', '.join(writable)} writable here; refusing to start libvirtd")
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0):     # PR_SET_CHILD_SUBREAPER
        sys.exit("libvirt keeper: prctl(PR_SET_CHILD_SUBREAPER) failed")
    # The daemons and qemu become our orphans; the worker does the talking and waits for its own
    # children, so this loop can reap anything without stealing an exit status from it.
    worker = os.fork()
    if worker == 0:
        _worker()
        os._exit(0)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(worker, signal.SIGTERM))
    while True:
        try:
            if os.wait()[0] == worker:
                break
        except ChildProcessError:
            break
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _children()
        for pid in left:
            os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            left = _children()


if __name__ == "__main__" and sys.argv[1:] == ["--keeper"]:
    _keeper()
