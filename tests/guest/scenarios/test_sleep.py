"""Issue 12 items 7-8 on the real systemd and logind: the sleep inhibitor of [host] inhibit_sleep
(systemd-inhibit --list shows it while the GPU is handed over, and not after), the desktop user's
before_stop / after_start commands and a [vm gaming] user unit, each in desk's own systemd."""
import os

from lib import guest as g
from lib.registry import scenario

from scenarios.test_real import back_to_boot, cleanup, native, on_weak_gpu

RECEIVER = "qh-receiver.service"
RECEIVER_FILE = "/etc/systemd/user/" + RECEIVER
BEFORE, AFTER = "/tmp/qh-before-stop", "/tmp/qh-after-start"


def inhibitors():
    """systemd-inhibit --list's lines naming qemu-hook."""
    r = g.run(["systemd-inhibit", "--list", "--no-pager", "--no-legend"], timeout=30)
    return [line for line in r.out.splitlines() if "qemu-hook" in line]


def markers():
    return {p: os.path.exists(p) for p in (BEFORE, AFTER)}


def clear_markers():
    for p in (BEFORE, AFTER):
        if os.path.exists(p):
            os.unlink(p)


@scenario(timeout=420)
def sleep_inhibited_and_user_commands(t):
    """prepare begin with the native config (inhibit_sleep on by default, a before_stop and an
    after_start command, [vm gaming] user_units): during, logind lists a block inhibitor
    who=qemu-hook what=sleep:idle why 'VM gaming has the GPU', the commands ran as desk (their
    files are desk's) and the receiver unit is active in desk's systemd; after release end the
    inhibitor is gone, the unit inactive, the commands ran again, the host as booted."""
    with open(RECEIVER_FILE, "w") as f:
        f.write("[Unit]\nDescription=a stand-in for the origin's Scream receiver\n"
                "[Service]\nType=exec\nExecStart=/usr/bin/sleep infinity\n")
    g._systemctl(["daemon-reload"], user=True)
    g.write_kvm_conf(native(extra="") .replace("[desktop]\n", "[desktop]\nbefore_stop = /usr/bin/touch %s\n"
                                                "after_start = /usr/bin/touch %s\n" % (BEFORE, AFTER))
                     + "[vm gaming]\nuser_units = %s\n" % RECEIVER)
    clear_markers()
    xml = g.domain_xml()
    try:
        t.check(not inhibitors(), "no qemu-hook inhibitor at the start: %s" % inhibitors())
        r = g.run(["qemu-hook", "--dry-run", g.DOMAIN, "prepare", "begin"], timeout=60, input=xml)
        t.section("dry-run", r.out + r.err)
        cursor = g.journal_cursor()
        r = g.call_hook(g.DOMAIN, "prepare", "begin", xml, timeout=180)
        t.section("prepare begin", r.describe())
        journal = g.hook_journal(cursor)
        t.section("the hook's journal", "\n".join("%s %s" % (e.get("__REALTIME_TIMESTAMP", "")[-9:], e["MESSAGE"])
                                                   for e in journal))
        t.data["prepare_secs"] = round(r.secs, 2)
        if not t.check(r.ok, "prepare begin exits 0 (exit %s)" % r.rc):
            return
        on_weak_gpu(t)
        held = inhibitors()
        t.section("systemd-inhibit --list (during)", "\n".join(held))
        t.data["inhibitors_during"] = held
        t.check(len(held) == 1 and "sleep:idle" in held[0] and "VM gaming has the GPU" in held[0]
                and "block" in held[0], "one qemu-hook inhibitor, what=sleep:idle, why naming gaming, mode block")
        unit = g.unit_properties(["qemu-hook-inhibit-gaming.service"], ("ActiveState", "ExecStart"))
        t.section("the inhibitor's unit", repr(unit))
        t.check(unit.get("qemu-hook-inhibit-gaming.service", {}).get("ActiveState") == "active",
                "qemu-hook-inhibit-gaming.service is active")
        m = markers()
        owners = {p: os.stat(p).st_uid for p in m if m[p]}
        t.data["markers_during"], t.data["marker_owners"] = m, owners
        t.check(all(m.values()) and set(owners.values()) == {g.DESK_UID},
                "before_stop and after_start ran as desk: %s, owners %s" % (m, owners))
        t.check(g.unit_state(RECEIVER, user=True) == "active", "%s active in desk's systemd: %s"
                % (RECEIVER, g.unit_state(RECEIVER, user=True)))
        clear_markers()

        cursor = g.journal_cursor()
        r = g.call_hook(g.DOMAIN, "release", "end", xml, timeout=180)
        t.section("release end", r.describe())
        t.section("the hook's journal (release)", "\n".join(
            "%s %s" % (e.get("__REALTIME_TIMESTAMP", "")[-9:], e["MESSAGE"]) for e in g.hook_journal(cursor)))
        t.data["release_secs"] = round(r.secs, 2)
        t.check(r.ok, "release end exits 0 (exit %s)" % r.rc)
        back_to_boot(t, "after release end")
        after = inhibitors()
        t.data["inhibitors_after"] = after
        t.check(not after, "no qemu-hook inhibitor after the hand-back: %s" % after)
        t.check(g.unit_state(RECEIVER, user=True) == "inactive", "%s stopped: %s"
                % (RECEIVER, g.unit_state(RECEIVER, user=True)))
        m = markers()
        t.data["markers_after"] = m
        t.check(all(m.values()), "the hand-back ran before_stop and after_start: %s" % m)
    finally:
        cleanup()
        clear_markers()
        g._systemctl(["stop", RECEIVER], user=True)
        os.unlink(RECEIVER_FILE)
        g._systemctl(["daemon-reload"], user=True)
