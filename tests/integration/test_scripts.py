"""The dispatcher's job (SPEC 7): the scripts of qemu.d/VM/OPERATION/SUB-OPERATION, run by the
real binary on the emulated host, as libvirt runs the hook. Each test script records its
arguments, its stdin and the big GPU's driver at the moment it runs, so the assertions are on
order, input, the emulated sysfs, exit codes and messages."""
import os
import re
import shutil
import subprocess
import time

import fakehost
from fakehost import VEGA, VEGA_AUDIO

HOOK = os.path.abspath(os.environ.get("QEMU_HOOK", "qemu-hook"))
HOOKS = "/run/fakehost/hooks"
QEMU_D = HOOKS + "/qemu.d"
RECORD = "/run/fakehost/scripts.log"
XML = fakehost.domain_xml("win10", [VEGA, VEGA_AUDIO])

CONF = fakehost.NATIVE_CONF + """[host]
script_timeout = {script_timeout}
"""


def setup(conf=True, script_timeout="60s"):
    shutil.rmtree(HOOKS, ignore_errors=True)
    shutil.rmtree("/run/qemu-hook", ignore_errors=True)
    for leftover in [RECORD] + [f"/run/fakehost/{n}" for n in os.listdir("/run/fakehost") if n.startswith("scripts.log.")]:
        if os.path.exists(leftover):
            os.unlink(leftover)
    os.makedirs(QEMU_D, mode=0o755)
    if conf:
        with open(HOOKS + "/kvm.conf", "w") as f:
            f.write(CONF.format(script_timeout=script_timeout))
        os.chmod(HOOKS + "/kvm.conf", 0o644)


def script(rel, name=None, body="exit 0", mode=0o755, text=None):
    """qemu.d/REL as a recording script (NAME in the record, BODY at its end)."""
    return fakehost.recording_script(f"{QEMU_D}/{rel}", RECORD, name, body, mode, text)


def record():
    return fakehost.read_record(RECORD)


def stdin_of(name):
    with open(f"{RECORD}.{name}.stdin") as f:
        return f.read()


def hook(vm, op, sub, xml=XML, *options):
    rc, out, err, secs = fakehost.run_hook([HOOK, "--hooks-dir", HOOKS, *options, vm, op, sub, "-"], xml)
    return rc, out, err


def expect(result, rc, *messages):
    got, out, err = result
    assert got == rc, f"exit {got}, expected {rc}; stderr:\n{err}"
    for m in messages:
        assert m in err, f"{m!r} not in stderr:\n{err}"
    return err


def test_prepare_scripts_run_after_the_hand_over_in_sorted_order(host):
    setup()
    for name in ("20-b", "10-a", "9-c"):
        script(f"win10/prepare/begin/{name}")
    script("win10/prepare/begin/.hidden")
    script("win10/prepare/begin/15-not-executable", mode=0o644)
    os.makedirs(f"{QEMU_D}/win10/prepare/begin/17-a-directory")
    before = host.snapshot()
    err = expect(hook("win10", "prepare", "begin"), 0, "15-not-executable: skipped, not executable")
    # strcmp order, each with libvirt's arguments, each finding the GPU on vfio-pci already
    assert record() == [[n, "win10", "prepare", "begin", "-", "vfio-pci"] for n in ("10-a", "20-b", "9-c")], \
        (record(), err)
    assert stdin_of("10-a") == XML and stdin_of("9-c") == XML
    assert host.driver(VEGA) == "vfio-pci"
    # the journal records them as steps; the hand-back undoes the rest
    with open("/run/qemu-hook/win10.state") as f:
        assert len(re.findall(r"^kind\s*=\s*script$", f.read(), re.M)) == 3
    expect(hook("win10", "release", "end"), 0)
    assert host.snapshot() == before


def test_failing_prepare_script_rolls_the_hand_over_back(host):
    setup()
    script("win10/prepare/begin/10-ok")
    script("win10/prepare/begin/20-fails", body="echo 'no licence server' >&2; exit 3")
    script("win10/prepare/begin/30-never")
    before = host.snapshot()
    err = expect(hook("win10", "prepare", "begin"), 1, "no licence server",
                 "hook script " + QEMU_D + "/win10/prepare/begin/20-fails exited with status 3",
                 "run hook script qemu.d/VM/prepare/begin/20-fails", "the host was restored")
    assert [r[0] for r in record()] == ["10-ok", "20-fails"], (record(), err)
    assert host.snapshot() == before
    assert not os.path.exists("/run/qemu-hook/win10.state")
    # libvirt's release end after the failed start: nothing left to do, no script of release
    expect(hook("win10", "release", "end"), 0)
    assert host.snapshot() == before


def test_sub_operation_as_a_single_file(host):
    setup()
    script("win10/prepare/begin", name="single")
    expect(hook("win10", "prepare", "begin"), 0)
    assert record() == [["single", "win10", "prepare", "begin", "-", "vfio-pci"]]


def test_release_scripts_run_before_the_hand_back_and_do_not_stop_it(host):
    setup()
    before = host.snapshot()
    expect(hook("win10", "prepare", "begin"), 0)
    script("win10/release/end/10-fails", body="exit 4")
    script("win10/release/end/20-runs-anyway")
    expect(hook("win10", "release", "end"), 1, "10-fails exited with status 4")
    # both ran, while the GPU was still on vfio-pci; the host got it back all the same
    assert [(r[0], r[-1]) for r in record()] == [("10-fails", "vfio-pci"), ("20-runs-anyway", "vfio-pci")]
    assert host.snapshot() == before


def test_release_scripts_run_with_a_malformed_xml(host):
    """A release whose domain XML cannot be read (no journal says whether the VM is ours): its
    scripts still run, then it exits 2 having touched no device; with a broken config neither."""
    setup()
    script("win10/release/end/10-cleanup")
    expect(hook("win10", "release", "end", "<domain><devices><hostdev"), 2, "domain XML")
    assert [r[0] for r in record()] == ["10-cleanup"], record()
    assert host.writes() == 0, host.log()
    with open(HOOKS + "/kvm.conf", "a") as f:
        f.write("[gpu]\nadress = x\n")
    expect(hook("win10", "release", "end", "<domain><devices><hostdev"), 2, "kvm.conf:")
    assert [r[0] for r in record()] == ["10-cleanup"], record()
    assert host.writes() == 0, host.log()


def test_other_operations_run_their_scripts(host):
    setup()
    for op, sub in (("start", "begin"), ("started", "begin"), ("stopped", "end"), ("reconnect", "begin"),
                    ("migrate", "begin"), ("frobnicate", "now")):
        script(f"win10/{op}/{sub}/10-x", name=op)
        expect(hook("win10", op, sub), 0)
    assert [r[:4] for r in record()] == [[op, "win10", op, sub] for op, sub in (
        ("start", "begin"), ("started", "begin"), ("stopped", "end"), ("reconnect", "begin"),
        ("migrate", "begin"), ("frobnicate", "now"))]
    assert host.writes() == 0, host.log()


def test_a_failing_script_kills_no_running_vm(host):
    """libvirt kills a running VM whose hook fails on started or reconnect: exit 0 there, and
    fail the operations where a failure only stops something from starting."""
    setup()
    for op, sub in (("started", "begin"), ("reconnect", "begin")):
        script(f"win10/{op}/{sub}/10-fails", body="exit 1")
        expect(hook("win10", op, sub), 0, "10-fails exited with status 1", "exiting 0 all the same")
    script("win10/start/begin/10-fails", body="exit 1")
    script("win10/start/begin/20-not-after-a-failure")
    expect(hook("win10", "start", "begin"), 1, "10-fails exited with status 1")
    # each ran once; the one after a failure of `start` did not
    assert [r[:3] for r in record()] == [["10-fails", "win10", op] for op in ("started", "reconnect", "start")], \
        record()


def test_deadline_kills_the_script_and_what_it_started(host):
    setup(script_timeout="300ms")
    script("win10/start/begin/10-hangs",
           body="trap '' TERM; sleep 1000 & echo $! > /run/fakehost/scripts.log.child; sleep 1000")
    t0 = time.monotonic()
    expect(hook("win10", "start", "begin"), 1, "10-hangs: still running at its deadline",
           "it was stopped with SIGKILL", "script_timeout")
    took = time.monotonic() - t0
    # SIGTERM (ignored) at 300 ms, SIGKILL as long again later: not before, and not the 60 s default
    assert 0.6 <= took < 3, took
    with open("/run/fakehost/scripts.log.child") as f:
        child = int(f.read())
    assert fakehost.Host.wait(None, lambda: not os.path.exists(f"/proc/{child}") or
                              open(f"/proc/{child}/stat").read().split()[2] == "Z"), \
        "the script's background child survived the deadline"


def scratch(name, uid=0, mode=0o755):
    """An empty directory /run/fakehost/NAME, owned by UID, with MODE."""
    path = f"/run/fakehost/{name}"
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.chmod(path, mode)
    os.chown(path, uid, uid)
    return path


def test_unsafe_scripts_are_refused_before_anything_changes(host):
    setup()
    path = script("win10/prepare/begin/10-x")
    before = host.snapshot()
    os.chmod(path, 0o775)
    expect(hook("win10", "prepare", "begin"), 2, f"hook script {path}: refusing it, {path} is writable by "
           "group or others (mode 0775; chmod go-w " + path + ")")
    os.chmod(path, 0o755)
    os.chown(path, 1000, 0)
    expect(hook("win10", "prepare", "begin"), 2, f"refusing it, {path} is owned by uid 1000, not root "
           f"(chown root {path})")
    os.chown(path, 0, 0)
    os.chmod(f"{QEMU_D}/win10", 0o777)
    expect(hook("win10", "prepare", "begin"), 2, f"refusing it, {QEMU_D}/win10 is writable by group or others")
    os.chmod(f"{QEMU_D}/win10", 0o755)
    # a link does not hide where the script really is: a root-owned script in a directory its
    # owner can write would be swapped by them
    userdir = scratch("userdir", uid=1000)
    shutil.copy(path, userdir + "/x")
    os.unlink(path)
    os.symlink(userdir + "/x", path)
    expect(hook("win10", "prepare", "begin"), 2, f"refusing it, {userdir} is owned by uid 1000")
    # nor a link someone else made (whoever could make it could make it point anywhere)
    rootdir = scratch("rootdir")
    shutil.copy(userdir + "/x", rootdir + "/x")
    os.unlink(path)
    os.symlink(rootdir + "/x", path)
    os.lchown(path, 1000, 1000)
    expect(hook("win10", "prepare", "begin"), 2, f"hook script {path}: refusing it, the symbolic link {path} is "
           f"owned by uid 1000, not root (chown -h root {path})")
    os.lchown(path, 0, 0)
    # and the path as written counts as much as the link's target: whoever owns qemu.d can
    # swap the link win10 it holds
    shutil.move(f"{QEMU_D}/win10", rootdir + "/win10")
    os.symlink(rootdir + "/win10", f"{QEMU_D}/win10")
    os.chown(QEMU_D, 1000, 1000)
    expect(hook("win10", "prepare", "begin"), 2, f"refusing it, {QEMU_D} is owned by uid 1000, not root")
    assert record() == [] and host.writes() == 0 and host.snapshot() == before
    # each fixed, the same script runs
    os.chown(QEMU_D, 0, 0)
    expect(hook("win10", "prepare", "begin"), 0)
    assert [r[0] for r in record()] == ["10-x"], record()


def test_an_unsafe_directory_without_scripts_in_it_is_no_error(host):
    """The walk to a script that is not there reports nothing: a VM without scripts starts
    whatever the hooks directory's mode (kvm.conf there would be refused, but there is none)."""
    setup(conf=False)
    os.chmod(HOOKS, 0o775)
    err = expect(hook("win10", "start", "begin"), 0)
    assert "refusing" not in err, err
    script("win10/start/begin/10-x")
    expect(hook("win10", "start", "begin"), 1, f"refusing it, {HOOKS} is writable by group or others")
    assert record() == []


def test_a_link_swapped_after_the_check_changes_nothing(host):
    """Every script of a call is opened and checked before the first runs, and runs from that fd:
    the first script (root, so allowed to) points the link of the second, or the link of the VM's
    whole directory, somewhere else, and the script checked is still the one that runs. The next
    call, checking again, finds the new target: links are followed, only never twice."""
    setup()
    good, evil = scratch("good"), scratch("evil")
    script("win10/prepare/begin/10-swap", body=f"ln -sfn {evil}/20-b {QEMU_D}/win10/prepare/begin/20-b")
    fakehost.recording_script(good + "/20-b", RECORD, "checked")
    fakehost.recording_script(evil + "/20-b", RECORD, "swapped-in")
    os.symlink(good + "/20-b", f"{QEMU_D}/win10/prepare/begin/20-b")
    # through the hand-over's script steps (step-script.c)
    expect(hook("win10", "prepare", "begin"), 0)
    assert [r[0] for r in record()] == ["10-swap", "checked"], record()
    assert os.readlink(f"{QEMU_D}/win10/prepare/begin/20-b") == evil + "/20-b"
    expect(hook("win10", "release", "end"), 0)
    expect(hook("win10", "prepare", "begin"), 0)
    assert [r[0] for r in record()][2:] == ["10-swap", "swapped-in"], record()
    expect(hook("win10", "release", "end"), 0)

    # the VM's directory a link, swapped for another VM directory with a script of the same name
    setup()
    vm_a, vm_b = scratch("vm-a"), scratch("vm-b")
    os.symlink(vm_a, f"{QEMU_D}/win10")
    fakehost.recording_script(vm_a + "/start/begin/10-swap", RECORD, "10-swap",
                              body=f"ln -sfn {vm_b} {QEMU_D}/win10.new && mv -T {QEMU_D}/win10.new {QEMU_D}/win10")
    fakehost.recording_script(vm_a + "/start/begin/20-b", RECORD, "checked")
    fakehost.recording_script(vm_b + "/start/begin/20-b", RECORD, "swapped-in")
    # outside a hand-over (main.c's run_scripts)
    expect(hook("win10", "start", "begin"), 0)
    assert [r[0] for r in record()] == ["10-swap", "checked"], record()
    assert os.readlink(f"{QEMU_D}/win10") == vm_b
    expect(hook("win10", "start", "begin"), 0)
    assert [r[0] for r in record()][2:] == ["swapped-in"], record()


ELF_SCRIPT = r"""
#include <stdio.h>
int main(int argc, char **argv) {
        FILE *f = fopen("%(record)s", "a"), *in = fopen("%(record)s.elf.stdin", "w");
        int c;
        fprintf(f, "elf");
        for (int i = 1; i < argc; i++)
                fprintf(f, " %%s", argv[i]);
        fprintf(f, " argv0=%%s\n", argv[0]);
        while ((c = getchar()) != EOF)
                fputc(c, in);
        return fclose(f) || fclose(in);
}
"""


def test_elf_and_interpreter_scripts_both_run(host):
    """Run by fd: an ELF executable directly, a #! script through its interpreter on /dev/fd/N
    (the fd must stay open across the exec for that); both get the arguments and the XML."""
    setup()
    src = "/run/fakehost/elf.c"
    with open(src, "w") as f:
        f.write(ELF_SCRIPT % {"record": RECORD})
    os.makedirs(f"{QEMU_D}/win10/start/begin")
    subprocess.run(["gcc", "-o", f"{QEMU_D}/win10/start/begin/10-elf", src], check=True)
    script("win10/start/begin/20-sh", body=f'echo "$0" > {RECORD}.zero')
    expect(hook("win10", "start", "begin"), 0)
    assert record() == [["elf", "win10", "start", "begin", "-", f"argv0={QEMU_D}/win10/start/begin/10-elf"],
                        ["20-sh", "win10", "start", "begin", "-", "amdgpu"]], record()
    assert stdin_of("elf") == XML and stdin_of("20-sh") == XML
    # what a #! script sees as $0: the fd it was run from (man qemu-hook, SCRIPTS)
    with open(f"{RECORD}.zero") as f:
        assert re.fullmatch(r"/dev/fd/\d+\n", f.read())


def test_links_are_followed_as_the_kernel_follows_them(host):
    """Relative links, with "..", links to links; a loop ends in ELOOP, named."""
    setup()
    shared = scratch("shared")
    fakehost.recording_script(shared + "/begin/10-x", RECORD, "shared")
    os.makedirs(f"{QEMU_D}/win10/start")
    os.symlink("../../../../shared/./begin", f"{QEMU_D}/win10/start/begin")    # relative, through ..
    os.symlink("/run/fakehost/./shared//begin/10-x", shared + "/begin/20-y")      # absolute, to a file
    os.symlink("20-y", shared + "/begin/30-z")                                   # a link to a link
    expect(hook("win10", "start", "begin"), 0)
    assert [r[0] for r in record()] == ["shared"] * 3, record()
    os.symlink("40-loop", shared + "/begin/40-loop")
    expect(hook("win10", "start", "begin"), 1, f"hook script {QEMU_D}/win10/start/begin/40-loop: {shared}/begin/"
           "40-loop: Too many levels of symbolic links")
    os.unlink(shared + "/begin/40-loop")
    os.symlink("nowhere", shared + "/begin/40-dangling")
    expect(hook("win10", "start", "begin"), 1, f"hook script {QEMU_D}/win10/start/begin/40-dangling: "
           "No such file or directory")
    assert len(record()) == 3, record()


def test_config_on_an_unsafe_path_is_refused(host):
    """kvm.conf's directories are checked like the scripts': it decides what root unbinds."""
    setup()
    before = host.snapshot()
    os.chmod(HOOKS, 0o775)
    expect(hook("win10", "prepare", "begin"), 2, f"config {HOOKS}/kvm.conf: refusing it, {HOOKS} is writable by "
           f"group or others (mode 0775; chmod go-w {HOOKS})")
    os.chmod(HOOKS, 0o755)
    # a link to a file in a directory someone else owns
    userdir = scratch("userconf", uid=1000)
    shutil.move(HOOKS + "/kvm.conf", userdir + "/kvm.conf")
    os.symlink(userdir + "/kvm.conf", HOOKS + "/kvm.conf")
    expect(hook("win10", "prepare", "begin"), 2, f"config {HOOKS}/kvm.conf: refusing it, {userdir} is owned by "
           f"uid 1000, not root (chown root {userdir})")
    assert host.writes() == 0 and host.snapshot() == before
    os.chown(userdir, 0, 0)
    expect(hook("win10", "prepare", "begin"), 0)
    assert host.driver(VEGA) == "vfio-pci"
    expect(hook("win10", "release", "end"), 0)
    assert host.snapshot() == before


def test_script_without_interpreter_line(host):
    setup()
    script("win10/prepare/begin/10-no-shebang", text="echo hi\n")
    before = host.snapshot()
    expect(hook("win10", "prepare", "begin"), 1, "10-no-shebang: cannot run it: Exec format error "
           "(does it start with #!?)", "the host was restored")
    assert host.snapshot() == before


def test_vm_not_ours_runs_its_scripts_without_touching_sysfs(host):
    setup()
    script("linux/prepare/begin/10-x", name="linux-prepare", body="exit 0")
    script("linux/release/end", name="linux-release")
    xml = fakehost.domain_xml("linux", [])
    expect(hook("linux", "prepare", "begin", xml), 0)
    expect(hook("linux", "release", "end", xml), 0)
    assert [r[:4] for r in record()] == [["linux-prepare", "linux", "prepare", "begin"],
                                        ["linux-release", "linux", "release", "end"]]
    assert stdin_of("linux-prepare") == xml
    assert host.writes() == 0, host.log()
    script("linux/prepare/begin/20-fails", body="exit 2")
    expect(hook("linux", "prepare", "begin", xml), 1, "20-fails exited with status 2")
    assert host.writes() == 0


def test_without_kvm_conf_only_the_scripts_run(host):
    setup(conf=False)
    script("win10/prepare/begin/10-x")
    err = expect(hook("win10", "prepare", "begin"), 0)
    assert "kvm.conf" not in err, err
    assert record() == [["10-x", "win10", "prepare", "begin", "-", "amdgpu"]]
    assert host.writes() == 0


def test_dry_run_lists_the_scripts_and_runs_none(host):
    setup()
    script("win10/prepare/begin/10-x")
    script("win10/release/end/10-y")
    rc, out, err = hook("win10", "prepare", "begin", XML, "--dry-run")
    assert rc == 0, err
    assert "run hook script qemu.d/VM/prepare/begin/10-x" in out, out
    rc, out, err = hook("win10", "release", "end", XML, "--dry-run")
    assert rc == 0 and f"run hook script {QEMU_D}/win10/release/end/10-y" in out, (out, err)
    assert record() == [] and host.writes() == 0


def test_prepare_again_after_a_complete_hand_over_runs_the_scripts(host):
    """libvirtd died with the VM and never called release: the next start finds the GPU handed
    over already, leaves it, and still runs its scripts."""
    setup()
    script("win10/prepare/begin/10-x")
    expect(hook("win10", "prepare", "begin"), 0)
    writes = host.writes()
    expect(hook("win10", "prepare", "begin"), 0)
    assert [r[0] for r in record()] == ["10-x", "10-x"], record()
    assert host.writes() == writes and host.driver(VEGA) == "vfio-pci"


def test_release_hands_back_from_the_journal_without_a_usable_config(host):
    """The config deleted or broken while the VM ran: the journal has all the hand-back needs."""
    setup()
    before = host.snapshot()
    expect(hook("win10", "prepare", "begin"), 0)
    os.unlink(HOOKS + "/kvm.conf")
    expect(hook("win10", "release", "end"), 0, f"the config {HOOKS}/kvm.conf does not exist; handing back "
           "what the journal in /run/qemu-hook records")
    assert host.snapshot() == before and not os.path.exists("/run/qemu-hook/win10.state")

    setup()
    expect(hook("win10", "prepare", "begin"), 0)
    with open(HOOKS + "/kvm.conf", "a") as f:
        f.write("[gpu]\nadress = typo\n")
    expect(hook("win10", "release", "end"), 0, "unknown key", "cannot be used (see above); handing back")
    assert host.snapshot() == before
    # prepare, which has no journal to go by, still refuses the broken config
    expect(hook("win10", "prepare", "begin"), 2, "unknown key")
    assert host.snapshot() == before


def test_script_output_goes_to_stderr_except_on_migrate_and_restore(host):
    setup()
    for op in ("start", "migrate"):
        script(f"win10/{op}/begin/10-x", body="echo '<domain>from the script</domain>'")
    rc, out, err = hook("win10", "start", "begin")
    assert rc == 0 and out == "" and "from the script" in err, (rc, out, err)
    rc, out, err = hook("win10", "migrate", "begin")
    assert rc == 0 and out == "<domain>from the script</domain>\n", (rc, out, err)
