"""What checksec would say about an ELF executable, from readelf and nm (binutils), without
running it: facts(path) -> {"pie", "relro", "bind_now", "stack_protector": bool,
"fortified": sorted names of the _FORTIFY_SOURCE checked functions it calls}."""
import re
import subprocess


def _tool(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def facts(path):
    undefined = set(re.findall(r"^\s+U (\S+?)(?:@\S*)?$", _tool("nm", "-D", "--undefined-only", path), re.M))
    dynamic = _tool("readelf", "-dW", path)
    return {
        "pie": re.search(r"^\s*Type:\s+DYN\b", _tool("readelf", "-hW", path), re.M) is not None,
        "relro": re.search(r"^\s*GNU_RELRO\b", _tool("readelf", "-lW", path), re.M) is not None,
        "bind_now": re.search(r"\(FLAGS\)\s+.*\bBIND_NOW\b", dynamic) is not None or
                    re.search(r"\(FLAGS_1\)\s+Flags:.*\bNOW\b", dynamic) is not None,
        "stack_protector": "__stack_chk_fail" in undefined,
        "fortified": sorted(s for s in undefined if re.fullmatch(r"__\w+_chk", s) and s != "__stack_chk_fail"),
    }


def hardened(path):
    """The facts of PATH, and whether they are those of the Makefile's defaults (or better)."""
    f = facts(path)
    ok = f["pie"] and f["relro"] and f["bind_now"] and f["stack_protector"] and \
        {"__memcpy_chk", "__snprintf_chk"} <= set(f["fortified"])
    return ok, f
