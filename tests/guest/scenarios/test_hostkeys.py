"""[vm gaming] hugepages and cpu_governor on the real kernel: the 2 MiB pool of the guest (2 GiB
of memory) raised by the hand-over (virsh start gaming) and lowered back to its boot count after
virsh destroy, read from the real /sys/kernel/mm/hugepages; more than the guest has refused with
exit 1, the count back, the message saying how much was reached and the desktop untouched;
--dry-run and --check with the live values (the TCG guest has no cpufreq: "no cpufreq")."""
import os

from lib import guest as g
from lib.registry import scenario

from scenarios.test_real import back_to_boot, cleanup, native, on_weak_gpu

POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB"
FRONT = "/usr/sbin/qemu-hook"


def pool():
    return {k: int(g.read("%s/%s_hugepages" % (POOL, k))) for k in ("nr", "free", "surplus")}


def conf(vm_keys):
    # 60 s: a loaded TCG guest's greetd may take longer than 20 s to start, which is not what
    # these scenarios are about.
    return native(timeout="60s", extra="[vm %s]\n%s" % (g.DOMAIN, vm_keys))


def has_cpufreq():
    return os.path.isdir("/sys/devices/system/cpu/cpu0/cpufreq")


@scenario(timeout=480)
def hugepages_for_the_vm(t):
    """hugepages = 64M: --dry-run shows the pool's live count first in the plan, --check the live
    values; virsh start gaming raises nr_hugepages by 32 (32 free), virsh destroy puts the boot
    count back; the journal recorded it; the host ends as booted."""
    g.write_kvm_conf(conf("hugepages = 64M\ncpu_governor = performance\n"))
    try:
        before = pool()
        t.data["pool_at_boot"] = before
        t.log("pool at boot: %s" % before)
        want = before["nr"] + max(0, 32 - before["free"])
        d = g.run([FRONT, "--dry-run", g.DOMAIN, "prepare", "begin", "-"], timeout=60, input=g.domain_xml())
        t.section("--dry-run", d.out + d.err)
        first = d.out.splitlines()[1] if len(d.out.splitlines()) > 1 else ""
        t.check(first.startswith(" 1. make 64 MiB free as 2 MiB huge pages: compact memory, nr_hugepages %d -> %d"
                                 % (before["nr"], want)), "the plan's first step is the pool, live: %r" % first)
        if has_cpufreq():
            t.check("set the frequency governor of cpu0 to performance" in d.out, "the governor steps")
        else:
            t.check("(skip) set the frequency governor of cpu0 to performance (now unknown): no cpufreq" in d.out,
                    "no cpufreq in the guest: the governor steps are skipped, saying so")
        c = g.run([FRONT, "--check", g.DOMAIN], timeout=120,
                  env=dict(g.LIBVIRT_HOOK_ENV, LIBVIRT_DEFAULT_URI="test:///nonexistent.xml"))
        t.section("--check", c.out + c.err)
        t.check("[vm gaming] hugepages = 64 MiB as 2048 kB pages (32): now nr_hugepages %d (surplus 0), "
                "free_hugepages %d (reserved 0)" % (before["nr"], before["free"]) in c.out,
                "--check shows the pool's live values")
        if not has_cpufreq():
            t.check("[vm gaming] cpu_governor = performance: no cpufreq on any of the" in c.out,
                    "--check says no cpufreq")
        r = g.run(["virsh", "start", g.DOMAIN], timeout=180)
        t.section("virsh start", r.describe())
        if not t.check(r.ok, "virsh start exits 0 (exit %s)" % r.rc):
            t.check(pool() == before, "rolled back: the pool as at boot: %s" % pool())
            return
        during = pool()
        t.data["pool_during"] = during
        t.check(during["nr"] == want and during["free"] >= 32, "nr_hugepages %d, at least 32 free: %s" % (want, during))
        with open("/run/qemu-hook/gaming.state") as f:
            journal = f.read()
        t.check("kind = hugepages\ntarget = hugepages-2048kB\nfrom = %d\nto = %d\n" % (before["nr"], want) in journal,
                "the journal records the pool's step")
        on_weak_gpu(t)
        d = g.run(["virsh", "destroy", g.DOMAIN], timeout=180)
        t.section("virsh destroy", d.describe())
        t.check(d.ok, "virsh destroy exits 0 (exit %s)" % d.rc)
        after = pool()
        t.data["pool_after"] = after
        t.check(after == before, "the pool as at boot: %s" % after)
        back_to_boot(t, "after virsh destroy")
    finally:
        if g.domain_state() == "running":
            g.run(["virsh", "destroy", g.DOMAIN], timeout=120)
        cleanup()


@scenario(timeout=300)
def hugepages_more_than_the_guest_has(t):
    """hugepages = 4G in a 2 GiB guest: prepare begin exits 1 before anything else is done, the
    message says how much was reached, nr_hugepages is back at its count and the desktop never
    moved."""
    g.write_kvm_conf(conf("hugepages = 4G\n"))
    try:
        before = pool()
        r = g.call_hook(g.DOMAIN, "prepare", "begin", g.domain_xml(), timeout=180)
        t.section("prepare begin", r.describe())
        t.data["short_rc"] = r.rc
        t.check(r.rc == 1, "exit 1 (exit %s)" % r.rc)
        t.check("making 4 GiB free as 2 MiB huge pages: only " in r.err and " reached (" in r.err
                and "of the 2048 pages free: free_hugepages " in r.err,
                "the message says how much was reached: %s" % r.err.strip()[-500:])
        t.check("failed at step 1/" in r.err and "the host was restored" in r.err, "at step 1, restored")
        after = pool()
        t.data["pool_after_short"] = after
        t.check(after == before, "nr_hugepages back: %s (at boot %s)" % (after, before))
        t.check(not os.path.exists("/run/qemu-hook/gaming.state"), "no journal left")
        back_to_boot(t, "after the refused hand-over")
    finally:
        cleanup()
