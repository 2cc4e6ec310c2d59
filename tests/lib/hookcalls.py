"""The hook under test with one config file of a test module, called as libvirt calls it on the
emulated host without D-Bus (test_points, test_pcikeys, test_hostkeys): its runs, and the kill at
a write after which `release end` must restore the host exactly.

    calls = Calls("points", fakehost.domain_xml("win10", [VEGA]))
    calls.write(fakehost.NATIVE_CONF + "[host]\\ntimeout = 5s\\n")
    rc, err = calls.prepare()
"""
import os

import fakehost

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
JOURNAL_DIR = "/run/qemu-hook"


class Calls:
    def __init__(self, name, xml, vm="win10"):
        self.conf = f"{fakehost.SCRATCH}/{name}.conf"
        self.xml = xml
        self.vm = vm
        self.journal = f"{JOURNAL_DIR}/{vm}.state"

    def write(self, text):
        """The config, as the hook wants it (mode 0644), and no journal of an earlier test."""
        os.makedirs(os.path.dirname(self.conf), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(text)
        os.chmod(self.conf, 0o644)
        fakehost.sh("rm", "-rf", JOURNAL_DIR)

    def hook(self, *args, new_session=False):
        """The hook with this config and ARGS: (rc, stdout, stderr)."""
        rc, out, err, _ = fakehost.run_hook([HOOK, "--config", self.conf, *args], self.xml, new_session=new_session)
        return rc, out, err

    def call(self, operation, sub, new_session=False):
        """A hook-mode call for the VM: (rc, stderr); hook mode never writes to stdout."""
        rc, out, err = self.hook(self.vm, operation, sub, "-", new_session=new_session)
        assert out == "", f"hook mode wrote to stdout: {out!r}"
        return rc, err

    def prepare(self, **kw):
        return self.call("prepare", "begin", **kw)

    def release(self, **kw):
        return self.call("release", "end", **kw)

    def dry_run(self):
        rc, out, err = self.hook("--dry-run", self.vm, "prepare", "begin", "-")
        assert rc == 0, f"--dry-run: exit {rc}: {err}"
        return out

    def killed_then_released(self, host, direction, k, mode, killed=None):
        """The hook SIGKILLed at write k of a hand-over or a hand-back (after a hand-over), before
        the write or right after it; killed(host), if given, looks at the host then. release end
        must then restore the host exactly and leave no journal."""
        before = host.snapshot()
        if direction == "hand-back":
            assert self.prepare()[0] == 0
        host.clear_log()
        host.kill_at(k, mode)
        rc, err = (self.prepare if direction == "hand-over" else self.release)(new_session=True)
        assert rc == -9, f"not killed at write {k} {mode} it (exit {rc}): {err}"
        assert os.path.exists(self.journal), "killed without a journal"
        if killed:
            killed(host)
        rc, err = self.release()
        assert rc == 0, f"release end after the kill: exit {rc}: {err}"
        assert host.snapshot() == before, host.snapshot()
        assert not os.path.exists(self.journal)
