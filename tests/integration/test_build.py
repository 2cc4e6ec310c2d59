"""The Makefile's hardening, read off the binaries it builds (readelf and nm, as checksec does):
by default PIE, full RELRO (GNU_RELRO and BIND_NOW), the stack protector (__stack_chk_fail)
and _FORTIFY_SOURCE=3 (the checked copies, __memcpy_chk...); a distribution's CFLAGS, CPPFLAGS
and LDFLAGS replace those defaults but never what the code needs (-std, -W..., -I); the ASan
builds never fortified, whoever asked for it. Each build is of a copy of the working tree's
Makefile, src/ and include/ in the scratch directory, with an environment without any flags of
the caller's. Nothing here runs a binary."""
import os
import shutil
import subprocess

import elffacts
import fakehost

COPY = fakehost.SCRATCH + "/build-copy"
HARDENING = ["-D_FORTIFY_SOURCE=3", "-fstack-protector-strong", "-fPIE", "-pie", "-Wl,-z,relro,-z,now"]
PROJECT = ["-std=gnu11", "-Werror", "-Iinclude"]


def fresh_copy():
    shutil.rmtree(COPY, ignore_errors=True)
    os.makedirs(COPY)
    for d in ("src", "include"):
        shutil.copytree(os.path.join(fakehost.REPO, d), os.path.join(COPY, d))
    shutil.copy(os.path.join(fakehost.REPO, "Makefile"), COPY)


def make(*args, **flags):
    """make in the copy; FLAGS (CFLAGS=..., as a distribution exports them) in its environment,
    nothing of the caller's. Returns its output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CFLAGS", "CPPFLAGS", "LDFLAGS", "LDLIBS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CC")}
    env.update(flags)
    p = subprocess.run(["make", "--no-print-directory", "-j2", *args], cwd=COPY, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"make {' '.join(args)} {flags}: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    return p.stdout


def facts(binary):
    return elffacts.facts(os.path.join(COPY, binary))


def test_default_build_is_hardened():
    fresh_copy()
    commands = make("qemu-hook", "qemu-hook-act")
    for flag in HARDENING + PROJECT:
        assert all(flag in line.split() for line in commands.splitlines() if line.startswith("cc ")), \
            (flag, commands)
    for binary in ("qemu-hook", "qemu-hook-act"):
        # fortified: at least these two, which the code calls with sizes the compiler knows
        ok, f = elffacts.hardened(os.path.join(COPY, binary))
        assert ok, (binary, f)


def test_a_distributions_flags_replace_the_defaults_only():
    fresh_copy()
    # the front end alone (-o: qemu-hook-act taken as up to date, not built)
    commands = make("-o", "qemu-hook-act", "qemu-hook", CFLAGS="-O2 -g", CPPFLAGS="", LDFLAGS="")
    line = [x for x in commands.splitlines() if x.startswith("cc ")]
    assert len(line) == 1, commands
    for flag in HARDENING:
        assert flag not in line[0].split(), (flag, line)
    for flag in PROJECT + ["-O2"]:
        assert flag in line[0].split(), (flag, line)
    f = facts("qemu-hook")
    assert not f["stack_protector"] and not f["fortified"] and not f["bind_now"], f
    # on make's command line, as much as in the environment
    p = subprocess.run(["make", "-n", "-B", "--no-print-directory", "CFLAGS=-O1", "CPPFLAGS=", "LDFLAGS=",
                        "-o", "qemu-hook-act", "qemu-hook"], cwd=COPY, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    words = p.stdout.split()
    assert "-O1" in words and all(f in words for f in PROJECT), p.stdout
    assert not [f for f in HARDENING if f in words], p.stdout


def test_asan_builds_are_never_fortified():
    """_FORTIFY_SOURCE's checked copies would bypass ASan's interceptors: none in the ASan front
    end, even from CFLAGS that ask for it as Fedora's do (-Wp,-D_FORTIFY_SOURCE=3)."""
    fresh_copy()
    for cflags in (None, "-O2 -g -Wp,-D_FORTIFY_SOURCE=3 -fstack-protector-strong"):
        shutil.rmtree(os.path.join(COPY, "build"), ignore_errors=True)
        os.makedirs(os.path.join(COPY, "build", "san"))
        make("-o", "build/san/qemu-hook-act", "build/san/qemu-hook", **({"CFLAGS": cflags} if cflags else {}))
        f = facts("build/san/qemu-hook")
        assert f["fortified"] == [] and f["stack_protector"] and f["pie"], (cflags, f)
        undefined = subprocess.run(["nm", "-D", "--undefined-only", os.path.join(COPY, "build/san/qemu-hook")],
                                   capture_output=True, text=True, check=True).stdout
        assert "__asan_" in undefined, "not an ASan build"


def teardown_module():
    shutil.rmtree(COPY, ignore_errors=True)
