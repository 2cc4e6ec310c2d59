"""Scenarios and the boots (groups) they run in.

A scenario is one function in one file under tests/guest/scenarios/, decorated with
@scenario. Importing it only registers it: the host-side runner imports the scenarios to plan
its boots and never calls them; only the guest runs them.

Groups: every scenario of a group runs in one boot, in file then definition order. The default
group "main" (OVMF) is shared by the scenarios that leave the guest as they found it. A
scenario that leaves the guest dirty says dirty=True and gets a boot of its own (a group named
after it) unless it names a group. A group boots with one firmware: "ovmf" (default) or
"seabios"; all its scenarios must agree. A scenario with bench=True (measurements, no pass/fail
on the numbers: tests/guest/bench.py) runs only when its group or its name is selected, never
in a run of every group.
"""
import importlib
import os
import pkgutil

FIRMWARES = ("ovmf", "seabios")
DEFAULT_GROUP = "main"

_scenarios = []


class Scenario:
    def __init__(self, fn, group, firmware, timeout, dirty, bench=False):
        self.fn = fn
        self.name = fn.__name__
        self.doc = (fn.__doc__ or "").strip().split("\n")[0]
        self.group = group
        self.firmware = firmware
        self.timeout = timeout
        self.dirty = dirty
        self.bench = bench
        self.module = fn.__module__

    def meta(self):
        return {"name": self.name, "group": self.group, "firmware": self.firmware,
                "timeout": self.timeout, "dirty": self.dirty, "bench": self.bench, "doc": self.doc}


def scenario(group=None, firmware=None, timeout=120, dirty=False, bench=False):
    """Register the decorated function fn(t) as a scenario (t: lib.harness.Test).

    timeout: the guest's deadline for the whole scenario, in seconds; on expiry the harness
    records what hung (ps, the kernel stacks of every qemu-hook process) and kills it.
    bench: a measurement, run only when its group or name is selected (not by a plain run).
    """
    def register(fn):
        g = group or (fn.__name__ if dirty else DEFAULT_GROUP)
        fw = firmware or "ovmf"
        if fw not in FIRMWARES:
            raise ValueError("%s: firmware %r is none of %s" % (fn.__name__, fw, FIRMWARES))
        if any(s.name == fn.__name__ for s in _scenarios):
            raise ValueError("scenario %s defined twice" % fn.__name__)
        _scenarios.append(Scenario(fn, g, fw, timeout, dirty, bench))
        return fn
    return register


def load():
    """Import every scenarios/test_*.py (in name order) and return the scenarios in order."""
    import scenarios
    for mod in sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__)):
        if mod.startswith("test_"):
            importlib.import_module("scenarios." + mod)
    return list(_scenarios)


def groups(selected=None, with_bench=False):
    """{group: {"firmware": F, "scenarios": [Scenario...]}} in first-appearance order.

    selected: names of groups or scenarios to keep (None: all but the bench=True ones, unless
    with_bench)."""
    out = {}
    for s in load():
        if selected and s.group not in selected and s.name not in selected:
            continue
        if not selected and s.bench and not with_bench:
            continue
        g = out.setdefault(s.group, {"firmware": s.firmware, "scenarios": []})
        if g["firmware"] != s.firmware:
            raise ValueError("group %s: scenario %s wants firmware %s, the group has %s"
                             % (s.group, s.name, s.firmware, g["firmware"]))
        g["scenarios"].append(s)
    if selected:
        known = {s.name for s in _scenarios} | {s.group for s in _scenarios}
        unknown = [x for x in selected if x not in known]
        if unknown:
            raise ValueError("no such group or scenario: %s" % ", ".join(unknown))
    return out


def by_name(name):
    for s in load() if not _scenarios else _scenarios:
        if s.name == name:
            return s
    raise KeyError(name)


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
