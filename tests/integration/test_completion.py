"""Bash completion (completion/qemu-hook.bash), driven as bash drives it: COMP_WORDS, COMP_CWORD,
COMP_LINE and COMP_POINT set in a `bash --norc --noprofile`, _qemu_hook called, COMPREPLY
printed. Every case twice when bash-completion is installed: with its helpers (_init_completion,
_filedir) and without them (plain compgen). virsh is a fake one first in PATH; the journals are
in a scratch directory (QEMU_HOOK_COMPLETION_JOURNAL_DIR). The hook itself is never run."""
import os
import re
import shutil
import subprocess
import time

import fakehost

COMPLETION = os.path.join(fakehost.REPO, "completion", "qemu-hook.bash")
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
MODES = ["plain"] + (["bash-completion"] if os.path.exists(BASH_COMPLETION) else [])
SCRATCH = fakehost.SCRATCH + "/completion"
BIN = SCRATCH + "/bin"
JOURNALS = SCRATCH + "/journals"
FILES = SCRATCH + "/files"
VIRSH_ARGS = SCRATCH + "/virsh-args"
TOOLS = SCRATCH + "/tools"      # a PATH without virsh: the other commands the completion runs

DRIVER = r"""
if [ "$MODE" = bash-completion ]; then . "$BASH_COMPLETION" || exit 97; fi
. "$COMPLETION" || exit 98
eval "$SHELL_SETUP"
complete -p qemu-hook >&2
COMP_WORDS=("$@")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE=$LINE
COMP_POINT=${#COMP_LINE}
_qemu_hook qemu-hook "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""

OPERATIONS = ["attach", "migrate", "prepare", "reconnect", "release", "restore", "start", "started", "stopped"]
LONG = ["--check", "--config", "--dry-run", "--help", "--hooks-dir", "--json", "--recover", "--status", "--verbose",
        "--version"]
SHORT = ["-V", "-c", "-d", "-h", "-j", "-k", "-n", "-r", "-s", "-v"]


def comp_words(line):
    """COMP_WORDS as bash makes them of a line ending at the cursor: words split at blanks (a
    backslash keeps one), '=' a word of its own (COMP_WORDBREAKS), an empty last word after a blank."""
    words = []
    for word in re.findall(r"(?:\\.|[^\s\\])+", line):
        words += [w for w in re.split(r"(=)", word) if w]
    if (line.endswith(" ") and not line.endswith("\\ ")) or line.endswith("="):
        words.append("")
    return words


def complete(line, mode, virsh=None, journals=True, path=None, timeout=20, setup=""):
    """The candidates for LINE, sorted; fails on anything on stderr but `complete -p`'s line."""
    env = dict(os.environ, MODE=mode, BASH_COMPLETION=BASH_COMPLETION, COMPLETION=COMPLETION, LINE=line,
               SHELL_SETUP=setup,
               PATH=path or f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin")
    env.pop("QEMU_HOOK_COMPLETION_JOURNAL_DIR", None)
    if journals:
        env["QEMU_HOOK_COMPLETION_JOURNAL_DIR"] = JOURNALS
    fake_virsh(virsh)
    p = subprocess.run(["/bin/bash", "--norc", "--noprofile", "-c", DRIVER, "bash", *comp_words(line)],
                       capture_output=True, text=True, env=env, cwd=FILES, timeout=timeout)
    assert p.returncode == 0, (mode, line, p.returncode, p.stdout, p.stderr)
    assert p.stderr == "complete -F _qemu_hook qemu-hook\n", (mode, line, p.stderr)
    return sorted(w for w in p.stdout.split("\n") if w)


def expect(expected, line, mode, *args, **kw):
    got = complete(line, mode, *args, **kw)
    assert got == expected, f"{mode}: {line!r}: {got}, not {expected}"


def fake_virsh(body):
    """BIN/virsh: names on one line each when asked `list --all --name` of qemu:///system
    (its arguments kept in VIRSH_ARGS); body None: no virsh."""
    shutil.rmtree(BIN, ignore_errors=True)
    os.makedirs(BIN)
    if os.path.exists(VIRSH_ARGS):
        os.unlink(VIRSH_ARGS)
    if body is None:
        return
    with open(f"{BIN}/virsh", "w") as f:
        f.write(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {VIRSH_ARGS}\n{body}\n')
    os.chmod(f"{BIN}/virsh", 0o755)


LISTS = 'case "$*" in *"-c qemu:///system"*"list --all --name"*) printf "%s\\n" win10 "win 11" linux ;; *) exit 1 ;; esac'


def setup():
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os.makedirs(JOURNALS)
    os.makedirs(f"{FILES}/kvm.d")
    for name in ("kvm.conf", "other.conf"):
        open(f"{FILES}/{name}", "w").close()
    # journals as qemu-hook writes them: file names and values \xNN-escaped
    for fname, vm in (("old-vm.state", "old-vm"), (r"a\x3bb.state", r"a\x3bb"), ("win10.state", "win10")):
        with open(f"{JOURNALS}/{fname}", "w") as f:
            f.write(f"# qemu-hook journal\nversion = 1\nvm = {vm}\ngpu = 0000:0d:00.0\n")
    open(f"{JOURNALS}/not-a-journal", "w").close()
    os.makedirs(TOOLS)
    for tool in ("sort", "timeout"):
        os.symlink(shutil.which(tool), f"{TOOLS}/{tool}")


def test_completion_options():
    setup()
    for mode in MODES:
        expect(LONG, "qemu-hook --", mode, LISTS)
        expect(sorted(LONG + SHORT), "qemu-hook -", mode, LISTS)
        expect(["--recover"], "qemu-hook --re", mode, LISTS)
        expect(["--verbose", "--version"], "qemu-hook --ver", mode, LISTS)
        expect(["--config"], "qemu-hook -n --hooks-dir /etc/libvirt/hooks -v --c", mode, LISTS)
        # --recover takes no positional: not offered after one, nor twice
        assert "--recover" not in complete("qemu-hook win10 --", mode, LISTS), mode
        assert "--recover" not in complete("qemu-hook --recover win10 --", mode, LISTS), mode
        # after --help or --version (or an unambiguous prefix, -h, -V, -nh) nothing more
        for first in ("--help", "--version", "--he", "--versi", "-h", "-V", "-nh"):
            expect([], f"qemu-hook {first} ", mode, LISTS)
            expect([], f"qemu-hook {first} -", mode, LISTS)
        # after --, only positionals
        expect([], "qemu-hook -- -", mode, LISTS)


def test_completion_vm_names_from_libvirt():
    setup()
    for mode in MODES:
        expect(["linux", "win10", "win\\ 11"], "qemu-hook ", mode, LISTS)
        expect(["win10", "win\\ 11"], "qemu-hook w", mode, LISTS)
        expect(["win\\ 11"], "qemu-hook win\\ ", mode, LISTS)
        expect(["linux"], "qemu-hook -n -v -c /x l", mode, LISTS)
        expect(["win10", "win\\ 11"], "qemu-hook -- w", mode, LISTS)
        # read-only, of the system instance, every VM, names only
        with open(VIRSH_ARGS) as f:
            args = f.read().splitlines()
        assert args and all(a == "-r -q -c qemu:///system list --all --name" for a in args), args
        # the VM argument is libvirt's: a journal alone does not make a VM there
        assert "old-vm" not in complete("qemu-hook ", mode, LISTS), mode
        # no virsh, or one that fails: no names, no error
        expect([], "qemu-hook ", mode, None, path=TOOLS)
        expect([], "qemu-hook ", mode, 'echo "error: failed to connect" >&2; exit 1')


def test_completion_operations_sub_operations_extra():
    setup()
    for mode in MODES:
        expect(OPERATIONS, "qemu-hook win10 ", mode, LISTS)
        expect(["start", "started", "stopped"], "qemu-hook win10 st", mode, LISTS)
        expect(["reconnect", "release", "restore"], "qemu-hook -n win10 -c /x re", mode, LISTS)
        expect(["prepare"], "qemu-hook win\\ 11 p", mode, LISTS)
        expect(["begin", "end"], "qemu-hook win10 prepare ", mode, LISTS)
        expect(["end"], "qemu-hook win10 release e", mode, LISTS)
        expect(["-"], "qemu-hook win10 prepare begin ", mode, LISTS)
        # "-" there is EXTRA as well as the start of an option (not --recover, --status, --check or
        # --json: none takes three positionals)
        expect(sorted(["-"] + [o for o in LONG + SHORT if o not in ("--recover", "-r", "--status", "-s", "--check",
                                                                     "-k", "--json", "-j")]),
               "qemu-hook win10 prepare begin -", mode, LISTS)
        expect([], "qemu-hook win10 prepare begin - ", mode, LISTS)
        expect(["begin", "end"], "qemu-hook -- -x prepare ", mode, LISTS)


def test_completion_check_names_libvirt_vms_and_takes_json():
    """--check [VM]: one VM from libvirt (not the journals'), --json beside it, and nothing main.c
    would refuse with it."""
    setup()
    vms = ["linux", "win10", "win\\ 11"]
    for mode in MODES:
        for line in ("qemu-hook --check ", "qemu-hook -k ", "qemu-hook --json --check ", "qemu-hook --check --json ",
                     "qemu-hook -kj ", "qemu-hook -jk ", "qemu-hook --che ", "qemu-hook -v --check -c /x ",
                     "qemu-hook --check -- "):
            expect(vms, line, mode, LISTS)
        expect(["win10", "win\\ 11"], "qemu-hook --check w", mode, LISTS)
        assert "old-vm" not in complete("qemu-hook --check ", mode, LISTS), mode
        # one VM at most: nothing after it, no operation
        expect([], "qemu-hook --check win10 ", mode, LISTS)
        expect([], "qemu-hook --json --check win10 ", mode, LISTS)
        expect([], "qemu-hook win10 --check ", mode, LISTS)
        # --json offered with it, once; neither --status, --recover nor --dry-run
        expect(["--json"], "qemu-hook --check --j", mode, LISTS)
        expect(["--json"], "qemu-hook --check win10 --j", mode, LISTS)
        expect(["--check"], "qemu-hook --json --ch", mode, LISTS)
        expect(["--check"], "qemu-hook win10 --ch", mode, LISTS)
        for line in ("qemu-hook --check --", "qemu-hook -k --", "qemu-hook --check win10 --"):
            got = complete(line, mode, LISTS)
            assert "--json" in got and "--config" in got and "--verbose" in got, (mode, line, got)
            for refused in ("--status", "--recover", "--dry-run", "--check"):
                assert refused not in got, (mode, line, refused, got)
        assert "--json" not in complete("qemu-hook --check --json --", mode, LISTS), mode
        # not offered where main.c refuses it: after --dry-run, --recover, --status, two positionals
        for line in ("qemu-hook -n --", "qemu-hook --recover win10 --", "qemu-hook --status --",
                     "qemu-hook win10 prepare --"):
            assert "--check" not in complete(line, mode, LISTS), (mode, line)
        # without virsh: no names, no error
        expect([], "qemu-hook --check ", mode, None, path=TOOLS)


def test_completion_status_takes_json_and_no_vm():
    setup()
    for mode in MODES:
        for line in ("qemu-hook --status ", "qemu-hook -s ", "qemu-hook --status --json ", "qemu-hook -sj "):
            expect([], line, mode, LISTS)
        expect(["--json"], "qemu-hook --status --j", mode, LISTS)
        expect(["--status"], "qemu-hook --json --st", mode, LISTS)
        got = complete("qemu-hook --status --", mode, LISTS)
        assert "--json" in got and "--hooks-dir" in got, (mode, got)
        for refused in ("--check", "--recover", "--dry-run", "--status"):
            assert refused not in got, (mode, refused, got)
        # with a VM, or after --recover or --dry-run, --status is refused: not offered
        for line in ("qemu-hook win10 --", "qemu-hook --recover win10 --", "qemu-hook --dry-run --"):
            assert "--status" not in complete(line, mode, LISTS), (mode, line)
        # --json alone goes nowhere without one of them, but either may follow it
        got = complete("qemu-hook --json --", mode, LISTS)
        assert "--status" in got and "--check" in got and "--json" not in got, (mode, got)


def test_completion_recover_names_libvirt_and_journal_vms():
    setup()
    union = ["a\\;b", "linux", "old-vm", "win10", "win\\ 11"]
    for mode in MODES:
        for line in ("qemu-hook --recover ", "qemu-hook -r ", "qemu-hook -nr ", "qemu-hook --rec ",
                     "qemu-hook -v --recover="):
            expect(union, line, mode, LISTS)
        expect(["old-vm"], "qemu-hook --recover o", mode, LISTS)
        # whatever the user's globbing options
        for shell in ("shopt -s failglob", "shopt -s nullglob", "shopt -s extglob dotglob nocaseglob", "set -f"):
            expect(union, "qemu-hook --recover ", mode, LISTS, setup=shell)
            expect(["kvm.conf", "kvm.d"], "qemu-hook --config k", mode, LISTS, setup=shell)
        expect(["win10", "win\\ 11"], "qemu-hook --recover=w", mode, LISTS)
        # without virsh, the journals still name theirs
        expect(["a\\;b", "old-vm", "win10"], "qemu-hook --recover ", mode, None)
        # --recover VM takes nothing after it
        expect([], "qemu-hook --recover win10 ", mode, LISTS)
        expect([], "qemu-hook -r win10 ", mode, LISTS)
        # no journal directory: libvirt's names only
        shutil.rmtree(JOURNALS)
        expect(["linux", "win10", "win\\ 11"], "qemu-hook --recover ", mode, LISTS)
        setup()


def test_completion_recover_reads_run_qemu_hook_by_default():
    """Without the tests' variable: /run/qemu-hook (this namespace's own tmpfs /run)."""
    assert fakehost.in_namespace(), "not in the test namespace"
    assert any(point == "/run" and fstype == "tmpfs" for point, fstype in fakehost._mounts()), fakehost._mounts()
    setup()
    made = not os.path.exists("/run/qemu-hook")
    os.makedirs("/run/qemu-hook", exist_ok=True)
    path = "/run/qemu-hook/completion-test.state"
    with open(path, "w") as f:
        f.write("vm = completion-test\n")
    try:
        for mode in MODES:
            assert "completion-test" in complete("qemu-hook --recover c", mode, None, journals=False), mode
    finally:
        os.unlink(path)
        if made:
            os.rmdir("/run/qemu-hook")


def test_completion_files_after_config_dirs_after_hooks_dir():
    setup()
    for mode in MODES:
        for line in ("qemu-hook --config k", "qemu-hook -c k", "qemu-hook -nc k", "qemu-hook --config=k",
                     "qemu-hook --conf k", "qemu-hook win10 --config k"):
            expect(["kvm.conf", "kvm.d"], line, mode, LISTS)
        expect(["kvm.conf", "kvm.d", "other.conf"], "qemu-hook --config ", mode, LISTS)
        for line in ("qemu-hook --hooks-dir k", "qemu-hook -d k", "qemu-hook --hooks-dir=k", "qemu-hook -d "):
            expect(["kvm.d"], line, mode, LISTS)
        # the option's argument done, a VM
        expect(["win10", "win\\ 11"], "qemu-hook --config kvm.conf w", mode, LISTS)
        expect(["win10", "win\\ 11"], "qemu-hook --config=kvm.conf w", mode, LISTS)


def test_completion_does_not_hang_on_virsh():
    """A virsh that hangs (a child of its own sleeping, holding the pipe): completion is back
    within about 2 s (timeout kills its process group), with the journals' names."""
    setup()
    hang = "sleep 10\necho late"
    for mode in MODES:
        for line, names in (("qemu-hook ", []), ("qemu-hook --recover ", ["a\\;b", "old-vm", "win10"])):
            t0 = time.monotonic()
            expect(names, line, mode, hang)
            took = time.monotonic() - t0
            assert 1.5 < took < 3.2, (mode, line, took)


def test_completion_passes_shellcheck():
    p = subprocess.run(["shellcheck", "-s", "bash", COMPLETION], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
