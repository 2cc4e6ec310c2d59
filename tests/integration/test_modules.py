"""[gpu] unload_driver and an NVIDIA GPU (issue 12, items 1 and 2) on the emulated host: the
modules of the GPU's drivers unloaded after the move (libkmod's delete_module, trapped by
build/kmodtrap and answered by fakesys as the kernel would) and loaded back before the move back;
a module that must stay is kept, saying why; a failure at the unload rolls everything back, and a
hook killed after it leaves a journal whose release loads it again. On NVIDIA's driver the four
modules go in the order the kernel allows, nvidia-persistenced and nvidia-powerd are stopped and
only started again by the hand-back, and a holder of /dev/nvidia0 holds the hand-over up."""
import os
import subprocess

import busmock
import fakehost
from fakehost import R5, R5_AUDIO, VEGA, VEGA_AUDIO, variant
from test_desktop import HOOK, XML, Desktop, check, diff, hook, write_conf

JOURNAL = "/run/qemu-hook/win10.state"
NVIDIA_MODULES = ["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]
AMDGPU_KO = f"/usr/lib/modules/{os.uname().release}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko"


def conf(extra_gpu="unload_driver = yes\n", secondary="", desktop=False, timeout="5s"):
    text = (f"[gpu]\naddress = 0000:0d:00.0\n{extra_gpu}[secondary]\naddress = 0000:08:00.0\n{secondary}"
            + ("[desktop]\nuser = liss\n" if desktop else "[desktop]\ndisplay_manager = none\n")
            + f"[host]\ntimeout = {timeout}\ninhibit_sleep = no\n")
    return write_conf(text, "modules.conf")


def module(name):
    """"live", or "absent" when the (emulated) kernel has no such module loaded."""
    try:
        with open(f"/sys/module/{name}/initstate") as f:
            return f.read().strip()
    except FileNotFoundError:
        return "absent"


def journal_modules():
    with open(JOURNAL) as f:
        return [b.split("target = ")[1].split("\n")[0] for b in f.read().split("\n\n") if "kind = module\n" in b]


def plan_lines(c):
    rc, out, err = hook(c, "prepare", "begin", "--dry-run")
    check(rc == 0, f"--dry-run exit {rc}", err)
    return out


def index(lines, text):
    found = [i for i, line in enumerate(lines.splitlines()) if text in line]
    check(found, f"no plan line with {text!r}", lines)
    return found[0]


def test_unload_amdgpu_after_the_move_and_load_it_back(host):
    c = conf()
    before = host.snapshot()
    plan = plan_lines(c)
    check(index(plan, f"move {VEGA} from amdgpu to vfio-pci") <
          index(plan, "unload module amdgpu (driver amdgpu of 0000:0d:00.0; refcount 0)") <
          index(plan, f"move {R5} from vfio-pci to radeon"), "amdgpu unloaded after the Vega's move, before the R5's", plan)
    rc, out, err = hook(c, "prepare", "begin")
    check(rc == 0, f"prepare begin exit {rc}", err)
    check(module("amdgpu") == "absent", "amdgpu still loaded")
    check(not os.path.exists("/sys/bus/pci/drivers/amdgpu") and not os.path.exists("/dev/kfd"),
          "amdgpu's driver or /dev/kfd left")
    check(host.driver(VEGA) == "vfio-pci" and host.driver(R5) == "radeon", "the GPUs", host.driver(VEGA),
          host.driver(R5))
    check(journal_modules() == ["amdgpu"], "the journal's module steps", journal_modules())
    rc, out, err = hook(c, "release", "end")
    check(rc == 0, f"release end exit {rc}", err)
    check(module("amdgpu") == "live", "amdgpu not loaded back")
    check(host.driver(VEGA) == "amdgpu" and host.drm_cards(VEGA), "the Vega back on amdgpu with its card")
    check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


def test_the_secondary_gpus_driver_stays(host):
    plan = plan_lines(conf(secondary="driver = amdgpu\n"))
    check("(skip) unload module amdgpu: its driver amdgpu is the secondary GPU's display driver" in plan,
          "the secondary's display driver would be unloaded", plan)


@variant(audio_driver="snd_hda_intel")
def test_a_module_driving_another_device_stays(host):
    """snd_hda_intel also drives the R5's audio (bound to it here): its exit would unbind that."""
    check(host.write("bus/pci/drivers/vfio-pci/unbind", R5_AUDIO) == 0 and
          host.write("bus/pci/drivers/snd_hda_intel/bind", R5_AUDIO) == 0, "R5 audio to snd_hda_intel")
    c = conf()
    plan = plan_lines(c)
    check(f"(skip) unload module snd_hda_intel: it also drives {R5_AUDIO}" in plan, "snd_hda_intel not kept", plan)
    check("unload module amdgpu (" in plan, "amdgpu is not unloaded", plan)
    before = host.snapshot()
    rc, out, err = hook(c, "prepare", "begin")
    check(rc == 0 and "[gpu] unload_driver: module snd_hda_intel stays loaded: it also drives" in err,
          f"prepare begin exit {rc}, warning", err)
    check(module("snd_hda_intel") == "live" and host.driver(R5_AUDIO) == "snd_hda_intel" and
          host.driver(VEGA_AUDIO) == "vfio-pci" and module("amdgpu") == "absent", "snd_hda_intel kept, amdgpu gone")
    check(hook(c, "release", "end")[0] == 0, "release end")
    check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


def test_a_module_without_a_file_to_load_it_back_stays(host):
    os.rename(AMDGPU_KO, AMDGPU_KO + ".away")
    try:
        subprocess.run(["depmod", os.uname().release], check=True)
        plan = plan_lines(conf())
        check("(skip) unload module amdgpu: no file to load it back from (not in this kernel's modules.dep)" in plan,
              "amdgpu would be unloaded with nothing to load it back from", plan)
    finally:
        os.rename(AMDGPU_KO + ".away", AMDGPU_KO)
        subprocess.run(["depmod", os.uname().release], check=True)


def test_a_module_still_in_use_fails_the_hand_over_and_rolls_back(host):
    """amdgpu's reference count stays 1 (a user the emulation does not show as a node): the unload
    waits until the deadline, fails naming the module, and every step before it is undone."""
    c = conf(timeout="1s")
    before = host.snapshot()
    with open(f"{host.backing}/module/amdgpu/refcnt", "w") as f:
        f.write("1\n")
    rc, out, err = hook(c, "prepare", "begin")
    check(rc == 1 and "module amdgpu is still in use (refcount 1) after the deadline" in err and
          "the host was restored" in err, f"prepare begin exit {rc}", err)
    check(module("amdgpu") == "live" and host.snapshot() == before, "not restored", *diff(before, host.snapshot()))
    check(not os.path.exists(JOURNAL), "journal left")


def test_killed_after_the_unload_release_loads_it_back(host):
    """SIGKILL at the first write after the unload (the R5's move): the journal has the unload done,
    and release end loads amdgpu before the Vega goes back to it."""
    c = conf()
    before = host.snapshot()
    host.clear_log()
    check(hook(c, "prepare", "begin")[0] == 0, "prepare begin")
    writes = host.log()
    k = next(i for i, w in enumerate(writes) if R5 in w.path or R5 in w.value) + 1
    check(hook(c, "release", "end")[0] == 0 and host.snapshot() == before, "first cycle")
    host.kill_at(k, "before")
    rc, out, err, _ = fakehost.run_hook([HOOK, "--config", c, "win10", "prepare", "begin", "-"], XML,
                                        new_session=True)
    check(rc == -9, f"not killed at write {k} (exit {rc})", err)
    check(module("amdgpu") == "absent" and journal_modules() == ["amdgpu"], "killed after the unload")
    rc, out, err = hook(c, "release", "end")
    check(rc == 0, f"release end exit {rc}", err)
    check(module("amdgpu") == "live" and host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


def test_without_a_journal_the_hand_back_loads_the_driver(host):
    """The journal lost while the VM ran (/run wiped): the hand-back derived from the config finds
    the Vega on vfio-pci with no amdgpu loaded; it loads the module its aliases name, then binds."""
    c = conf()
    before = host.snapshot()
    check(hook(c, "prepare", "begin")[0] == 0 and module("amdgpu") == "absent", "prepare begin")
    os.unlink(JOURNAL)
    rc, out, err = hook(c, "release", "end")
    check(rc == 0 and "loaded module amdgpu, its driver by the kernel's aliases" in err, f"release end exit {rc}", err)
    check(module("amdgpu") == "live" and host.driver(VEGA) == "amdgpu", "the Vega back on amdgpu", host.driver(VEGA))
    check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


# ---------------------------------------------------------------- NVIDIA

def nvidia_units(persistenced="active", powerd="inactive"):
    return dict(busmock.SYSTEM_UNITS, **{"nvidia-persistenced.service": persistenced,
                                         "nvidia-powerd.service": powerd})


@variant(gpu="nvidia")
def test_nvidia_modules_in_order_and_its_services_after_the_hand_back(host):
    c = conf(desktop=True)
    with Desktop(system_units=nvidia_units()) as d:
        before = host.snapshot()
        plan = plan_lines(c)
        check("stop nvidia-persistenced.service" in plan and "(skip) stop nvidia-powerd.service" in plan,
              "the services in the plan", plan)
        rc, out, err = hook(c, "prepare", "begin")
        check(rc == 0, f"prepare begin exit {rc}", err)
        check(journal_modules() == NVIDIA_MODULES, "the unload order", journal_modules())
        check(all(module(m) == "absent" for m in NVIDIA_MODULES), "an NVIDIA module left",
              {m: module(m) for m in NVIDIA_MODULES})
        check(not os.path.exists("/dev/nvidia0") and not os.path.exists("/dev/nvidiactl"), "NVIDIA's nodes left")
        check(d.buses.unit_state("nvidia-persistenced.service") == "inactive", "persistenced runs during the hand-over")
        jobs = d.jobs()
        check(("StartUnit", "nvidia-persistenced.service") not in jobs and
              ("StopUnit", "nvidia-powerd.service") not in jobs, "the services' jobs at the hand-over", jobs)
        d.buses.clear_calls()
        rc, out, err = hook(c, "release", "end")
        check(rc == 0, f"release end exit {rc}", err)
        jobs = d.jobs()
        check(jobs == [("StopUnit", "gdm.service"), ("StartUnit", "nvidia-persistenced.service"),
                       ("StartUnit", "gdm.service")], "persistenced started after the GPU is back", jobs)
        check(all(module(m) == "live" for m in NVIDIA_MODULES) and host.driver(VEGA) == "nvidia",
              "NVIDIA's modules and driver back", {m: module(m) for m in NVIDIA_MODULES})
        check(d.buses.unit_state("nvidia-persistenced.service") == "active", "persistenced not running again")
        check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


@variant(gpu="nvidia")
def test_nvidia_without_unload_keeps_its_modules(host):
    c = conf(extra_gpu="", desktop=True)
    with Desktop(system_units=nvidia_units(persistenced="inactive")) as d:
        before = host.snapshot()
        rc, out, err = hook(c, "prepare", "begin")
        check(rc == 0, f"prepare begin exit {rc}", err)
        check(host.driver(VEGA) == "vfio-pci" and module("nvidia") == "live" and module("nvidia_drm") == "live",
              "the RTX on vfio-pci, NVIDIA's modules loaded")
        check(not [j for j in d.jobs() if j[1].startswith("nvidia")], "an inactive service was touched", d.jobs())
        check(hook(c, "release", "end")[0] == 0, "release end")
        check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))


@variant(gpu="nvidia")
def test_a_holder_of_dev_nvidia0_holds_the_hand_over_up(host):
    """A CUDA process holding /dev/nvidia0: the hook waits for it, then fails naming it and the
    node; nothing is left changed. nvidia's remove would wait for it in the kernel."""
    c = conf(extra_gpu="", timeout="1s")
    before = host.snapshot()
    with host.hold("/dev/nvidia0") as pid:
        rc, out, err = hook(c, "prepare", "begin")
    check(rc == 1 and f"{pid} (python3" in err and "holding /dev/nvidia0" in err, f"prepare begin exit {rc}", err)
    check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))
    # the control node, which every NVIDIA GPU's users hold, counts too (like /dev/kfd on amdgpu)
    with host.hold("/dev/nvidiactl"):
        rc, out, err = hook(c, "prepare", "begin")
    check(rc == 1 and "holding /dev/nvidiactl" in err, f"prepare begin exit {rc}", err)
    check(host.snapshot() == before, "not restored", *diff(before, host.snapshot()))
