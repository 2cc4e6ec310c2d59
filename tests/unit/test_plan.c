/* The planner, without any I/O: config, host snapshot and desktop state are built by hand (the
 * hardware of origin/ORIGINAL-SCRIPTS.md), and each test asserts the exact list of steps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "modules.h"
#include "plan.h"

#define VFIO "vfio-pci"
#define ORIGIN_CPUS "0,1,6,7"

/* Everything one planner call reads, with the host's arrays inside so that the pointers of
 * struct host stay valid; filled in place, never copied. */
struct world {
        struct config cfg;
        struct host h;
        struct desktop_state d;
        struct pci_func gpu[2], secondary[2], group[2];
        struct vtcon vtcons[2];
        struct boot_fb fbs[2];
        struct vm_config vms[1];
};

static struct pci_func func(const char *name, const char *driver, const char *override,
                            unsigned vendor, unsigned device, unsigned class, int group, bool boot_vga) {
        struct pci_func f = { .vendor = vendor, .device = device, .class = class,
                              .iommu_group = group, .boot_vga = boot_vga };

        assert_int_equal(pci_addr_parse(name, &f.addr), 0);
        strscpy(f.name, name, sizeof(f.name));
        strscpy(f.driver, driver, sizeof(f.driver));
        strscpy(f.driver_override, override, sizeof(f.driver_override));
        return f;
}

/* The origin's host before a hand-over: the Vega 64 drives the desktop (amdgpu), its HDMI audio
 * is claimed by vfio-pci for good (`options vfio-pci ids=`), the R5 240 idles on vfio-pci, gdm
 * and the user's pipewire run, and the host CPUs are to be restricted to 0,1,6,7 of 12. */
static void origin(struct world *w) {
        *w = (struct world) {};

        w->cfg = (struct config) {
                .path = (char *) "/etc/libvirt/hooks/kvm.conf",
                .n_gpu = 2,
                .gpu = { { 0, 0x0d, 0, 0 }, { 0, 0x0d, 0, 1 } },
                .n_secondary = 2,
                .secondary = { { 0, 0x08, 0, 0 }, { 0, 0x08, 0, 1 } },
                .park_driver = (char *) VFIO,
                .user = (char *) "liss",
                .display_manager = (char *) "auto",
                .user_units = { (char *) "pipewire.service", (char *) "pipewire-pulse.service", NULL },
                .host_cpus = (char *) ORIGIN_CPUS,
                .timeout_ms = 20000,
                .vtconsoles = true,
                .framebuffer = true,
        };

        w->gpu[0] = func("0000:0d:00.0", "amdgpu", "", 0x1002, 0x687f, 0x030000, 17, true);
        w->gpu[1] = func("0000:0d:00.1", VFIO, "", 0x1002, 0xaaf8, 0x040300, 17, false);
        w->secondary[0] = func("0000:08:00.0", VFIO, "", 0x1002, 0x6613, 0x030000, 14, false);
        w->secondary[1] = func("0000:08:00.1", VFIO, "", 0x1002, 0xaab0, 0x040300, 14, false);
        /* The PCIe switch above the Vega shares its group; a bridge is fine. */
        w->group[0] = func("0000:0c:00.0", "pcieport", "", 0x1022, 0x1471, 0x060400, 17, false);
        w->vtcons[0] = (struct vtcon) { .index = 0, .framebuffer = false, .bound = true };
        w->vtcons[1] = (struct vtcon) { .index = 1, .framebuffer = true, .bound = true };
        w->fbs[0] = (struct boot_fb) { .name = "efi-framebuffer.0", .driver = "efi-framebuffer",
                                       .parent = "0000:0d:00.0" };

        w->h = (struct host) {
                .gpu = w->gpu, .n_gpu = 2,
                .secondary = w->secondary, .n_secondary = 2,
                .group = w->group, .n_group = 1,
                .vtcons = w->vtcons, .n_vtcons = 2,
                .fbs = w->fbs, .n_fbs = 1,
                .secondary_driver = "radeon",
        };

        w->d = (struct desktop_state) {
                .display_manager = "gdm.service",
                .display_manager_active = true,
                .user_unit_active = { true, true },
                .cpus_now = { "", "", "" },
                .host_cpus = "0-11",
        };
}

/* The origin's host while the VM runs, as our hand-over leaves it: both functions of the Vega on
 * vfio-pci with the override that marks them as ours, the R5 240 on radeon driving the desktop,
 * the firmware framebuffer gone (amdgpu took it over before), CPUs restricted. */
static void handed_over(struct world *w) {
        origin(w);
        strscpy(w->gpu[0].driver, VFIO, NAME_LEN);
        strscpy(w->gpu[0].driver_override, VFIO, NAME_LEN);
        strscpy(w->gpu[1].driver_override, VFIO, NAME_LEN);
        strscpy(w->secondary[0].driver, "radeon", NAME_LEN);
        strscpy(w->secondary[0].driver_override, "radeon", NAME_LEN);
        w->h.n_fbs = 0;
        for (size_t i = 0; i < 3; i++)
                strscpy(w->d.cpus_now[i], ORIGIN_CPUS, STEP_FIELD_LEN);
}

struct want {
        const struct step_kind *kind;
        const char *target, *from, *to;
        enum step_state state;
        const char *note;               /* NULL: "" */
};

static void step_line(const struct step_kind *kind, const char *target, const char *from, const char *to,
                      enum step_state state, const char *note, char *buf, size_t size) {
        snprintf(buf, size, "%s %s [%s -> %s] %s%s%s", kind ? kind->name : "(null kind)", target, from, to,
                 step_state_to_string(state), note && note[0] ? ": " : "", note ? note : "");
}

/* The note, or else what the kind records of its own, as "key=value": what the plan says of it. */
static const char *recorded(const struct step *s, char *buf, size_t size) {
        if (s->note[0] || !s->kind->fields)
                return s->note;
        snprintf(buf, size, "%s=%s", s->kind->fields[0].key, (const char *) s + s->kind->fields[0].offset);
        return strchr(buf, '=')[1] ? buf : "";
}

static void print_plan(const struct plan *p) {
        char line[1024];

        print_message("plan of %s, %zu steps:\n", p->vm, p->n_steps);
        for (size_t i = 0; i < p->n_steps; i++) {
                const struct step *s = &p->steps[i];
                char rec[256];
                step_line(s->kind, s->target, s->from, s->to, s->state, recorded(s, rec, sizeof(rec)), line,
                          sizeof(line));
                print_message("  %2zu. %s\n", i + 1, line);
        }
}

/* Compares step by step, as text so a failure shows the step expected and the one found. */
static void assert_plan(const struct plan *p, const struct want *want, size_t n_want) {
        char got[1024], exp[1024];

        for (size_t i = 0; i < p->n_steps && i < n_want; i++) {
                const struct step *s = &p->steps[i];
                const struct want *w = &want[i];
                char rec[256];

                step_line(s->kind, s->target, s->from, s->to, s->state, recorded(s, rec, sizeof(rec)), got,
                          sizeof(got));
                step_line(w->kind, w->target, w->from, w->to, w->state, w->note ? w->note : "", exp, sizeof(exp));
                if (strcmp(got, exp) != 0 || s->kind != w->kind) {
                        print_plan(p);
                        print_message("step %zu differs:\n", i + 1);
                        assert_string_equal(got, exp);
                        assert_ptr_equal(s->kind, w->kind);
                }
        }
        if (p->n_steps != n_want)
                print_plan(p);
        assert_int_equal(p->n_steps, n_want);
}

#define P STEP_PLANNED, NULL
#define S STEP_SKIPPED
#define D STEP_DONE, NULL

static struct plan hand_over_ok(const struct world *w) {
        struct plan p = {};
        char error[512] = "";
        int r = plan_hand_over(&w->cfg, "win10", &w->h, &w->d, &p, error, sizeof(error));

        if (r < 0)
                print_message("plan_hand_over: %s\n", error);
        assert_int_equal(r, 0);
        assert_string_equal(p.vm, "win10");
        return p;
}

static struct plan derive(const struct world *w) {
        struct plan p = {};

        assert_int_equal(plan_derive_hand_back(&w->cfg, "win10", &w->h, &w->d, &p), 0);
        assert_string_equal(p.vm, "win10");
        return p;
}

/* SPEC section 4, steps 1 to 10, on the origin's hardware. */
static void test_origin_hand_over(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_unit, "gdm.service", "active", "inactive", P },                 /* 1 */
                { &step_user_unit, "pipewire.service", "active", "inactive", P },       /* 2 */
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", P },
                { &step_vtcon, "vtcon1", "1", "0", P },                                  /* 3: fbcon only */
                { &step_framebuffer, "efi-framebuffer.0", "efi-framebuffer", "", STEP_PLANNED, "on=0000:0d:00.0" },    /* 4 */
                { &step_holders, "0000:0d:00.0", "amdgpu", "", P },                      /* 5 */
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", VFIO, P },                 /* 6 */
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },                 /* 7: display function only */
                { &step_vtcon, "vtcon1", "0", "1", P },                                  /* 8 */
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, P },                        /* 9 */
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, P },
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", P },  /* 10 */
                { &step_user_unit, "pipewire.service", "inactive", "active", P },
                { &step_unit, "gdm.service", "inactive", "active", P },
        };

        origin(&w);
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
        assert_null(p.steps);
        assert_int_equal(p.n_steps, 0);
}

/* An NVIDIA GPU: its driver's services stop after the desktop and are not started with it (without
 * their GPU they fail): the hand-back starts them, once the GPU is back. One not running is skipped. */
static void test_nvidia_services(void **state) {
        struct world w;
        struct plan p;
        const char *units[PLAN_DRIVER_UNITS];

        origin(&w);
        assert_int_equal(plan_driver_units(&w.h, units), 0);
        strscpy(w.gpu[0].driver, "nvidia", NAME_LEN);
        assert_int_equal(plan_driver_units(&w.h, units), 2);
        assert_string_equal(units[0], "nvidia-persistenced.service");
        assert_string_equal(units[1], "nvidia-powerd.service");
        strscpy(w.d.driver_units[0], units[0], NAME_LEN);
        strscpy(w.d.driver_units[1], units[1], NAME_LEN);
        w.d.driver_unit_active[0] = true;
        w.d.n_driver_units = 2;
        const struct want want[] = {
                { &step_unit, "gdm.service", "active", "inactive", P },
                { &step_user_unit, "pipewire.service", "active", "inactive", P },
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", P },
                { &step_unit, "nvidia-persistenced.service", "active", "inactive", P },
                { &step_unit, "nvidia-powerd.service", "active", "inactive", S, "not active" },
                { &step_vtcon, "vtcon1", "1", "0", P },
                { &step_framebuffer, "efi-framebuffer.0", "efi-framebuffer", "", STEP_PLANNED, "on=0000:0d:00.0" },
                { &step_holders, "0000:0d:00.0", "nvidia", "", P },
                { &step_pci_driver, "0000:0d:00.0", "nvidia", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },
                { &step_vtcon, "vtcon1", "0", "1", P },
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, P },
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", P },
                { &step_user_unit, "pipewire.service", "inactive", "active", P },
                { &step_unit, "gdm.service", "inactive", "active", P },
        };
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

/* A GPU whose audio is not claimed by vfio-pci: both functions are waited for and moved. */
static void test_audio_on_its_driver(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_unit, "gdm.service", "active", "inactive", P },
                { &step_user_unit, "pipewire.service", "active", "inactive", P },
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", P },
                { &step_vtcon, "vtcon1", "1", "0", P },
                { &step_framebuffer, "efi-framebuffer.0", "efi-framebuffer", "", STEP_PLANNED, "on=0000:0d:00.0" },
                { &step_holders, "0000:0d:00.0", "amdgpu", "", P },
                { &step_holders, "0000:0d:00.1", "snd_hda_intel", "", P },
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", "snd_hda_intel", VFIO, P },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },
                { &step_vtcon, "vtcon1", "0", "1", P },
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, P },
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", P },
                { &step_user_unit, "pipewire.service", "inactive", "active", P },
                { &step_unit, "gdm.service", "inactive", "active", P },
        };

        origin(&w);
        strscpy(w.gpu[1].driver, "snd_hda_intel", NAME_LEN);
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

/* Handed over already (another VM, or by hand): like start.sh, touch nothing at all. */
static void test_gpu_already_on_vfio(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_pci_driver, "0000:0d:00.0", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
        };

        handed_over(&w);
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        for (size_t i = 0; i < p.n_steps; i++)
                assert_int_equal(p.steps[i].state, STEP_SKIPPED);
        plan_free(&p);

        /* The same when the GPU sits on vfio-pci without our override (bound at boot). */
        origin(&w);
        strscpy(w.gpu[0].driver, VFIO, NAME_LEN);
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

static void test_no_secondary_gpu(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_unit, "gdm.service", "active", "inactive", P },
                { &step_user_unit, "pipewire.service", "active", "inactive", P },
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", P },
                { &step_vtcon, "vtcon1", "1", "0", P },
                { &step_framebuffer, "efi-framebuffer.0", "efi-framebuffer", "", STEP_PLANNED, "on=0000:0d:00.0" },
                { &step_holders, "0000:0d:00.0", "amdgpu", "", P },
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_vtcon, "vtcon1", "0", "1", P },
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, P },
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", P },
                { &step_user_unit, "pipewire.service", "inactive", "active", P },
                { &step_unit, "gdm.service", "inactive", "active", P },
        };

        origin(&w);
        w.cfg.n_secondary = 0;
        w.h.n_secondary = 0;
        w.h.secondary_driver[0] = '\0';       /* nothing to resolve: not an error */
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

/* The origin's audio function, claimed by `options vfio-pci ids=` for good: the hand-over skips
 * it, and the hand-back derived without a journal must not move it either (it carries no
 * override of ours), while the video function, which does, goes back. */
static void test_audio_permanently_on_vfio(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        p = hand_over_ok(&w);
        assert_int_equal(p.n_steps, 16);
        assert_ptr_equal(p.steps[7].kind, &step_pci_driver);
        assert_string_equal(p.steps[7].target, "0000:0d:00.1");
        assert_int_equal(p.steps[7].state, STEP_SKIPPED);
        assert_string_equal(p.steps[7].note, "already on vfio-pci");
        /* No holders step for it: vfio-pci has no sound nodes anybody could hold. */
        for (size_t i = 0; i < p.n_steps; i++)
                if (p.steps[i].kind == &step_holders)
                        assert_string_equal(p.steps[i].target, "0000:0d:00.0");
        plan_free(&p);

        handed_over(&w);
        w.gpu[1].driver_override[0] = '\0';   /* what our hand-over leaves on a skipped function */
        p = derive(&w);
        print_plan(&p);
        size_t n_gpu_steps = 0;
        for (size_t i = 0; i < p.n_steps; i++) {
                const struct step *s = &p.steps[i];
                assert_string_not_equal(s->target, "0000:0d:00.1");
                if (s->kind == &step_pci_driver && strcmp(s->target, "0000:0d:00.0") == 0) {
                        n_gpu_steps++;
                        assert_string_equal(s->from, "*");
                        assert_string_equal(s->to, VFIO);
                        assert_int_equal(s->state, STEP_DONE);
                }
        }
        assert_int_equal(n_gpu_steps, 1);
        plan_free(&p);
}

static void test_foreign_device_in_group(void **state) {
        static const struct {
                const char *driver;
                const char *error;
        } cases[] = {
                { "xhci_hcd", "IOMMU group 17 of the GPU also holds 0000:0c:00.3 (1022:43d5) on xhci_hcd: it would "
                              "have to go to the VM too; bind it to vfio-pci or move the GPU to another slot" },
                { "", "IOMMU group 17 of the GPU also holds 0000:0c:00.3 (1022:43d5) on no driver: it would "
                      "have to go to the VM too; bind it to vfio-pci or move the GPU to another slot" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct world w;
                struct plan p = {};
                char error[512] = "";

                origin(&w);
                w.group[1] = func("0000:0c:00.3", cases[i].driver, "", 0x1022, 0x43d5, 0x0c0330, 17, false);
                w.h.n_group = 2;
                assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EBUSY);
                assert_string_equal(error, cases[i].error);
                assert_null(p.steps);
                assert_int_equal(p.n_steps, 0);
        }
}

/* A device of the group already on vfio-pci goes to the VM with it: allowed. */
static void test_group_member_on_vfio_allowed(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        w.group[1] = func("0000:0c:00.3", VFIO, "", 0x1022, 0x43d5, 0x0c0330, 17, false);
        w.h.n_group = 2;
        p = hand_over_ok(&w);
        assert_int_equal(p.n_steps, 16);
        plan_free(&p);
}

static void test_no_iommu_group(void **state) {
        struct world w;
        struct plan p = {};
        char error[512] = "";

        origin(&w);
        w.gpu[0].iommu_group = -1;
        w.gpu[1].iommu_group = -1;
        w.h.n_group = 0;
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -ENODEV);
        assert_string_equal(error, "0000:0d:00.0 has no IOMMU group: is the IOMMU on (amd_iommu=on or "
                                   "intel_iommu=on on the kernel command line)?");
        assert_null(p.steps);
}

/* A configured slot without a display function (a USB controller at the address a user copied
 * from the example) is refused before anything is planned. */
static void test_gpu_not_a_display_controller(void **state) {
        struct world w;
        struct plan p = {};
        char error[512] = "";

        origin(&w);
        w.gpu[0].class = 0x0c0330;
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -ENODEV);
        assert_string_equal(error, "0000:0d:00.0 is not a GPU (PCI class 0c0330, not a display controller): "
                                   "is [gpu] address (or VIRSH_GPU_VIDEO) the GPU's?");
        assert_null(p.steps);
}

/* [gpu] reset_method: set after the moves to vfio-pci, on the display function; auto only with
 * vendor-reset loaded and knowing the device; a method the device lacks refused before anything. */
static void test_reset_method(void **state) {
        struct world w;
        struct plan p = {};
        char error[512] = "";

        origin(&w);
        w.gpu[0].has_reset_method = true;
        strscpy(w.gpu[0].reset_method, "bus", NAME_LEN);
        w.cfg.reset_method = (char *) "auto";
        w.h.vendor_reset = true;
        p = hand_over_ok(&w);
        const struct want set[] = {
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_reset_method, "0000:0d:00.0", "bus", "device_specific", P },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },
        };
        struct plan part = { .steps = p.steps + 6, .n_steps = 4 };
        assert_plan(&part, set, 4);
        plan_free(&p);

        /* auto without vendor-reset, or for a device it has no reset for: skipped, saying why */
        w.h.vendor_reset = false;
        p = hand_over_ok(&w);
        assert_ptr_equal(p.steps[8].kind, &step_reset_method);
        assert_int_equal(p.steps[8].state, STEP_SKIPPED);
        assert_string_equal(p.steps[8].note, "auto: vendor-reset is not loaded");
        plan_free(&p);
        w.h.vendor_reset = true;
        w.gpu[0].device = 0x73bf;       /* Navi 21: not in vendor-reset's table */
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[8].note, "auto: vendor-reset has no reset for this device");
        plan_free(&p);

        /* a list: each method must be the device's */
        w.cfg.reset_method = (char *) "flr bus";
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[gpu] reset_method = flr bus: 0000:0d:00.0 does not support flr (its methods: bus)");
        assert_null(p.steps);
        w.cfg.reset_method = (char *) "bus";
        p = hand_over_ok(&w);
        assert_int_equal(p.steps[8].state, STEP_SKIPPED);
        assert_string_equal(p.steps[8].note, "already set");
        plan_free(&p);
        /* no reset_method at all (the kernel found no method): any list is refused */
        w.gpu[0].has_reset_method = false;
        w.gpu[0].reset_method[0] = '\0';
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[gpu] reset_method = bus: 0000:0d:00.0 has no reset_method (the kernel found no "
                                   "reset method for it)");
}

static struct kmodule kmodule(const char *name, const char *drivers, const char *devices, const char *others,
                              const char *holders) {
        struct kmodule m = { .loadable = true, .refcnt = 1 };

        strscpy(m.name, name, sizeof(m.name));
        strscpy(m.drivers, drivers, sizeof(m.drivers));
        strscpy(m.devices, devices, sizeof(m.devices));
        strscpy(m.others, others, sizeof(m.others));
        strscpy(m.holders, holders, sizeof(m.holders));
        return m;
}

/* [gpu] unload_driver: after the moves to vfio-pci, before the secondary GPU's move, in the order
 * host_modules gives (the modules using one first); a module that must stay is skipped, saying why. */
static void test_unload_driver(void **state) {
        struct world w;
        struct plan p = {};
        struct kmodule nvidia[4];

        origin(&w);
        w.cfg.unload_driver = true;
        strscpy(w.gpu[0].driver, "nvidia", NAME_LEN);
        nvidia[0] = kmodule("nvidia_drm", "", "", "", "");
        nvidia[1] = kmodule("nvidia_modeset", "", "", "", "nvidia_drm");
        nvidia[2] = kmodule("nvidia_uvm", "", "", "", "");
        nvidia[3] = kmodule("nvidia", "nvidia", "0000:0d:00.0", "", "nvidia_modeset nvidia_uvm");
        w.h.modules = nvidia;
        w.h.n_modules = 4;
        p = hand_over_ok(&w);
        const struct want all[] = {
                { &step_pci_driver, "0000:0d:00.0", "nvidia", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_module, "nvidia_drm", "loaded", "unloaded", STEP_PLANNED, "refcount 1" },
                { &step_module, "nvidia_modeset", "loaded", "unloaded", STEP_PLANNED, "refcount 1" },
                { &step_module, "nvidia_uvm", "loaded", "unloaded", STEP_PLANNED, "refcount 1" },
                { &step_module, "nvidia", "loaded", "unloaded", STEP_PLANNED,
                  "driver nvidia of 0000:0d:00.0; refcount 1" },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },
        };
        struct plan part = { .steps = p.steps + 6, .n_steps = 7 };
        assert_plan(&part, all, 7);
        char what[256];
        step_describe(&p.steps[11], false, what, sizeof(what));
        assert_string_equal(what, "unload module nvidia (driver nvidia of 0000:0d:00.0; refcount 1)");
        step_describe(&p.steps[11], true, what, sizeof(what));
        assert_string_equal(what, "load module nvidia again");
        plan_free(&p);

        /* a module a staying one uses stays too */
        nvidia[0].builtin = true;
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[8].note, "built into the kernel");
        assert_string_equal(p.steps[9].note, "module nvidia_drm, which stays, uses it");
        assert_int_equal(p.steps[10].state, STEP_PLANNED);
        assert_string_equal(p.steps[11].note, "module nvidia_modeset, which stays, uses it");
        assert_int_equal(p.steps[11].state, STEP_SKIPPED);
        plan_free(&p);

        /* no file to load it back from; another device on its driver; the secondary GPU's driver */
        struct kmodule one[1] = { kmodule("amdgpu", "amdgpu", "0000:0d:00.0", "", "") };
        strscpy(w.gpu[0].driver, "amdgpu", NAME_LEN);
        w.h.modules = one;
        w.h.n_modules = 1;
        one[0].loadable = false;
        p = hand_over_ok(&w);
        assert_ptr_equal(p.steps[8].kind, &step_module);
        assert_string_equal(p.steps[8].note, "no file to load it back from (not in this kernel's modules.dep)");
        plan_free(&p);
        one[0].loadable = true;
        strscpy(one[0].others, "0000:03:00.0", sizeof(one[0].others));
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[8].note, "it also drives 0000:03:00.0");
        plan_free(&p);
        one[0].others[0] = '\0';
        strscpy(w.h.secondary_driver, "amdgpu", NAME_LEN);
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[8].note, "its driver amdgpu is the secondary GPU's display driver");
        plan_free(&p);

        /* off (the default): no step */
        w.cfg.unload_driver = false;
        p = hand_over_ok(&w);
        for (size_t i = 0; i < p.n_steps; i++)
                assert_ptr_not_equal(p.steps[i].kind, &step_module);
        plan_free(&p);
}

/* [vm NAME] bar_sizes: the display function's move split around the resize; sizes checked first. */
static void test_bar_sizes(void **state) {
        struct world w;
        struct plan p = {};
        char error[512] = "";

        origin(&w);
        w.gpu[0].bar_supported[0] = 0x3f00;
        w.gpu[0].bar_supported[2] = 0x1fe;
        w.gpu[0].bar_bytes[0] = 256 << 20;
        w.gpu[0].bar_bytes[2] = 2 << 20;
        w.vms[0] = (struct vm_config) { .name = (char *) "win10", .handle = -1,
                                        .bar_sizes = { .bar = { { 0, 13 }, { 2, 8 } }, .n = 2 } };
        w.cfg.vms = w.vms;
        w.cfg.n_vms = 1;
        p = hand_over_ok(&w);
        const struct want split[] = {
                { &step_holders, "0000:0d:00.0", "amdgpu", "", P },
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", "", P },
                { &step_bar_sizes, "0000:0d:00.0", "0:256M 2:2M", "0:8G 2:256M", STEP_PLANNED,
                  "supported=BAR 0 256M-8G, BAR 2 2M-256M" },
                { &step_pci_driver, "0000:0d:00.0", "", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
        };
        struct plan part = { .steps = p.steps + 5, .n_steps = 5 };
        assert_plan(&part, split, 5);
        plan_free(&p);

        /* another VM: no resize */
        assert_int_equal(plan_hand_over(&w.cfg, "other", &w.h, &w.d, &p, error, sizeof(error)), 0);
        assert_ptr_equal(p.steps[6].kind, &step_pci_driver);
        assert_string_equal(p.steps[6].to, VFIO);
        plan_free(&p);

        /* the sizes now: one step, skipped, and the move as usual */
        w.vms[0].bar_sizes = (struct bar_sizes) { .bar = { { 0, 8 } }, .n = 1 };
        p = hand_over_ok(&w);
        assert_ptr_equal(p.steps[6].kind, &step_bar_sizes);
        assert_int_equal(p.steps[6].state, STEP_SKIPPED);
        assert_string_equal(p.steps[7].to, VFIO);
        assert_string_equal(p.steps[7].from, "amdgpu");
        plan_free(&p);

        /* what the kernel would refuse */
        w.vms[0].bar_sizes = (struct bar_sizes) { .bar = { { 0, 14 } }, .n = 1 };
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[vm win10] bar_sizes: BAR 0 of 0000:0d:00.0 cannot be 16G (it supports 256M-8G)");
        w.gpu[0].bar_supported[0] = 0x2500;     /* 256M 1G 8G */
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[vm win10] bar_sizes: BAR 0 of 0000:0d:00.0 cannot be 16G (it supports 256M 1G 8G)");
        w.vms[0].bar_sizes = (struct bar_sizes) { .bar = { { 4, 0 } }, .n = 1 };
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[vm win10] bar_sizes: BAR 4 of 0000:0d:00.0 is not resizable (no resource4_resize)");
        assert_null(p.steps);
}

/* Without a display driver for the secondary GPU the host would be left without a display. */
static void test_secondary_without_display_driver(void **state) {
        struct world w;
        struct plan p = {};
        char error[512] = "";

        origin(&w);
        w.h.secondary_driver[0] = '\0';
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -ENOENT);
        assert_string_equal(error, "no display driver known for the secondary GPU 0000:08:00.0: set driver in "
                                   "the [secondary] section of the config");
        assert_null(p.steps);
}

/* What the desktop state says is not running is neither stopped nor restarted; a skip reason
 * from the bus (no user bus) is carried to both steps. */
static void test_desktop_partly_inactive(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        w.d.display_manager_active = false;
        w.d.user_unit_active[1] = false;
        p = hand_over_ok(&w);
        assert_int_equal(p.n_steps, 16);
        const struct want first[] = {
                { &step_unit, "gdm.service", "active", "inactive", S, "not active" },
                { &step_user_unit, "pipewire.service", "active", "inactive", P },
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", S, "not active" },
        };
        const struct want last[] = {
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", S, "not active" },
                { &step_user_unit, "pipewire.service", "inactive", "active", P },
                { &step_unit, "gdm.service", "inactive", "active", S, "not active" },
        };
        struct plan head = { .steps = p.steps, .n_steps = 3 }, tail = { .steps = p.steps + 13, .n_steps = 3 };
        assert_plan(&head, first, 3);
        assert_plan(&tail, last, 3);
        plan_free(&p);

        origin(&w);
        w.d.user_units_skip = "liss is not logged in";
        w.d.display_manager_skip = "no system bus";
        p = hand_over_ok(&w);
        assert_int_equal(p.n_steps, 16);
        for (size_t i = 0; i < p.n_steps; i++) {
                const struct step *s = &p.steps[i];
                if (s->kind == &step_unit) {
                        assert_int_equal(s->state, STEP_SKIPPED);
                        assert_string_equal(s->note, "no system bus");
                } else if (s->kind == &step_user_unit) {
                        assert_int_equal(s->state, STEP_SKIPPED);
                        assert_string_equal(s->note, "liss is not logged in");
                } else if (s->kind == &step_pci_driver && strcmp(s->target, "0000:0d:00.1") != 0)
                        assert_int_equal(s->state, STEP_PLANNED);
        }
        plan_free(&p);
}

/* Features the config turns off produce no steps at all. */
static void test_config_switches(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_holders, "0000:0d:00.0", "amdgpu", "", P },
                { &step_pci_driver, "0000:0d:00.0", "amdgpu", VFIO, P },
                { &step_pci_driver, "0000:0d:00.1", VFIO, VFIO, S, "already on vfio-pci" },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", P },
        };

        origin(&w);
        w.cfg.display_manager = (char *) "none";
        w.cfg.user = NULL;
        w.cfg.host_cpus = NULL;
        w.cfg.vtconsoles = false;
        w.cfg.framebuffer = false;
        p = hand_over_ok(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

static void test_cpus(void **state) {
        struct world w;
        struct plan p;

        /* Already restricted (a previous VM's run that was not handed back): nothing to set. */
        origin(&w);
        strscpy(w.d.cpus_now[0], ORIGIN_CPUS, STEP_FIELD_LEN);
        p = hand_over_ok(&w);
        const struct want set[] = {
                { &step_cpus, "user.slice", ORIGIN_CPUS, ORIGIN_CPUS, S, "already set" },
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, P },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, P },
        };
        struct plan part = { .steps = p.steps + 10, .n_steps = 3 };
        assert_plan(&part, set, 3);
        plan_free(&p);

        /* A [vm win10] section's host CPUs win over the global value; other VMs keep it. */
        origin(&w);
        w.vms[0] = (struct vm_config) { .name = (char *) "win10", .handle = -1, .host_cpus = (char *) "0-3" };
        w.cfg.vms = w.vms;
        w.cfg.n_vms = 1;
        p = hand_over_ok(&w);
        for (size_t i = 10; i < 13; i++) {
                assert_ptr_equal(p.steps[i].kind, &step_cpus);
                assert_string_equal(p.steps[i].to, "0-3");
        }
        plan_free(&p);
        char error[64];
        assert_int_equal(plan_hand_over(&w.cfg, "other", &w.h, &w.d, &p, error, sizeof(error)), 0);
        assert_ptr_equal(p.steps[10].kind, &step_cpus);
        assert_string_equal(p.steps[10].to, ORIGIN_CPUS);
        plan_free(&p);
}

/* [vm] hugepages: the pool's step comes first, before the desktop stops; [vm] cpu_governor: a step
 * per CPU right before the CPU restriction, offline CPUs and CPUs without cpufreq skipped; what
 * the host cannot give refused with nothing planned. */
static void test_tuning(void **state) {
        struct cpu_freq cpus[4] = {
                { .cpu = 0, .online = true, .cpufreq = true, .governor = "schedutil",
                  .available = "powersave performance schedutil" },
                { .cpu = 1, .online = true, .cpufreq = true, .governor = "performance",
                  .available = "powersave performance schedutil" },
                { .cpu = 2, .online = false, .cpufreq = true },
                { .cpu = 3, .online = true, .cpufreq = false },
        };
        struct world w;
        struct plan p;
        char error[512];

        origin(&w);
        w.vms[0] = (struct vm_config) { .name = (char *) "win10", .handle = -1, .hugepages_kb = 65 * 1024,
                                        .cpu_governor = (char *) "performance" };
        w.cfg.vms = w.vms;
        w.cfg.n_vms = 1;
        w.h.huge = (struct huge_pool) { .page_kb = 2048, .asked_kb = 2048, .nr = 40, .free = 10 };
        w.h.cpus = cpus;
        w.h.n_cpus = 4;
        p = hand_over_ok(&w);
        /* 65 MiB is 33 pages of 2 MiB (rounded up); 10 free: 23 more. */
        assert_ptr_equal(p.steps[0].kind, &step_hugepages);
        assert_string_equal(p.steps[0].target, "hugepages-2048kB");
        assert_string_equal(p.steps[0].from, "40");
        assert_string_equal(p.steps[0].to, "63");
        assert_string_equal(p.steps[0].data.huge.want, "33");
        assert_string_equal(p.steps[0].data.huge.free, "10");
        assert_int_equal(p.steps[0].state, STEP_PLANNED);
        assert_ptr_equal(p.steps[1].kind, &step_unit);
        const struct want governors[] = {
                { &step_governor, "cpu0", "schedutil", "performance", P },
                { &step_governor, "cpu1", "performance", "performance", S, "set already" },
                { &step_governor, "cpu2", "", "performance", S, "offline" },
                { &step_governor, "cpu3", "", "performance", S, "no cpufreq: the kernel does not scale its frequency" },
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, P },
        };
        struct plan part = { .steps = p.steps + 11, .n_steps = 5 };
        assert_plan(&part, governors, 5);
        plan_free(&p);
        /* Another VM asks for nothing: its plan is the origin's. */
        assert_int_equal(plan_hand_over(&w.cfg, "other", &w.h, &w.d, &p, error, sizeof(error)), 0);
        struct world plain;
        origin(&plain);
        struct plan origin_plan = hand_over_ok(&plain);
        assert_ptr_equal(p.steps[0].kind, &step_unit);
        assert_int_equal(p.n_steps, origin_plan.n_steps);
        plan_free(&origin_plan);
        plan_free(&p);

        /* Free already: a skip. */
        w.h.huge.free = 33;
        p = hand_over_ok(&w);
        assert_int_equal(p.steps[0].state, STEP_SKIPPED);
        assert_string_equal(p.steps[0].to, "40");
        plan_free(&p);

        /* 40 pages, 5 of them surplus (nr_hugepages counts them): the hand-back puts back the
         * persistent 35; the write makes the surplus pages persistent before allocating, so it
         * asks for all 40 and the 23 missing. */
        w.h.huge = (struct huge_pool) { .page_kb = 2048, .asked_kb = 2048, .nr = 40, .free = 10, .surplus = 5 };
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[0].from, "35");
        assert_string_equal(p.steps[0].to, "63");
        assert_int_equal(p.steps[0].state, STEP_PLANNED);
        plan_free(&p);
        /* 33 free, 30 of them reserved: 3 free for the VM, 30 more. */
        w.h.huge = (struct huge_pool) { .page_kb = 2048, .asked_kb = 2048, .nr = 40, .free = 33, .resv = 30 };
        p = hand_over_ok(&w);
        assert_string_equal(p.steps[0].to, "70");
        assert_string_equal(p.steps[0].data.huge.free, "3");
        plan_free(&p);
        /* 40 free, 7 reserved: the 33 wanted are free, a skip; the count stays the persistent one. */
        w.h.huge = (struct huge_pool) { .page_kb = 2048, .asked_kb = 2048, .nr = 40, .free = 40, .surplus = 2,
                                        .resv = 7 };
        p = hand_over_ok(&w);
        assert_int_equal(p.steps[0].state, STEP_SKIPPED);
        assert_string_equal(p.steps[0].from, "38");
        assert_string_equal(p.steps[0].to, "38");
        plan_free(&p);

        /* Refusals. */
        w.vms[0].cpu_governor = (char *) "ondemand";
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "[vm win10] cpu_governor = ondemand: CPU 0 offers only powersave performance "
                            "schedutil (scaling_available_governors)");
        w.vms[0].cpu_governor = NULL;
        w.h.huge = (struct huge_pool) { .asked_kb = 1048576 };
        assert_int_equal(plan_hand_over(&w.cfg, "win10", &w.h, &w.d, &p, error, sizeof(error)), -EOPNOTSUPP);
        assert_string_equal(error, "[vm win10] hugepages: the kernel has no 1048576 kB huge pages (no /sys/kernel/mm/"
                            "hugepages/hugepages-1048576kB; 1G pages need a CPU with pdpe1gb)");
}

/* Which firmware framebuffer is the GPU's: its parent link, or on kernels without one the boot
 * VGA device's; one on another device, or unbound, is left alone. */
static void test_framebuffers(void **state) {
        struct world w;
        struct plan p;
        size_t n_fb = 0;

        origin(&w);
        w.fbs[0] = (struct boot_fb) { .name = "efi-framebuffer.0", .driver = "efi-framebuffer", .parent = "" };
        w.fbs[1] = (struct boot_fb) { .name = "simple-framebuffer.0", .driver = "simple-framebuffer",
                                      .parent = "0000:08:00.0" };
        w.h.n_fbs = 2;
        p = hand_over_ok(&w);
        for (size_t i = 0; i < p.n_steps; i++)
                if (p.steps[i].kind == &step_framebuffer) {
                        n_fb++;
                        assert_string_equal(p.steps[i].target, "efi-framebuffer.0");
                        assert_int_equal(i, 4);
                }
        assert_int_equal(n_fb, 1);
        plan_free(&p);

        /* Boot VGA is the R5 240: the parentless framebuffer is not the Vega's. */
        w.gpu[0].boot_vga = false;
        p = hand_over_ok(&w);
        for (size_t i = 0; i < p.n_steps; i++)
                assert_ptr_not_equal(p.steps[i].kind, &step_framebuffer);
        plan_free(&p);

        /* Unbound already: nothing to do. */
        origin(&w);
        w.fbs[0].driver[0] = '\0';
        p = hand_over_ok(&w);
        for (size_t i = 0; i < p.n_steps; i++)
                assert_ptr_not_equal(p.steps[i].kind, &step_framebuffer);
        plan_free(&p);
}

/* A secondary GPU left on its display driver (the user moved it by hand) is not moved again. */
static void test_secondary_already_on_display_driver(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        strscpy(w.secondary[0].driver, "radeon", NAME_LEN);
        p = hand_over_ok(&w);
        assert_ptr_equal(p.steps[8].kind, &step_pci_driver);
        assert_string_equal(p.steps[8].target, "0000:08:00.0");
        assert_int_equal(p.steps[8].state, STEP_SKIPPED);
        assert_string_equal(p.steps[8].note, "already on its display driver");
        plan_free(&p);
}

/* Without a journal: the hand-over that must have happened, every step done, so that undoing it
 * in reverse is the hand-back of SPEC section 5. */
static void test_derive_hand_back(void **state) {
        struct world w;
        struct plan p;
        const struct want want[] = {
                { &step_unit, "gdm.service", "active", "inactive", D },
                { &step_user_unit, "pipewire.service", "active", "inactive", D },
                { &step_user_unit, "pipewire-pulse.service", "active", "inactive", D },
                { &step_vtcon, "vtcon1", "1", "0", D },
                { &step_pci_driver, "0000:0d:00.0", "*", VFIO, D },
                { &step_pci_driver, "0000:0d:00.1", "*", VFIO, D },
                { &step_pci_driver, "0000:08:00.0", VFIO, "radeon", D },
                { &step_vtcon, "vtcon1", "0", "1", D },
                { &step_cpus, "user.slice", "", ORIGIN_CPUS, D },
                { &step_cpus, "system.slice", "", ORIGIN_CPUS, D },
                { &step_cpus, "init.scope", "", ORIGIN_CPUS, D },
                { &step_user_unit, "pipewire-pulse.service", "inactive", "active", D },
                { &step_user_unit, "pipewire.service", "inactive", "active", D },
                { &step_unit, "gdm.service", "inactive", "active", D },
        };

        handed_over(&w);
        p = derive(&w);
        assert_plan(&p, want, ELEMENTSOF(want));
        plan_free(&p);
}

/* Nothing of ours in place (GPU on amdgpu, or on vfio-pci without our override): an empty
 * hand-back, which must not restart anybody's desktop. */
static void test_derive_not_handed_over(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        p = derive(&w);
        assert_int_equal(p.n_steps, 0);
        plan_free(&p);

        origin(&w);
        strscpy(w.gpu[0].driver, VFIO, NAME_LEN);     /* bound at boot by ids=, no override */
        p = derive(&w);
        assert_int_equal(p.n_steps, 0);
        plan_free(&p);
}

static char *print_to_string(const struct plan *p, bool undo) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        plan_print(p, undo, f);
        fclose(f);
        return buf;
}

/* A parking rule's driver_override (a udev rule, since identical GPUs rule out vfio-pci ids=) is
 * in the plan, hence in the journal, before the first write: a hook killed during the move must
 * not lose it. */
static void test_parking_override_recorded(void **state) {
        struct world w;
        struct plan p;

        origin(&w);
        strscpy(w.secondary[0].driver_override, VFIO, sizeof(w.secondary[0].driver_override));
        p = hand_over_ok(&w);
        for (size_t i = 0; i < p.n_steps; i++) {
                const char *t = p.steps[i].target;

                if (p.steps[i].kind != &step_pci_driver)
                        continue;
                assert_string_equal(p.steps[i].data.pci.override, strcmp(t, "0000:08:00.0") == 0 ? VFIO : "");
                assert_string_equal(p.steps[i].note, strcmp(t, "0000:0d:00.1") == 0 ? "already on vfio-pci" : "");
        }
        plan_free(&p);
}

static void test_print(void **state) {
        struct plan p = {};
        char *out;

        out = print_to_string(&p, false);
        assert_string_equal(out, "nothing to do\n");
        free(out);

        plan_add(&p, &step_vtcon, "vtcon1", "1", "0")->state = STEP_DONE;
        struct step *s = plan_add(&p, &step_pci_driver, "0000:0d:00.1", VFIO, VFIO);
        s->state = STEP_SKIPPED;
        strscpy(s->note, "already on vfio-pci", sizeof(s->note));
        plan_add(&p, &step_pci_driver, "0000:08:00.0", VFIO, "radeon")->state = STEP_STARTED;
        plan_add(&p, &step_vtcon, "vtcon1", "0", "1");          /* planned: never done */

        out = print_to_string(&p, false);
        assert_string_equal(out,
                " 1. unbind fbcon (vtcon1)\n"
                " 2. (skip) move 0000:0d:00.1 from vfio-pci to vfio-pci: already on vfio-pci\n"
                " 3. move 0000:08:00.0 from vfio-pci to radeon\n"
                " 4. bind fbcon (vtcon1)\n");
        free(out);

        /* The undo: only what was started or done, in reverse. */
        out = print_to_string(&p, true);
        assert_string_equal(out,
                " 1. move 0000:08:00.0 from radeon to vfio-pci\n"
                " 2. bind fbcon (vtcon1)\n");
        free(out);
        plan_free(&p);
}

/* Issue 12: before_stop commands first (each step's undo an after_start, in their order when the
 * group is undone in reverse), after_start ones after the display manager is back, the VM's user
 * units, and the sleep inhibitor last; the derived hand-back has them all, done. */
static void test_commands_units_inhibitor(void **state) {
        struct world w;
        struct plan p;
        const char *want_tail[][3] = {
                /* kind name, target, to */
                { "user-command", "after_start", "/bin/after1" },
                { "user-unit", "scream.service", "active" },
                { "inhibit", "qemu-hook-inhibit-win10.service", "sleep:idle" },
        };

        origin(&w);
        w.cfg.inhibit_sleep = true;
        w.cfg.before_stop[0] = (char *) "/bin/before1 a";
        w.cfg.before_stop[1] = (char *) "/bin/before2";
        w.cfg.after_start[0] = (char *) "/bin/after1";
        w.vms[0] = (struct vm_config) { .name = (char *) "win10", .handle = -1,
                                        .user_units = { (char *) "scream.service", NULL } };
        w.cfg.vms = w.vms;
        w.cfg.n_vms = 1;
        p = hand_over_ok(&w);
        /* Two before_stop steps, the second carrying the only after_start as its undo: undone in
         * reverse, the group runs after_start once, after the display manager is back. */
        assert_ptr_equal(p.steps[0].kind, &step_command);
        assert_string_equal(p.steps[0].target, "before_stop");
        assert_string_equal(p.steps[0].to, "/bin/before1 a");
        assert_string_equal(p.steps[0].from, "");
        assert_string_equal(p.steps[1].to, "/bin/before2");
        assert_string_equal(p.steps[1].from, "/bin/after1");
        assert_ptr_equal(p.steps[2].kind, &step_unit);
        /* The after_start group: one step per command of the longer list, its undos the
         * before_stop commands reversed (before1 first when undone in reverse). */
        size_t n = p.n_steps;
        assert_ptr_equal(p.steps[n - 5].kind, &step_unit);              /* gdm started */
        assert_string_equal(p.steps[n - 4].to, "/bin/after1");
        assert_string_equal(p.steps[n - 4].from, "/bin/before2");
        assert_string_equal(p.steps[n - 3].to, "");
        assert_string_equal(p.steps[n - 3].from, "/bin/before1 a");
        assert_string_equal(p.steps[n - 2].kind->name, want_tail[1][0]);
        assert_string_equal(p.steps[n - 2].target, want_tail[1][1]);
        assert_string_equal(p.steps[n - 2].to, want_tail[1][2]);
        assert_string_equal(p.steps[n - 1].kind->name, want_tail[2][0]);
        assert_string_equal(p.steps[n - 1].target, want_tail[2][1]);
        assert_string_equal(p.steps[n - 1].to, want_tail[2][2]);
        assert_int_equal(p.steps[n - 1].state, STEP_PLANNED);
        plan_free(&p);

        /* Live values: a unit active already and no systemd: skipped, saying why. */
        w.d.vm_unit_active[0] = true;
        w.d.inhibit_skip = "systemd is not on the system bus";
        p = hand_over_ok(&w);
        n = p.n_steps;
        assert_int_equal(p.steps[n - 2].state, STEP_SKIPPED);
        assert_string_equal(p.steps[n - 2].note, "already active");
        assert_int_equal(p.steps[n - 1].state, STEP_SKIPPED);
        assert_string_equal(p.steps[n - 1].note, "systemd is not on the system bus");
        plan_free(&p);
        w.d = (struct desktop_state) {};

        /* The derived hand-back (the GPU on vfio-pci with our override): all of it, done. */
        w.gpu[0] = func("0000:0d:00.0", VFIO, VFIO, 0x1002, 0x687f, 0x030000, 14, true);
        p = derive(&w);
        n = p.n_steps;
        assert_true(n > 5);
        assert_ptr_equal(p.steps[0].kind, &step_command);
        assert_int_equal(p.steps[0].state, STEP_DONE);
        assert_ptr_equal(p.steps[n - 1].kind, &step_inhibit);
        assert_int_equal(p.steps[n - 1].state, STEP_DONE);
        assert_ptr_equal(p.steps[n - 2].kind, &step_user_unit);
        assert_string_equal(p.steps[n - 2].target, "scream.service");
        plan_free(&p);
}

/* The sleep inhibitor's unit name: systemd's escaping (unit_name_escape), a hash when too long. */
static void test_inhibit_unit_name(void **state) {
        char buf[STEP_FIELD_LEN], long_name[200];

        (void) state;
        plan_inhibit_unit("win10", buf, sizeof(buf));
        assert_string_equal(buf, "qemu-hook-inhibit-win10.service");
        plan_inhibit_unit("win 10-a/b:c_d.e", buf, sizeof(buf));
        assert_string_equal(buf, "qemu-hook-inhibit-win\\x2010\\x2da-b:c_d.e.service");
        plan_inhibit_unit(".hidden\xc3\xa9", buf, sizeof(buf));
        assert_string_equal(buf, "qemu-hook-inhibit-\\x2ehidden\\xc3\\xa9.service");
        memset(long_name, '-', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = '\0';
        plan_inhibit_unit(long_name, buf, sizeof(buf));
        assert_int_equal(strlen(buf), strlen("qemu-hook-inhibit-0123456789abcdef.service"));
        assert_true(strncmp(buf, "qemu-hook-inhibit-", 18) == 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_origin_hand_over),
                cmocka_unit_test(test_inhibit_unit_name),
                cmocka_unit_test(test_commands_units_inhibitor),
                cmocka_unit_test(test_reset_method),
                cmocka_unit_test(test_unload_driver),
                cmocka_unit_test(test_nvidia_services),
                cmocka_unit_test(test_bar_sizes),
                cmocka_unit_test(test_parking_override_recorded),
                cmocka_unit_test(test_audio_on_its_driver),
                cmocka_unit_test(test_gpu_already_on_vfio),
                cmocka_unit_test(test_no_secondary_gpu),
                cmocka_unit_test(test_audio_permanently_on_vfio),
                cmocka_unit_test(test_foreign_device_in_group),
                cmocka_unit_test(test_group_member_on_vfio_allowed),
                cmocka_unit_test(test_no_iommu_group),
                cmocka_unit_test(test_gpu_not_a_display_controller),
                cmocka_unit_test(test_secondary_without_display_driver),
                cmocka_unit_test(test_desktop_partly_inactive),
                cmocka_unit_test(test_config_switches),
                cmocka_unit_test(test_cpus),
                cmocka_unit_test(test_tuning),
                cmocka_unit_test(test_framebuffers),
                cmocka_unit_test(test_secondary_already_on_display_driver),
                cmocka_unit_test(test_derive_hand_back),
                cmocka_unit_test(test_derive_not_handed_over),
                cmocka_unit_test(test_print),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
