"""[vm NAME] hugepages / hugepage_size and cpu_governor (issue 12, items 5, 6 and 9) on the
emulated host: huge pages raised before anything else changes (the memory compacted first) and
lowered back at the release; every CPU's governor set while the VM runs and each CPU's own put
back; what cannot work refused before anything is done; a failure or a kill at their steps
leaves the host as it was."""
import os
import re
import subprocess

import fakehost
from fakehost import VEGA

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
CONF = "/run/fakehost/hostkeys.conf"
JOURNAL = "/run/qemu-hook/win10.state"
XML = fakehost.domain_xml("win10", [VEGA])
NR = "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
COMPACT = "fakeproc/sys/vm/compact_memory"


def governor_path(n):
    return f"devices/system/cpu/cpu{n}/cpufreq/scaling_governor"


def config(vm="hugepages = 64M\n"):
    os.makedirs(os.path.dirname(CONF), exist_ok=True)
    with open(CONF, "w") as f:
        f.write(fakehost.NATIVE_CONF + "[host]\ntimeout = 5s\n[vm win10]\n" + vm)
    os.chmod(CONF, 0o644)
    fakehost.sh("rm", "-rf", "/run/qemu-hook")


def hook(*args, new_session=False):
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", CONF, *args], XML, new_session=new_session)
    return rc, out, err


def prepare(**kw):
    rc, out, err = hook("win10", "prepare", "begin", "-", **kw)
    assert out == "", f"hook mode wrote to stdout: {out!r}"
    return rc, err


def release(**kw):
    rc, out, err = hook("win10", "release", "end", "-", **kw)
    assert out == "", f"hook mode wrote to stdout: {out!r}"
    return rc, err


def dry_run():
    rc, out, err = hook("--dry-run", "win10", "prepare", "begin", "-")
    assert rc == 0, f"--dry-run: exit {rc}: {err}"
    return out


def writes(host):
    return [(w.path, w.value, w.result) for w in host.log()]


# ---------------------------------------------------------------- huge pages

def test_hugepages_raised_first_and_given_back(host):
    config()
    before = host.snapshot()
    assert before["hugepages"][2048] == {"nr": 0, "free": 0, "surplus": 0}, before["hugepages"]
    plan = dry_run()
    assert " 1. make 64 MiB free as 2 MiB huge pages: nr_hugepages 0 -> 32 (free now 0 kB)\n" in plan, plan
    assert host.writes() == 0, "--dry-run wrote"
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 32, "free": 32, "surplus": 0}, host.pool()
    w = writes(host)
    # Compaction, then the pool, before anything of the GPU or the consoles.
    assert w[:2] == [(COMPACT, "1", "0"), (NR, "32", "0")], w
    assert host.driver(VEGA) == "vfio-pci"
    with open(JOURNAL) as f:
        journal = f.read()
    assert re.search(r"kind = hugepages\ntarget = hugepages-2048kB\nfrom = 0\nto = 32\n(.*\n)*?want = 32\nfree = 0\n",
                     journal), journal
    host.clear_log()
    rc, err = release()
    assert rc == 0, err
    assert writes(host)[-1] == (NR, "0", "0"), writes(host)
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(hugepages={2048: (40, 10)})
def test_hugepages_counts_what_is_free_already(host):
    """40 pages in the pool, 10 of them free: 22 more make the 32 the VM wants."""
    config()
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 62, "free": 32, "surplus": 0}, host.pool()
    assert release()[0] == 0
    assert host.pool() == {"nr": 40, "free": 10, "surplus": 0}, host.pool()
    assert host.snapshot() == before


@fakehost.variant(hugepages={2048: (40, 40)})
def test_hugepages_free_already_is_a_skip(host):
    config()
    assert "(skip) make 64 MiB free as 2 MiB huge pages: nr_hugepages 40 -> 40 (free now 80 MiB): free already" \
        in dry_run()
    assert prepare()[0] == 0
    assert not any(p in (NR, COMPACT) for p, _, _ in writes(host)), writes(host)
    assert release()[0] == 0
    assert host.pool()["nr"] == 40


@fakehost.variant(hugepage_memory_kb=40 * 1024)
def test_not_enough_memory_changes_nothing(host):
    """Room for 20 pages of the 32: exit 1 saying how much was reached, the pool back to its count,
    and nothing else was touched."""
    config()
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 1, err
    assert "making 64 MiB free as 2 MiB huge pages: only 40 MiB reached (free_hugepages 20 of 32, nr_hugepages 20 " \
        "of the 32 asked)" in err and "nr_hugepages goes back to 0" in err, err
    assert "failed at step 1/" in err and "the host was restored" in err, err
    assert [p for p, _, _ in writes(host)] == [COMPACT, NR, NR], writes(host)
    assert host.snapshot() == before, host.snapshot()
    assert not os.path.exists(JOURNAL)


@fakehost.variant(hugepage_memory_kb=128 * 1024, fragmented_kb=100 * 1024)
def test_compaction_makes_fragmented_memory_usable(host):
    """28 MiB usable before compaction, 128 MiB after: the hook compacts before it raises the pool."""
    config()
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool()["free"] == 32 and host.memory()["fragmented"] == 0
    assert release()[0] == 0


@fakehost.variant(hugepage_memory_kb=128 * 1024, fragmented_kb=100 * 1024)
def test_a_failed_compaction_is_a_warning(host):
    config()
    host.fail(COMPACT, "EIO")
    rc, err = prepare()
    assert rc == 1 and "compacting memory (/proc/sys/vm/compact_memory) before raising the 2 MiB huge pages " \
        "failed: Input/output error; going on" in err and "only 28 MiB reached" in err, err
    assert host.pool()["nr"] == 0


def test_pages_in_use_at_the_release_become_surplus(host):
    """The VM still holds 5 pages when the pool is lowered: the kernel keeps them as surplus, and
    nr_hugepages reads the count written back."""
    config()
    assert prepare()[0] == 0
    host.take_hugepages(5)
    rc, err = release()
    assert rc == 0, err
    assert host.pool() == {"nr": 0, "free": 0, "surplus": 5}, host.pool()


def test_one_gigabyte_pages(host):
    config("hugepages = 1G\nhugepage_size = 1G\n")
    host.memory(hugepages=2 * 1024 * 1024)
    before = host.snapshot()
    assert prepare()[0] == 0
    assert host.pool(1048576) == {"nr": 1, "free": 1, "surplus": 0} and host.pool()["nr"] == 0
    assert release()[0] == 0
    assert host.snapshot() == before


@fakehost.variant(gigantic=False)
def test_a_size_the_kernel_lacks_is_refused_before_acting(host):
    config("hugepages = 1G\nhugepage_size = 1G\n")
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 1 and "refused: [vm win10] hugepages: the kernel has no 1048576 kB huge pages" in err and \
        "nothing was changed" in err, err
    assert host.writes() == 0 and host.snapshot() == before


def test_a_failed_pool_write_rolls_back(host):
    config()
    before = host.snapshot()
    host.fail(NR, "ENOMEM", count=1, value="32")
    rc, err = prepare()
    assert rc == 1 and "raising the 2 MiB huge pages to 32" in err and "Cannot allocate memory" in err, err
    assert host.snapshot() == before and not os.path.exists(JOURNAL)


def test_a_failure_later_gives_the_pages_back(host):
    """The R5's probe fails: every step before it is undone, huge pages included."""
    config()
    before = host.snapshot()
    host.fail("bus/pci/drivers_probe", "EIO", count=1, value="0000:08:00.0")
    rc, err = prepare()
    assert rc == 1, err
    assert host.snapshot() == before, host.snapshot()
    assert (NR, "0", "0") in writes(host)


def killed(direction, k, mode, vm, path):
    """The hook SIGKILLed at write k (of PATH) of a hand-over or hand-back, before or after it;
    release end then restores the host exactly."""
    def test(host):
        config(vm)
        before = host.snapshot()
        if direction == "hand-back":
            assert prepare()[0] == 0
        host.clear_log()
        host.kill_at(k, mode)
        rc, err = (prepare if direction == "hand-over" else release)(new_session=True)
        assert rc == -9, f"not killed at write {k} {mode} it (exit {rc}): {err}"
        assert writes(host)[-1][0] == path, f"write {k} is not {path}: {writes(host)}"
        assert os.path.exists(JOURNAL), "killed without a journal"
        rc, err = release()
        assert rc == 0, f"release end after the kill: exit {rc}: {err}"
        assert host.snapshot() == before, host.snapshot()
        assert not os.path.exists(JOURNAL)
    return test


# The hand-over's writes 1 (compaction) and 2 (the pool); the hand-back's last (the pool).
for _k, _path in ((1, COMPACT), (2, NR)):
    for _mode in ("before", "after"):
        globals()[f"test_killed_at_hugepages_write_{_k}_{_mode}"] = \
            killed("hand-over", _k, _mode, "hugepages = 64M\n", _path)
for _mode in ("before", "after"):
    globals()[f"test_killed_at_the_hand_back_of_hugepages_{_mode}"] = \
        killed("hand-back", 10, _mode, "hugepages = 64M\n", NR)


# ---------------------------------------------------------------- governors

GOV = "cpu_governor = performance\n"


def test_governor_set_while_the_vm_runs(host):
    config(GOV)
    before = host.snapshot()
    assert before["governors"] == {f"cpu{n}": "schedutil" for n in range(4)}, before["governors"]
    plan = dry_run()
    for n in range(4):
        assert f". set the frequency governor of cpu{n} to performance (now schedutil)\n" in plan, plan
    rc, err = prepare()
    assert rc == 0, err
    assert host.governors() == {f"cpu{n}": "performance" for n in range(4)}, host.governors()
    # Near the CPU step: after the moves and the consoles' rebind.
    paths = [p for p, _, _ in writes(host)]
    # after the R5 is on its display driver (its probe the write before), as the CPU step
    assert paths[-5:] == ["bus/pci/drivers_probe"] + [governor_path(n) for n in range(4)], paths
    with open(JOURNAL) as f:
        assert "kind = cpu-governor\ntarget = cpu2\nfrom = schedutil\nto = performance\n" in f.read()
    rc, err = release()
    assert rc == 0, err
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(offline_cpus=(2,))
def test_each_cpu_gets_its_own_back_and_offline_ones_are_left_alone(host):
    config(GOV)
    assert host.write(governor_path(1), "powersave") == 0
    assert host.write(governor_path(3), "performance") == 0
    assert host.write(governor_path(2), "ondemand") == 16    # EBUSY: inactive policy
    before = host.snapshot()
    assert before["governors"] == {"cpu0": "schedutil", "cpu1": "powersave", "cpu3": "performance"}
    plan = dry_run()
    assert "(skip) set the frequency governor of cpu2 to performance (now unknown): offline" in plan, plan
    assert "(skip) set the frequency governor of cpu3 to performance (now performance): set already" in plan, plan
    host.clear_log()
    assert prepare()[0] == 0
    assert sorted(p for p, _, _ in writes(host) if "cpufreq" in p) == [governor_path(0), governor_path(1)]
    assert release()[0] == 0
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(cpufreq="pstate")
def test_an_unavailable_governor_is_refused_before_acting(host):
    config("hugepages = 64M\ncpu_governor = schedutil\n")
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 1 and "refused: [vm win10] cpu_governor = schedutil: CPU 0 offers only performance powersave " \
        "(scaling_available_governors); nothing was changed" in err, err
    assert host.writes() == 0 and host.snapshot() == before


@fakehost.variant(cpufreq=None)
def test_cpus_without_cpufreq_are_said_and_skipped(host):
    config(GOV)
    plan = dry_run()
    assert "(skip) set the frequency governor of cpu0 to performance (now unknown): no cpufreq" in plan, plan
    assert prepare()[0] == 0
    assert not any("cpufreq" in p for p, _, _ in writes(host))
    assert release()[0] == 0


def test_a_failed_governor_write_rolls_back_everything(host):
    config("hugepages = 64M\n" + GOV)
    before = host.snapshot()
    host.fail(governor_path(2), "EIO", count=1)
    rc, err = prepare()
    assert rc == 1 and "setting the frequency governor of cpu2 to performance" in err and \
        "the host was restored" in err, err
    assert host.snapshot() == before, host.snapshot()
    assert not os.path.exists(JOURNAL)


# Hand-over writes: vtcon, Vega x3, R5 x3, then cpu0..cpu3 (8..11); hand-back: cpu3..cpu0 first.
for _k, _cpu in ((8, 0), (11, 3)):
    for _mode in ("before", "after"):
        globals()[f"test_killed_at_governor_write_{_k}_{_mode}"] = \
            killed("hand-over", _k, _mode, GOV, governor_path(_cpu))
for _k, _cpu in ((1, 3), (4, 0)):
    for _mode in ("before", "after"):
        globals()[f"test_killed_at_the_hand_back_of_governor_write_{_k}_{_mode}"] = \
            killed("hand-back", _k, _mode, GOV, governor_path(_cpu))


def test_the_harness_guards_compact_memory(host):
    """The hook's /proc/sys/vm/compact_memory is the emulation's here, never the machine's."""
    assert fakehost.compact_is_fake()
    st = os.stat("/proc/sys/vm/compact_memory")
    assert st.st_dev == os.stat("/sys/.fakesys/marker").st_dev


# ---------------------------------------------------------------- --check

def check_report():
    fakehost.check_safe()
    p = subprocess.run([HOOK, "--config", CONF, "--check"], capture_output=True, text=True,
                       env=fakehost.hook_env(), timeout=120)
    return p.returncode, p.stdout


def finding(out, level, *words):
    return next((line for line in out.splitlines() if line.startswith(f"  {level:<5} ") and all(w in line for w in words)),
                "")


@fakehost.variant(hugepages={2048: (40, 10)})
def test_check_shows_the_live_values(host):
    config("hugepages = 64M\ncpu_governor = performance\n")
    assert host.write(governor_path(1), "powersave") == 0
    host.clear_log()
    rc, out = check_report()
    assert "\nhuge pages and CPU governor:\n" in out, out
    assert finding(out, "ok", "[vm win10] hugepages = 64 MiB as 2048 kB pages (32): now nr_hugepages 40, "
                   "free_hugepages 10; more to allocate at the hand-over (MemAvailable"), out
    assert finding(out, "info", "[vm win10] 22 more pages (44 MiB) at the hand-over, after compacting memory"), out
    assert finding(out, "ok", "[vm win10] cpu_governor = performance: offered by the 4 CPUs with cpufreq "
                   "(now schedutil powersave)"), out
    assert host.writes() == 0, host.log()


@fakehost.variant(cpufreq="pstate", gigantic=False)
def test_check_fails_what_could_never_work(host):
    config("hugepages = 2G\nhugepage_size = 1G\ncpu_governor = schedutil\n")
    rc, out = check_report()
    assert rc == 1, out
    assert finding(out, "FAIL", "[vm win10] hugepages = 2048 MiB: the kernel has no 1048576 kB huge pages"), out
    assert finding(out, "FAIL", "[vm win10] cpu_governor = schedutil: CPU 0 offers only performance powersave"), out


@fakehost.variant(cpufreq=None)
def test_check_says_no_cpufreq(host):
    config("cpu_governor = performance\n")
    rc, out = check_report()
    assert finding(out, "warn", "[vm win10] cpu_governor = performance: no cpufreq on any of the 4 CPUs"), out
