"""Tiny test runner for the integration tests: runs every test_* function of the modules named
on the command line, each with a fresh emulated Host, inside a private mount namespace.

    python3 tests/integration/runner.py [-k SUBSTRING] tests/integration/test_*.py

A test takes either no argument or `host` (a fakehost.Host, built with the variant set by
@fakehost.variant(...)). It fails by raising. A module's teardown_module(), if it has one, runs
after the module's tests (it stops what they shared, like a libvirtd). Output: "ok NAME (ms)" or "FAIL NAME: reason",
then "N passed, M failed"; exit status 1 on any failure, 2 when no test ran (a -k that matches
no test name: a typo must not pass).
"""
import importlib.util
import inspect
import os
import sys
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import fakehost  # noqa: E402


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # definition order, so output reads like the file
    tests = [(f"{name}.{n}", f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    return tests, getattr(mod, "teardown_module", None)


def run_one(fn):
    params = inspect.signature(fn).parameters
    if "host" not in params:
        fn()
        return
    with fakehost.Host(**getattr(fn, "host_variant", {})) as host:
        fn(host)


def reap_as_init():
    """As PID 1 of the run's own PID namespace (run.sh): the runner goes on in a child, and this
    process reaps every orphan (the daemons tests start, a killed hook's children), as init
    would, until the runner exits; then the kernel kills whatever is left in the namespace.
    PID 1 also stays in the mount namespace it started in, so /proc/1/ns/mnt still tells a
    private namespace from the one we started in (busmock's guard)."""
    runner = os.fork()
    if runner == 0:
        return
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            sys.exit(1)
        if pid == runner:
            code = os.waitstatus_to_exitcode(status)
            sys.exit(code if code >= 0 else 128 - code)      # a signal: as a shell says it


def main(argv):
    if os.getpid() == 1:
        reap_as_init()
    pattern = None
    if argv[:1] == ["-k"]:
        if len(argv) < 2:
            sys.exit(__doc__)
        pattern, argv = argv[1], argv[2:]
    if not argv:
        sys.exit(__doc__)
    os.chdir(REPO)
    fakehost.enter_namespace()
    modules = [load(path) for path in argv]
    passed = failed = 0
    for tests, teardown in modules:
        for name, fn in tests:
            if pattern and pattern not in name:
                continue
            t0 = time.monotonic()
            try:
                run_one(fn)
            except (Exception, SystemExit) as e:
                failed += 1
                reason = str(e) or type(e).__name__
                print(f"FAIL {name}: {reason}", flush=True)
                tb = traceback.format_exc().rstrip().splitlines()
                print("\n".join("    " + line for line in tb[-8:]), flush=True)
                continue
            passed += 1
            print(f"ok {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        if teardown:
            try:
                teardown()
            except Exception as e:
                failed += 1
                print(f"FAIL teardown: {e}", flush=True)
    print(f"{passed} passed, {failed} failed")
    if passed + failed == 0:
        what = f"no test name contains {pattern!r}" if pattern else "no test found"
        print(f"FAIL: {what}", flush=True)
        sys.exit(2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
