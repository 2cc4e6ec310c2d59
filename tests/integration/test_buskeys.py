"""Issue 12 items 7-9 against the mocked buses and the emulated sysfs: [host] inhibit_sleep (a
logind inhibitor held by a transient unit on the system bus), [vm NAME] user_units and
[desktop] before_stop / after_start (transient oneshot services on the user's bus)."""
import os
import time

import busmock
import fakehost
from fakehost import VEGA
from test_desktop import (Desktop, USER, VM, check, diff, hook, journal_exists, native_conf,
                          original_conf, write_conf)

INHIBIT = f"qemu-hook-inhibit-{VM}.service"
INHIBIT_ARGV = ["/usr/bin/systemd-inhibit", "--what=sleep:idle", "--who=qemu-hook", f"--why=VM {VM} has the GPU",
                "--mode=block", "/usr/bin/sleep", "infinity"]
SAVE = "/usr/bin/gnome-session-save"
RESTORE = "/usr/bin/gnome-session-restore"


def conf_with(extra_desktop="", extra=""):
    text = open(native_conf()).read()
    text = text.replace("[host]\n", extra_desktop + "[host]\n") + extra
    return write_conf(text, "buskeys.conf")


def transient_calls(d, user=False):
    calls = d.buses.user_calls() if user else d.buses.system_calls()
    return [args for name, args in calls if name == "StartTransientUnit"]


def props(args):
    return {k: v for k, v in args[2]}


def test_inhibit_sleep_during_the_hand_over_only(host):
    conf = native_conf()
    with Desktop() as d:
        before, states0 = host.snapshot(), d.states()
        rc, out, err = hook(conf, "prepare", "begin", "--dry-run")
        check(rc == 0 and out.rstrip().splitlines()[-1] == f"19. inhibit sleep:idle: systemd-inhibit in {INHIBIT}",
              "dry-run: the inhibitor is not the last step", out, err)
        check(not transient_calls(d), "dry-run started the inhibitor")
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0, f"prepare begin exit {rc}", err)
        check(d.buses.unit_state(INHIBIT) == "active", "the inhibitor is not running during the hand-over")
        calls = transient_calls(d)
        check(len(calls) == 1 and calls[0][:2] == [INHIBIT, "fail"], "StartTransientUnit", calls)
        p = props(calls[0])
        check(p["ExecStart"] == [[INHIBIT_ARGV[0], INHIBIT_ARGV, False]], "ExecStart's argv", p["ExecStart"])
        check(p["Type"] == "exec" and p["CollectMode"] == "inactive-or-failed", "Type, CollectMode", p)
        names = [n for n, _ in d.buses.system_calls() if n in ("StartTransientUnit", "StopUnit", "StartUnit")]
        check(names == ["StopUnit", "StartUnit", "StartTransientUnit"], "the inhibitor is not the last step", names)
        d.buses.clear_calls()
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0, f"release end exit {rc}", err)
        names = [(n, a[0]) for n, a in d.buses.system_calls() if n in ("StopUnit", "StartUnit")]
        check(names == [("StopUnit", INHIBIT), ("StopUnit", "gdm.service"), ("StartUnit", "gdm.service")],
              "the inhibitor is not stopped first", names)
        check(not d.buses.unit_loaded(INHIBIT), "the inhibitor is left after the hand-back")
        check(host.snapshot() == before and d.states() == states0, "not restored", *diff(states0, d.states()),
              *diff(before, host.snapshot()))
        check(not journal_exists(), "journal left")


def test_inhibit_not_started_when_a_step_before_it_fails(host):
    conf = native_conf()
    with Desktop() as d:
        before, states0 = host.snapshot(), d.states()
        host.fail("bus/pci/drivers/amdgpu/unbind", "EBUSY")
        rc, out, err = hook(conf, "prepare", "begin")
        host.clear_fail()
        check(rc == 1, f"prepare begin exit {rc}", err)
        check(not transient_calls(d), "the inhibitor, the last step, was started after a failure before it")
        check(not d.buses.unit_loaded(INHIBIT), "an inhibitor after the rollback")
        check(host.snapshot() == before and d.states() == states0, "not restored")


def test_inhibit_start_fails_rolls_back_everything(host):
    """The inhibitor, the last step, cannot start: exit 1 naming it, and every step before it is
    undone (sysfs, display manager, units as before)."""
    conf = native_conf()
    with Desktop() as d:
        before, states0 = host.snapshot(), d.states()
        d.buses.fail_next_call(INHIBIT, "org.freedesktop.DBus.Error.AccessDenied", "Access denied by the test")
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 1 and INHIBIT in err and "Access denied by the test" in err and "the host was restored" in err,
              f"prepare begin exit {rc}", err)
        check(host.snapshot() == before, "sysfs not restored", *diff(before, host.snapshot()))
        check(d.states() == states0, "units not restored", *diff(states0, d.states()))
        check(d.jobs()[-1] == ("StartUnit", "gdm.service"), "gdm not started again", d.jobs())
        check(not journal_exists(), "journal left")


def test_inhibit_left_over_unit_is_kept(host):
    """A run killed after the inhibitor started, its journal gone (/run wiped): the running unit of
    that name is taken over, and stopped at the hand-back."""
    conf = native_conf()
    with Desktop() as d:
        d.buses.add_unit(INHIBIT, "active")
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0 and "running already" in err, f"prepare begin exit {rc}", err)
        check(d.buses.unit_state(INHIBIT) == "active", "inhibitor")
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0 and d.buses.unit_state(INHIBIT) == "inactive", f"release end exit {rc}", err)


def test_inhibit_off_and_original_format(host):
    with Desktop() as d:
        for conf in (original_conf(), conf_with(extra="inhibit_sleep = no\n")):
            for args in (("prepare", "begin"), ("release", "end")):
                rc, out, err = hook(conf, *args)
                check(rc == 0, f"{args} exit {rc}", err)
        check(not transient_calls(d), "an inhibitor without inhibit_sleep", transient_calls(d))


def test_inhibit_derived_hand_back_without_journal(host):
    conf = native_conf()
    with Desktop() as d:
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0, f"prepare exit {rc}", err)
        os.unlink(f"/run/qemu-hook/{VM}.state")
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0, f"release end exit {rc}", err)
        check(not d.buses.unit_loaded(INHIBIT), "the derived hand-back left the inhibitor")


def _vm_units_conf(units="scream.service"):
    return conf_with(extra=f"[vm {VM}]\nuser_units = {units}\n")


def test_vm_user_units(host):
    conf = _vm_units_conf()
    with Desktop() as d:
        d.buses.add_unit("scream.service", "inactive", user=True)
        before, states0 = host.snapshot(), d.states()
        rc, out, err = hook(conf, "prepare", "begin", "--dry-run")
        check(rc == 0 and out.rstrip().splitlines()[-2].endswith("start user unit scream.service"), "dry-run", out)
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0, f"prepare exit {rc}", err)
        check(d.buses.unit_state("scream.service", user=True) == "active", "scream not started")
        jobs = d.jobs(user=True)
        check(jobs[-1] == ("StartUnit", "scream.service"), "scream not started last on the user's bus", jobs)
        d.buses.clear_calls(user=True)
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0, f"release exit {rc}", err)
        check(d.jobs(user=True)[0] == ("StopUnit", "scream.service"), "scream not stopped first", d.jobs(user=True))
        check(d.buses.unit_state("scream.service", user=True) == "inactive", "scream left running")
        check(host.snapshot() == before and d.states() == states0, "not restored")


def test_vm_user_unit_missing_is_refused(host):
    conf = _vm_units_conf("nonesuch.service")
    with Desktop() as d:
        states0 = d.states()
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 1 and "[vm win10] user_units: nonesuch.service of user liss: no such unit" in err,
              f"exit {rc}", err)
        check(host.writes() == 0 and d.states() == states0 and not d.jobs() and not transient_calls(d),
              "something was done", d.jobs())


def test_vm_user_unit_start_fails_rolls_back(host):
    conf = _vm_units_conf()
    with Desktop() as d:
        d.buses.add_unit("scream.service", "inactive", user=True)
        before, states0 = host.snapshot(), d.states()
        d.buses.fail_next_job("scream.service", "failed", user=True)
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 1 and "scream.service" in err, f"exit {rc}", err)
        check(host.snapshot() == before and d.states() == states0, "not restored", *diff(states0, d.states()),
              *diff(before, host.snapshot()))
        check(not d.buses.unit_loaded(INHIBIT) and not journal_exists(), "inhibitor or journal left")


def _commands_conf():
    return conf_with(extra_desktop=f"before_stop = {SAVE} --save now\nafter_start = {RESTORE}\n")


def _exec_paths(d):
    return [props(a)["ExecStart"][0][1] for a in transient_calls(d, user=True)]


def test_commands_around_the_display_manager(host):
    conf = _commands_conf()
    with Desktop() as d:
        before, states0 = host.snapshot(), d.states()
        rc, out, err = hook(conf, "prepare", "begin", "--dry-run")
        check(f" 1. run before_stop command as the desktop user: {SAVE} --save now" in out and
              f"run after_start command as the desktop user: {RESTORE}" in out, "dry-run", out)
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0, f"prepare exit {rc}", err)
        check(_exec_paths(d) == [[SAVE, "--save", "now"], [RESTORE]], "commands run", _exec_paths(d))
        calls = [(n, a[0]) for n, a in d.buses.user_calls() if n in ("StartTransientUnit", "StopUnit", "StartUnit")]
        check(calls[0][0] == "StartTransientUnit" and calls[-1][0] == "StartTransientUnit",
              "before_stop not before the units' stops, or after_start not after their starts", calls)
        p = props(transient_calls(d, user=True)[0])
        check(p["Type"] == "oneshot" and p["TimeoutStartUSec"] == 60_000_000, "oneshot with the script timeout", p)
        d.buses.clear_calls(user=True)
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0, f"release exit {rc}", err)
        check(_exec_paths(d) == [[SAVE, "--save", "now"], [RESTORE]], "hand-back's commands", _exec_paths(d))
        calls = [n for n, a in d.buses.user_calls() if n in ("StartTransientUnit", "StopUnit", "StartUnit")]
        check(calls[0] == "StartTransientUnit" and calls[-1] == "StartTransientUnit", "hand-back order", calls)
        check(host.snapshot() == before and d.states() == states0, "not restored")


def test_before_stop_failing_fails_the_hand_over(host):
    conf = _commands_conf()
    with Desktop() as d:
        before, states0 = host.snapshot(), d.states()
        d.buses.set_exec_status(SAVE, 3, user=True)
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 1 and f"`{SAVE} --save now` as user {USER}" in err and "exit status 3" in err, f"exit {rc}", err)
        check(host.writes() == 0 and d.states() == states0 and host.snapshot() == before, "host touched")
        check(not any(n == "StopUnit" and a[0] == "gdm.service" for n, a in d.buses.system_calls()), "gdm stopped")
        check(not d.buses.unit_loaded(INHIBIT), "inhibitor left")
        # The failed step is undone like any step half done: its paired after_start runs, after
        # the rollback, with the desktop as it was.
        check(_exec_paths(d) == [[SAVE, "--save", "now"], [RESTORE]], "the rollback's after_start", _exec_paths(d))


def test_after_start_failing_is_logged(host):
    conf = _commands_conf()
    with Desktop() as d:
        d.buses.set_exec_status(RESTORE, 1, user=True)
        rc, out, err = hook(conf, "prepare", "begin")
        check(rc == 0 and f"`{RESTORE}`" in err and "exit status 1" in err and "going on" in err, f"exit {rc}", err)
        check(host.driver(VEGA) == "vfio-pci", "not handed over")
        rc, out, err = hook(conf, "release", "end")
        check(rc == 0 and not journal_exists(), f"release exit {rc}", err)


def test_before_stop_hanging_hits_the_script_timeout(host):
    conf = conf_with(extra_desktop=f"before_stop = {SAVE}\n", extra="script_timeout = 500ms\n")
    with Desktop() as d:
        states0 = d.states()
        d.buses.set_exec_status(SAVE, "hang", user=True)
        t0 = time.monotonic()
        rc, out, err = hook(conf, "prepare", "begin")
        took = time.monotonic() - t0
        check(rc == 1 and "deadline" in err, f"exit {rc}", err)
        check(took < 10, f"a 500 ms script_timeout took {took:.1f} s")
        check(host.writes() == 0 and d.states() == states0, "host touched")


def test_check_shows_the_live_values(host):
    """--check: the inhibitor's unit and whether it runs now, each command's program (FAIL when it
    is missing), each VM user unit's state (FAIL when it does not exist)."""
    import subprocess
    conf = conf_with(extra_desktop=f"before_stop = /bin/true --x\nafter_start = {RESTORE}\n",
                     extra=f"[vm {VM}]\nuser_units = scream.service nonesuch.service\n")
    with Desktop() as d:
        d.buses.add_unit("scream.service", "active", user=True)
        fakehost.check_safe()
        p = subprocess.run([os.environ.get("QEMU_HOOK", os.path.join(fakehost.REPO, "qemu-hook")), "--config", conf,
                            "--check", VM], capture_output=True, text=True, env=fakehost.hook_env(), timeout=120)
        out = p.stdout
        check(p.returncode != 0, f"--check exit {p.returncode} with a missing program and unit", out, p.stderr)
        check("[host] inhibit_sleep = yes (default)" in out, "the setting", out)
        check("sleep inhibitor: systemd-inhibit in qemu-hook-inhibit-" in out and "not running now" in out or
              "sleep inhibitor: /usr/bin/systemd-inhibit" in out, "the inhibitor's live state", out)
        check("[desktop] before_stop = /bin/true --x: /bin/true is there" in out, "before_stop", out)
        check(f"[desktop] after_start = {RESTORE}: {RESTORE}: No such file or directory" in out, "after_start", out)
        check(f"[vm {VM}] user_units: scream.service of user {USER}: active now" in out, "scream", out)
        check(f"[vm {VM}] user_units: nonesuch.service of user {USER}: no such unit" in out, "nonesuch", out)
        check(not transient_calls(d) and not d.jobs() and not d.jobs(user=True), "--check changed something")


# The user-bus calls of a hand-over with both commands and a VM user unit: before_stop first, the
# audio units' stops and starts, after_start, then scream.service; the hand-back the other way.
# Killed at each new call (before it did anything, after it did): release end restores all.
def _full_conf():
    return conf_with(extra_desktop=f"before_stop = {SAVE}\nafter_start = {RESTORE}\n",
                     extra=f"[vm {VM}]\nuser_units = scream.service\n")


def test_the_user_points_with_commands_are_these(host):
    conf = _full_conf()
    with Desktop() as d:
        d.buses.add_unit("scream.service", "inactive", user=True)
        rc, _, err = hook(conf, "prepare", "begin")
        check(rc == 0, f"prepare exit {rc}", err)
        names = [(n, a[0] if n != "StartTransientUnit" else "T") for n, a in d.buses.user_calls()
                 if n in ("StartTransientUnit", "StopUnit", "StartUnit")]
        check(len(names) == 13 and names[0] == ("StartTransientUnit", "T") and names[11] == ("StartTransientUnit", "T")
              and names[12] == ("StartUnit", "scream.service"), "hand-over user calls", names)
        check([n for n, _ in d.buses.system_calls() if n == "StartTransientUnit"] == ["StartTransientUnit"],
              "the inhibitor")
        d.buses.clear_calls(user=True)
        rc, _, err = hook(conf, "release", "end")
        check(rc == 0, f"release exit {rc}", err)
        names = [(n, a[0] if n != "StartTransientUnit" else "T") for n, a in d.buses.user_calls()
                 if n in ("StartTransientUnit", "StopUnit", "StartUnit")]
        check(len(names) == 13 and names[0] == ("StopUnit", "scream.service") and names[1] == ("StartTransientUnit", "T")
              and names[12] == ("StartTransientUnit", "T"), "hand-back user calls", names)


def _killed_at_user_call(direction, k, mode):
    def test(host):
        import signal
        from test_desktop import _spawn_hook, _wait
        conf = _full_conf()
        with Desktop() as d:
            d.buses.add_unit("scream.service", "inactive", user=True)
            from test_points import unnumbered   # card numbers are the kernel's (see there)
            state = lambda: (unnumbered(host.snapshot()), d.states(), d.buses.unit_state("scream.service", user=True),
                             d.buses.unit_loaded(INHIBIT))
            before = state()
            if direction == "hand-back":
                rc, _, err = hook(conf, "prepare", "begin")
                check(rc == 0, f"prepare exit {rc}", err)
            d.buses.hold_call_at(k, mode, user=True)
            p = _spawn_hook(conf, *(("prepare", "begin") if direction == "hand-over" else ("release", "end")))
            try:
                _wait(lambda: d.buses.held_caller(user=True) or p.poll() is not None, f"user call {k}")
                if p.poll() is not None:
                    raise AssertionError(f"the hook ended (exit {p.returncode}) before its call {k}: {p.stderr.read()}")
                os.killpg(p.pid, signal.SIGKILL)
            finally:
                if p.poll() is None:
                    p.kill()
                _, killed_err = p.communicate()
            check(journal_exists(), "no journal left by the killed hook", p.returncode, killed_err)
            rc, out, err = hook(conf, "release", "end")
            check(rc == 0, f"release end after the kill: exit {rc}", err)
            after = state()
            check(after == before, "not restored", *diff(dict(enumerate(before)), dict(enumerate(after))))
            check(not journal_exists(), "journal left")
    return test


for _direction, _ks in (("hand-over", (1, 12, 13)), ("hand-back", (1, 2, 13))):
    for _k in _ks:
        for _mode in ("before", "after"):
            globals()[f"test_killed_at_{_direction.replace('-', '_')}_user_call_{_k}_{_mode}_with_commands"] = \
                _killed_at_user_call(_direction, _k, _mode)
