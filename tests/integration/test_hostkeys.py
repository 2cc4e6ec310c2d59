"""[vm NAME] hugepages / hugepage_size and cpu_governor (issue 12, items 5, 6 and 9) on the
emulated host: huge pages raised before anything else changes (the memory compacted first) and
lowered back at the release; every CPU's governor set while the VM runs and each CPU's own put
back; what cannot work refused before anything is done; a failure or a kill at their steps
leaves the host as it was."""
import os
import re
import subprocess
import threading
import time

import fakehost
from fakehost import VEGA
from hookcalls import HOOK, Calls

CALLS = Calls("hostkeys", fakehost.domain_xml("win10", [VEGA]))
JOURNAL = CALLS.journal
hook, prepare, release, dry_run = CALLS.hook, CALLS.prepare, CALLS.release, CALLS.dry_run
NR = "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
COMPACT = "fakeproc/sys/vm/compact_memory"


def governor_path(n):
    return f"devices/system/cpu/cpu{n}/cpufreq/scaling_governor"


def config(vm="hugepages = 64M\n"):
    CALLS.write(fakehost.NATIVE_CONF + "[host]\ntimeout = 5s\n[vm win10]\n" + vm)


def writes(host):
    return [(w.path, w.value, w.result) for w in host.log()]


# ---------------------------------------------------------------- huge pages

def test_hugepages_raised_first_and_given_back(host):
    config()
    before = host.snapshot()
    assert before["hugepages"][2048] == {"nr": 0, "free": 0, "surplus": 0, "resv": 0}, before["hugepages"]
    plan = dry_run()
    assert " 1. make 64 MiB free as 2 MiB huge pages: compact memory, nr_hugepages 0 -> 32 (free now 0 kB)\n" in plan, plan
    assert host.writes() == 0, "--dry-run wrote"
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 32, "free": 32, "surplus": 0, "resv": 0}, host.pool()
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
    assert host.pool() == {"nr": 62, "free": 32, "surplus": 0, "resv": 0}, host.pool()
    assert release()[0] == 0
    assert host.pool() == {"nr": 40, "free": 10, "surplus": 0, "resv": 0}, host.pool()
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
    assert "making 64 MiB free as 2 MiB huge pages: only 40 MiB reached (20 of the 32 pages free: free_hugepages 20 " \
        "less resv_hugepages 0; 20 persistent of the 32 asked: nr_hugepages 20 less surplus_hugepages 0)" in err \
        and "nr_hugepages goes back to 0" in err, err
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
    """The VM still holds 5 pages when the pool is lowered: the kernel keeps them as surplus,
    nr_hugepages counts them (5) and the persistent count is the one written back (0): exit 0, and
    a second release has nothing left to do. Let go, they leave the pool: as before."""
    config()
    before = host.snapshot()
    assert prepare()[0] == 0
    host.take_hugepages(5)
    rc, err = release()
    assert rc == 0, err
    assert host.pool() == {"nr": 5, "free": 0, "surplus": 5, "resv": 0}, host.pool()
    assert not os.path.exists(JOURNAL)
    host.clear_log()
    assert release()[0] == 0
    assert NR not in [p for p, _, _ in writes(host)], writes(host)
    host.let_go_hugepages(5)
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(hugepages={2048: (6, 4, 2)})
def test_surplus_pages_before_stay_surplus(host):
    """6 pages, 2 of them surplus (overcommitted, in use by a process), 4 persistent and free: the
    journal records the persistent count (4), the write asks for every page and the 28 missing
    (the kernel makes the surplus pages persistent first), and the hand-back writes 4 back. The
    kernel lowers a pool by freeing free pages first (set_max_huge_pages): what it ends with is
    6 - 2 free ones freed, none surplus; the 2 pages in use, let go, leave 4 free persistent
    pages, as they would have before, not 6."""
    config()
    assert " 1. make 64 MiB free as 2 MiB huge pages: compact memory, nr_hugepages 4 -> 34 (free now 8 MiB)\n" in dry_run()
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 34, "free": 32, "surplus": 0, "resv": 0}, host.pool()
    with open(JOURNAL) as f:
        assert re.search(r"kind = hugepages\ntarget = hugepages-2048kB\nfrom = 4\nto = 34\n", f.read())
    rc, err = release()
    assert rc == 0, err
    assert host.pool() == {"nr": 4, "free": 2, "surplus": 0, "resv": 0}, host.pool()
    host.let_go_hugepages(2)
    assert host.pool() == {"nr": 4, "free": 4, "surplus": 0, "resv": 0}, host.pool()


@fakehost.variant(hugepages={2048: (3, 0, 3)})
def test_a_pool_of_surplus_pages_ends_as_before(host):
    """No persistent pool, 3 surplus pages in use (nr_overcommit_hugepages): the hand-over makes
    32 free pages, the hand-back writes 0 and the pool is exactly as before (the old count of all
    pages, written back, would have kept 3 persistent pages)."""
    config()
    before = host.snapshot()
    assert before["hugepages"][2048] == {"nr": 3, "free": 0, "surplus": 3, "resv": 0}, before["hugepages"]
    assert " 1. make 64 MiB free as 2 MiB huge pages: compact memory, nr_hugepages 0 -> 35 (free now 0 kB)\n" in dry_run()
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 35, "free": 32, "surplus": 0, "resv": 0}, host.pool()
    host.clear_log()
    rc, err = release()
    assert rc == 0, err
    assert writes(host)[-1] == (NR, "0", "0"), writes(host)
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(hugepages={2048: (40, 40, 0, 30)})
def test_reserved_pages_are_not_free(host):
    """40 free pages, 30 of them reserved (a mapping not yet faulted in): 10 are free for the VM,
    22 more are allocated; the hand-back frees them and keeps the reserved ones."""
    config()
    before = host.snapshot()
    assert " 1. make 64 MiB free as 2 MiB huge pages: compact memory, nr_hugepages 40 -> 62 (free now 20 MiB)\n" in dry_run()
    rc, err = prepare()
    assert rc == 0, err
    assert host.pool() == {"nr": 62, "free": 62, "surplus": 0, "resv": 30}, host.pool()
    rc, err = release()
    assert rc == 0, err
    assert host.snapshot() == before, host.snapshot()


@fakehost.variant(hugepages={2048: (40, 40, 0, 30)}, hugepage_memory_kb=100 * 1024)
def test_reserved_pages_do_not_make_the_apply_pass(host):
    """Room for 50 pages in all: the pool reaches 50, 40 free for the VM of the 62 asked: exit 1,
    the pool back to 40."""
    config()
    before = host.snapshot()
    rc, err = prepare()
    assert rc == 1, err
    assert "only 40 MiB reached (20 of the 32 pages free: free_hugepages 50 less resv_hugepages 30; 50 persistent " \
        "of the 62 asked" in err, err
    assert host.snapshot() == before, host.snapshot()


def resv_file(host):
    return f"{host.backing}/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages"


def test_a_pool_that_cannot_be_read_is_refused(host):
    """A count that is no count: the plan is refused naming the file, nothing written."""
    config()
    with open(resv_file(host), "w") as f:
        f.write("-1\n")
    rc, err = prepare()
    assert rc == 1, err
    assert "reading the 2048 kB huge pages (/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages): " \
        "Input/output error" in err, err
    assert host.writes() == 0, host.log()


def test_a_read_back_that_fails_names_the_file(host):
    """resv_hugepages turns unreadable while the hook compacts memory (held there by a hang):
    the read back after the write names the file, and the pool goes back to its count."""
    config()
    before = host.snapshot()
    host.hang(COMPACT)
    result = []
    t = threading.Thread(target=lambda: result.append(prepare()))
    t.start()
    deadline = time.monotonic() + 4
    while not any(p.endswith(COMPACT) for p, _, _ in host.blocked()):
        assert time.monotonic() < deadline, "the compaction write never came"
        time.sleep(0.02)
    with open(resv_file(host), "w") as f:
        f.write("x\n")
    host.unhang()
    t.join(30)
    rc, err = result[0]
    assert rc == 1, err
    assert "raising the 2 MiB huge pages to 32: reading /sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages " \
        "back failed: Input/output error" in err and "the host was restored" in err, err
    with open(resv_file(host), "w") as f:
        f.write("0\n")
    assert host.snapshot() == before, host.snapshot()


def test_one_gigabyte_pages(host):
    config("hugepages = 1G\nhugepage_size = 1G\n")
    host.memory(hugepages=2 * 1024 * 1024)
    before = host.snapshot()
    assert prepare()[0] == 0
    assert host.pool(1048576) == {"nr": 1, "free": 1, "surplus": 0, "resv": 0} and host.pool()["nr"] == 0
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
    def at_path(host):
        assert writes(host)[-1][0] == path, f"write {k} is not {path}: {writes(host)}"

    def test(host):
        config(vm)
        CALLS.killed_then_released(host, direction, k, mode, killed=at_path)
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
    p = subprocess.run([HOOK, "--config", CALLS.conf, "--check"], capture_output=True, text=True,
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
    assert finding(out, "ok", "[vm win10] hugepages = 64 MiB as 2048 kB pages (32): now nr_hugepages 40 "
                   "(surplus 0), free_hugepages 10 (reserved 0); more to allocate at the hand-over (MemAvailable"), out
    assert finding(out, "info", "[vm win10] 22 more pages (44 MiB) at the hand-over, after compacting memory"), out
    assert finding(out, "ok", "[vm win10] cpu_governor = performance: offered by the 4 CPUs with cpufreq "
                   "(now schedutil powersave)"), out
    assert host.writes() == 0, host.log()


@fakehost.variant(hugepages={2048: (42, 40, 2, 30)})
def test_check_does_not_count_reserved_pages_as_free(host):
    config("hugepages = 64M\n")
    rc, out = check_report()
    assert finding(out, "ok", "[vm win10] hugepages = 64 MiB as 2048 kB pages (32): now nr_hugepages 42 "
                   "(surplus 2), free_hugepages 40 (reserved 30); more to allocate at the hand-over"), out
    assert finding(out, "info", "[vm win10] 22 more pages (44 MiB) at the hand-over, after compacting memory"), out
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
