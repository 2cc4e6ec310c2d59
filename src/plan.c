#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "modules.h"
#include "plan.h"

#define VFIO PLAN_VFIO

const char *const plan_cpu_units[3] = { "user.slice", "system.slice", "init.scope" };

static bool in_place(const struct step *s) {
        return s->state == STEP_DONE || s->state == STEP_STARTED;
}

struct step *plan_add(struct plan *p, const struct step_kind *kind, const char *target,
                      const char *from, const char *to) {
        struct step *s;

        p->steps = xreallocarray(p->steps, p->n_steps + 1, sizeof(*p->steps));
        s = &p->steps[p->n_steps++];
        *s = (struct step) { .kind = kind };
        /* Targets and states are unit names, device names and CPU lists, all far below the field
         * size; a config that produces a longer one was refused when it was read. */
        strscpy(s->target, target, sizeof(s->target));
        strscpy(s->from, from, sizeof(s->from));
        strscpy(s->to, to, sizeof(s->to));
        return s;
}

void plan_skip(struct step *s, const char *why) {
        s->state = STEP_SKIPPED;
        strscpy(s->note, why, sizeof(s->note));
}

bool plan_is_display(const struct pci_func *f) {
        return (f->class >> 16) == 0x03;
}

static bool is_bridge(const struct pci_func *f) {
        return (f->class >> 8) == 0x0604;
}

bool plan_group_blocks(const struct pci_func *f) {
        return !is_bridge(f) && strcmp(f->driver, VFIO) != 0;
}

/* The function of the GPU the firmware framebuffer sits on, or NULL. */
static const struct pci_func *fb_on_gpu(const struct boot_fb *fb, const struct host *h) {
        for (size_t i = 0; i < h->n_gpu; i++)
                /* Without a parent link (kernels before 6.3), the firmware framebuffer is the boot
                 * VGA device's. */
                if (fb->parent[0] ? strcmp(fb->parent, h->gpu[i].name) == 0 : h->gpu[i].boot_vga)
                        return &h->gpu[i];
        return NULL;
}

/* A PCI move; an override found on the function (a parking rule's) is recorded in the plan, so in
 * the journal before anything is done, and the undo puts it back whenever the hook dies. */
static struct step *add_move(struct plan *p, const struct pci_func *f, const char *from, const char *to) {
        struct step *s = plan_add(p, &step_pci_driver, f->name, from, to);

        if (f->driver_override[0] && strcmp(f->driver_override, to) != 0)
                strscpy(s->data.pci.override, f->driver_override, sizeof(s->data.pci.override));
        return s;
}

const char *plan_host_cpus(const struct config *cfg, const char *vm) {
        const struct vm_config *v = config_vm(cfg, vm);
        return v && v->host_cpus ? v->host_cpus : cfg->host_cpus;
}

void plan_desktop_stops(const struct config *cfg, const struct desktop_state *d, bool all, struct plan *p) {
        const char *dm = d->display_manager[0] ? d->display_manager :
                         strcmp(cfg->display_manager, "auto") == 0 ? "display-manager.service" : cfg->display_manager;
        struct step *s;

        /* 1. The display manager lets go of the GPU. */
        if (strcmp(cfg->display_manager, "none") != 0) {
                s = plan_add(p, &step_unit, dm, "active", "inactive");
                if (d->display_manager_skip)
                        plan_skip(s, d->display_manager_skip);
                else if (!d->display_manager_active && !all)
                        plan_skip(s, "not active");
        }
        /* 2. So do the desktop user's audio units, which hold the GPU's HDMI audio. */
        for (size_t i = 0; cfg->user && cfg->user_units[i]; i++) {
                s = plan_add(p, &step_user_unit, cfg->user_units[i], "active", "inactive");
                if (d->user_units_skip)
                        plan_skip(s, d->user_units_skip);
                else if (!d->user_unit_active[i] && !all)
                        plan_skip(s, "not active");
        }
}

void plan_desktop_starts(struct plan *p, size_t first, size_t n) {
        for (size_t i = first + n; i-- > first;) {
                const struct step *stop = &p->steps[i];
                if ((stop->kind != &step_unit && stop->kind != &step_user_unit) ||
                    strcmp(stop->to, "inactive") != 0)
                        continue;
                const struct step_kind *kind = stop->kind;
                bool skipped = stop->state == STEP_SKIPPED;
                char unit[STEP_FIELD_LEN], note[STEP_FIELD_LEN];       /* plan_add moves the steps */
                strscpy(unit, stop->target, sizeof(unit));
                strscpy(note, stop->note, sizeof(note));
                struct step *s = plan_add(p, kind, unit, "inactive", "active");
                if (skipped)
                        plan_skip(s, note);
        }
}

void plan_inhibit_unit(const char *vm, char *buf, size_t size) {
        char escaped[STEP_FIELD_LEN];
        uint64_t hash = 14695981039346656037ULL;        /* FNV-1a */

        if (unit_name_escape(vm, escaped, sizeof(escaped)) == 0 &&
            (size_t) snprintf(buf, size, "qemu-hook-inhibit-%s.service", escaped) < size)
                return;
        for (const char *c = vm; *c; c++)
                hash = (hash ^ (unsigned char) *c) * 1099511628211ULL;
        snprintf(buf, size, "qemu-hook-inhibit-%016llx.service", (unsigned long long) hash);
}

size_t plan_driver_units(const struct host *h, const char **units) {
        /* nvidia-persistenced keeps the GPU's nodes open (the driver's state kept between users);
         * nvidia-powerd (Dynamic Boost) talks to the GPU. Started again once the GPU is back on the
         * driver, not with the desktop: without their GPU they fail. */
        static const char *const nvidia[] = { "nvidia-persistenced.service", "nvidia-powerd.service" };
        bool on_nvidia = false;
        size_t n = 0;

        for (size_t i = 0; i < h->n_gpu; i++)
                on_nvidia = on_nvidia || strcmp(h->gpu[i].driver, "nvidia") == 0;
        for (size_t i = 0; on_nvidia && i < ELEMENTSOF(nvidia) && n < PLAN_DRIVER_UNITS; i++)
                units[n++] = nvidia[i];
        return n;
}

/* Pairs of groups (step-command.c): group target's step i applies apply[i] and its undo runs
 * undo[k-1-i], so undoing the group in reverse runs undo's commands in their order. */
static void add_commands(struct plan *p, const char *target, char *const *apply, char *const *undo,
                         const char *skip) {
        size_t na = 0, nu = 0, k;

        while (apply[na])
                na++;
        while (undo[nu])
                nu++;
        k = MAX(na, nu);
        for (size_t i = 0; i < k; i++) {
                struct step *s = plan_add(p, &step_command, target, k - 1 - i < nu ? undo[k - 1 - i] : "",
                                          i < na ? apply[i] : "");
                if (skip)
                        plan_skip(s, skip);
        }
}

void plan_before_desktop(const struct config *cfg, const char *vm, const struct desktop_state *d,
                         struct plan *p) {
        if (cfg->user)
                add_commands(p, "before_stop", cfg->before_stop, cfg->after_start, d->user_units_skip);
}

void plan_after_desktop(const struct config *cfg, const char *vm, const struct desktop_state *d,
                        bool all, struct plan *p) {
        const struct vm_config *v = config_vm(cfg, vm);
        char unit[STEP_FIELD_LEN];

        if (cfg->user)
                add_commands(p, "after_start", cfg->after_start, cfg->before_stop, d->user_units_skip);
        for (size_t i = 0; cfg->user && v && v->user_units[i]; i++) {
                struct step *s = plan_add(p, &step_user_unit, v->user_units[i], "inactive", "active");
                if (d->user_units_skip)
                        plan_skip(s, d->user_units_skip);
                else if (d->vm_unit_active[i] && !all)
                        plan_skip(s, "already active");
        }
        /* Last: from the moment the VM has the GPU to the first step of the hand-back, the host
         * does not suspend. Last also keeps the numbers of every other step as they were. */
        if (cfg->inhibit_sleep) {
                plan_inhibit_unit(vm, unit, sizeof(unit));
                struct step *s = plan_add(p, &step_inhibit, unit, "", "sleep:idle");
                if (d->inhibit_skip)
                        plan_skip(s, d->inhibit_skip);
        }
}

void plan_vtcons_back(struct plan *p, size_t first, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char name[STEP_FIELD_LEN];      /* plan_add moves the steps */
                strscpy(name, p->steps[first + i].target, sizeof(name));
                plan_add(p, &step_vtcon, name, "0", "1");
        }
}

/* Huge pages first: when memory is short, nothing else has changed yet. The hand-back writes
 * back the persistent count (nr_hugepages counts the surplus pages too: written back, they would
 * stay). The pages free for the VM are those free and not reserved; a write of nr_hugepages
 * makes the surplus pages persistent before it allocates any: the count to write is all the
 * pages of the pool and those missing. */
long plan_hugepages_missing(const struct vm_config *v, const struct huge_pool *pool, long *want) {
        *want = (long) ((v->hugepages_kb + pool->page_kb - 1) / pool->page_kb);
        return *want - (pool->free - pool->resv);
}

static void plan_hugepages(const struct vm_config *v, const struct host *h, struct plan *p) {
        char name[64], from[32], to[32];
        unsigned long kb = h->huge.page_kb;
        struct step *s;
        long want;

        if (!v || !v->hugepages_kb || !kb)
                return;
        long missing = plan_hugepages_missing(v, &h->huge, &want), usable = want - missing,
             persistent = h->huge.nr - h->huge.surplus;
        snprintf(name, sizeof(name), "hugepages-%lukB", kb);
        snprintf(from, sizeof(from), "%ld", persistent);
        snprintf(to, sizeof(to), "%ld", missing > 0 ? h->huge.nr + missing : persistent);
        s = plan_add(p, &step_hugepages, name, from, to);
        snprintf(s->data.huge.want, sizeof(s->data.huge.want), "%ld", want);
        snprintf(s->data.huge.free, sizeof(s->data.huge.free), "%ld", usable);
        if (missing <= 0)
                plan_skip(s, "free already");
}

static void plan_governors(const struct vm_config *v, const struct host *h, struct plan *p) {
        for (size_t i = 0; v && v->cpu_governor && i < h->n_cpus; i++) {
                const struct cpu_freq *cpu = &h->cpus[i];
                char name[32];
                struct step *s;

                snprintf(name, sizeof(name), "cpu%u", cpu->cpu);
                s = plan_add(p, &step_governor, name, cpu->governor, v->cpu_governor);
                if (!cpu->online)
                        plan_skip(s, "offline");
                else if (!cpu->cpufreq)
                        plan_skip(s, "no cpufreq: the kernel does not scale its frequency");
                else if (strcmp(cpu->governor, v->cpu_governor) == 0)
                        plan_skip(s, "set already");
        }
}

/* Why module m stays loaded while the VM has the GPU ([gpu] unload_driver), in buf, or NULL: it can
 * go. Built in, or without a file to load it back from, it must stay; so must one that drives a
 * device besides the GPU (its exit would unbind it), one whose driver the secondary GPU is about to
 * get, and one a staying module uses. */
static const char *module_stays(const struct host *h, const struct kmodule *m, const struct plan *p, char *buf,
                                size_t size) {
        bool secondary = false;

        if (m->builtin)
                return "built into the kernel";
        if (!m->loadable)
                return "no file to load it back from (not in this kernel's modules.dep)";
        if (m->others[0]) {
                snprintf(buf, size, "it also drives %.100s", m->others);
                return buf;
        }
        for (size_t i = 0; i < h->n_secondary; i++)
                secondary = secondary || plan_is_display(&h->secondary[i]);
        if (secondary && host_word_in(m->drivers, h->secondary_driver)) {
                snprintf(buf, size, "its driver %s is the secondary GPU's display driver", h->secondary_driver);
                return buf;
        }
        for (size_t i = 0; i < p->n_steps; i++) {
                const struct step *s = &p->steps[i];

                if (s->kind == &step_module && s->state == STEP_SKIPPED && host_word_in(m->holders, s->target)) {
                        snprintf(buf, size, "module %.64s, which stays, uses it", s->target);
                        return buf;
                }
        }
        return NULL;
}

void plan_modules(const struct config *cfg, const struct host *h, struct plan *p) {
        for (size_t i = 0; cfg->unload_driver && i < h->n_modules; i++) {
                const struct kmodule *m = &h->modules[i];
                char why[STEP_FIELD_LEN];
                const char *stays = module_stays(h, m, p, why, sizeof(why));
                struct step *s = plan_add(p, &step_module, m->name, "loaded", "unloaded");

                if (stays)
                        plan_skip(s, stays);
                else if (m->drivers[0])
                        snprintf(s->note, sizeof(s->note), "driver %.40s of %.60s; refcount %d", m->drivers,
                                 m->devices[0] ? m->devices : "no device", m->refcnt);
                else
                        snprintf(s->note, sizeof(s->note), "refcount %d", m->refcnt);
        }
}

/* What the [vm] section asks of the host that it cannot give: refused before anything is done. */
static int check_tuning(const struct config *cfg, const char *vm, const struct host *h, char *error, size_t size) {
        const struct vm_config *v = config_vm(cfg, vm);

        if (v && v->hugepages_kb && !h->huge.page_kb) {
                snprintf(error, size, "[vm %s] hugepages: the kernel has no %lu kB huge pages (no /sys/kernel/mm/"
                         "hugepages/hugepages-%lukB; 1G pages need a CPU with pdpe1gb)", vm, h->huge.asked_kb,
                         h->huge.asked_kb);
                return -EOPNOTSUPP;
        }
        for (size_t i = 0; v && v->cpu_governor && i < h->n_cpus; i++) {
                const struct cpu_freq *cpu = &h->cpus[i];

                if (cpu->online && cpu->cpufreq && !host_word_in(cpu->available, v->cpu_governor)) {
                        snprintf(error, size, "[vm %s] cpu_governor = %s: CPU %u offers only %s "
                                 "(scaling_available_governors)", vm, v->cpu_governor, cpu->cpu,
                                 cpu->available[0] ? cpu->available : "none");
                        return -EINVAL;
                }
        }
        return 0;
}

/* [gpu] reset_method for f: into to the list to set, "" to leave it alone (*why says why, for a
 * skipped step, or NULL: no step at all). -EINVAL, with error, for a method the kernel would
 * refuse: found before the first step. The kernel lists the methods it probed when it added the
 * device; vendor-reset hooks the device-specific reset later (ftrace on pci_dev_specific_reset), so
 * device_specific never shows in that list and is accepted once vendor-reset is loaded, for the
 * devices of its table. Whether a write would be accepted cannot be learnt without writing: the
 * module being loaded (/sys/module/vendor_reset) and the device in its table stand for it, and the
 * write's own verdict still decides at the step. Only the display functions: the GPU's reset is the
 * one that matters (and the one vendor-reset knows). */
static int reset_target(const struct config *cfg, const struct host *h, const struct pci_func *f, char *to,
                        size_t size, const char **why, char *error, size_t esize) {
        bool vendor_reset = h->vendor_reset && host_vendor_reset_supports(f->vendor, f->device);
        char list[STEP_FIELD_LEN], *save = NULL;

        to[0] = '\0';
        *why = NULL;
        if (!cfg->reset_method || !plan_is_display(f))
                return 0;
        if (strcmp(cfg->reset_method, "auto") == 0) {
                if (!vendor_reset)
                        *why = !h->vendor_reset ? "auto: vendor-reset is not loaded" :
                               "auto: vendor-reset has no reset for this device";
                else if (!f->has_reset_method)
                        *why = "auto: the kernel shows no reset_method for it";
                else
                        strscpy(to, "device_specific", size);
                return 0;
        }
        if (!f->has_reset_method) {
                snprintf(error, esize, "[gpu] reset_method = %s: %s has no reset_method (the kernel found no reset "
                         "method for it)", cfg->reset_method, f->name);
                return -EINVAL;
        }
        strscpy(list, cfg->reset_method, sizeof(list));
        for (char *m = strtok_r(list, " ", &save); m; m = strtok_r(NULL, " ", &save)) {
                bool found = strcmp(m, "device_specific") == 0 && vendor_reset;
                char now[NAME_LEN], *save2 = NULL;

                strscpy(now, f->reset_method, sizeof(now));
                for (char *w = strtok_r(now, " ", &save2); w && !found; w = strtok_r(NULL, " ", &save2))
                        found = strcmp(w, m) == 0;
                if (!found) {
                        snprintf(error, esize, "[gpu] reset_method = %s: %s does not support %s (its methods: %s%s)",
                                 cfg->reset_method, f->name, m, f->reset_method[0] ? f->reset_method : "none enabled",
                                 strcmp(m, "device_specific") == 0 ? "; device_specific needs vendor-reset loaded, "
                                 "with a reset for this device" : "");
                        return -EINVAL;
                }
        }
        if (strcmp(cfg->reset_method, f->reset_method) == 0)
                *why = "already set";
        else
                strscpy(to, cfg->reset_method, size);
        return 0;
}

void plan_bar_sizes_supported(uint64_t mask, char *buf, size_t size) {
        size_t len = strlen(buf);

        for (unsigned n = 0; n < 64; n++) {
                char a[16], b[16];
                unsigned last = n;

                if (!(mask & (1ULL << n)))
                        continue;
                while (last + 1 < 64 && (mask & (1ULL << (last + 1))))
                        last++;
                bar_size_format(n, a, sizeof(a));
                bar_size_format(last, b, sizeof(b));
                if (len < size)
                        len += (size_t) (last > n ? snprintf(buf + len, size - len, " %s-%s", a, b) :
                                         snprintf(buf + len, size - len, " %s", a));
                n = last;
        }
}

/* [vm NAME] bar_sizes for the display function f: from (the sizes now), to, supported (for people),
 * and whether any BAR changes. -EINVAL, with error, for a BAR that is not resizable, a size it does
 * not support, or a size now that could not be set back. */
static int bars_target(const char *vm, const struct bar_sizes *b, const struct pci_func *f, char *from,
                       char *to, char *supported, bool *change, char *error, size_t esize) {
        from[0] = to[0] = supported[0] = '\0';
        *change = false;
        for (size_t i = 0; i < b->n; i++) {
                unsigned index = b->bar[i].index, order = b->bar[i].order, now;
                uint64_t bytes = f->bar_bytes[index], mask = f->bar_supported[index];
                char want[16], was[16];

                bar_size_format(order, want, sizeof(want));
                if (!mask) {
                        snprintf(error, esize, "[vm %s] bar_sizes: BAR %u of %s is not resizable (no resource%u_resize)",
                                 vm, index, f->name, index);
                        return -EINVAL;
                }
                if (!(mask & (1ULL << order))) {
                        char list[STEP_FIELD_LEN] = "";
                        plan_bar_sizes_supported(mask, list, sizeof(list));
                        snprintf(error, esize, "[vm %s] bar_sizes: BAR %u of %s cannot be %s (it supports%s)", vm,
                                 index, f->name, want, list);
                        return -EINVAL;
                }
                if (bytes < (1ULL << 20) || (bytes & (bytes - 1))) {
                        snprintf(error, esize, "[vm %s] bar_sizes: BAR %u of %s is %llu bytes now, not a size it could "
                                 "be set back to", vm, index, f->name, (unsigned long long) bytes);
                        return -EINVAL;
                }
                now = (unsigned) __builtin_ctzll(bytes) - 20;
                bar_size_format(now, was, sizeof(was));
                *change = *change || now != order;
                snprintf(from + strlen(from), STEP_FIELD_LEN - strlen(from), "%s%u:%s", i ? " " : "", index, was);
                snprintf(to + strlen(to), STEP_FIELD_LEN - strlen(to), "%s%u:%s", i ? " " : "", index, want);
                snprintf(supported + strlen(supported), STEP_FIELD_LEN - strlen(supported), "%sBAR %u", i ? ", " : "",
                         index);
                plan_bar_sizes_supported(mask, supported, STEP_FIELD_LEN);
        }
        return 0;
}

static const struct bar_sizes *plan_bar_sizes(const struct config *cfg, const char *vm) {
        const struct vm_config *v = config_vm(cfg, vm);
        return v && v->bar_sizes.n ? &v->bar_sizes : NULL;
}

int plan_check_pci_keys(const struct config *cfg, const char *vm, const struct host *h, char *error, size_t size) {
        const struct bar_sizes *bars = plan_bar_sizes(cfg, vm);

        for (size_t i = 0; i < h->n_gpu; i++) {
                char from[STEP_FIELD_LEN], to[STEP_FIELD_LEN], supported[STEP_FIELD_LEN];
                const char *why;
                bool change;
                int r;

                r = reset_target(cfg, h, &h->gpu[i], to, sizeof(to), &why, error, size);
                if (r >= 0 && bars && plan_is_display(&h->gpu[i]))
                        r = bars_target(vm, bars, &h->gpu[i], from, to, supported, &change, error, size);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The steps of a hand-over, in SPEC order. */
static void plan_steps(const struct config *cfg, const char *vm, const struct host *h,
                       const struct desktop_state *d, struct plan *p) {
        const char *cpus = plan_host_cpus(cfg, vm);
        size_t first_vtcon;
        struct step *s;

        /* 0. Huge pages for the VM, before anything else changes. */
        plan_hugepages(config_vm(cfg, vm), h, p);
        /* 0. The user's own preparations (a session saved). */
        plan_before_desktop(cfg, vm, d, p);
        /* 1-2. The display manager and the user's audio units. */
        size_t first_stop = p->n_steps;
        plan_desktop_stops(cfg, d, false, p);
        size_t n_stops = p->n_steps - first_stop;
        /* The services of the GPU's driver: stopped like the desktop, started again by the hand-back
         * once the GPU is back on their driver. */
        for (size_t i = 0; i < d->n_driver_units; i++) {
                s = plan_add(p, &step_unit, d->driver_units[i], "active", "inactive");
                if (!d->driver_unit_active[i])
                        plan_skip(s, "not active");
        }
        /* 3. fbcon keeps the GPU's framebuffer mapped until its vtconsole is unbound. */
        first_vtcon = p->n_steps;
        for (size_t i = 0; cfg->vtconsoles && i < h->n_vtcons; i++) {
                char name[32];
                const struct vtcon *v = &h->vtcons[i];

                if (!v->framebuffer || !v->bound)
                        continue;
                snprintf(name, sizeof(name), "vtcon%u", v->index);
                plan_add(p, &step_vtcon, name, "1", "0");
        }
        size_t n_vtcon = p->n_steps - first_vtcon;
        /* 4. The firmware framebuffer on the GPU holds its memory. */
        for (size_t i = 0; cfg->framebuffer && i < h->n_fbs; i++) {
                const struct pci_func *on = fb_on_gpu(&h->fbs[i], h);

                if (h->fbs[i].driver[0] && on)
                        strscpy(plan_add(p, &step_framebuffer, h->fbs[i].name, h->fbs[i].driver, "")->data.fb.on,
                                on->name, STEP_FIELD_LEN);
        }
        /* 5. Unbinding a driver from a device in use can hang the machine: wait until nobody holds
         * the GPU's nodes (the processes of steps 1 and 2 take a moment to exit). */
        for (size_t i = 0; i < h->n_gpu; i++)
                if (strcmp(h->gpu[i].driver, VFIO) != 0 && h->gpu[i].driver[0])
                        plan_add(p, &step_holders, h->gpu[i].name, h->gpu[i].driver, "");
        /* 6. Every function of the GPU to vfio-pci, each remembering its driver. The kernel resizes
         * the BARs of a function bound to no driver only: with bar_sizes, the display function goes
         * to no driver, is resized, then goes to vfio-pci; undone in reverse, the hand-back resizes
         * it back unbound too, before its driver gets it. */
        const struct bar_sizes *bars = plan_bar_sizes(cfg, vm);
        for (size_t i = 0; i < h->n_gpu; i++) {
                const struct pci_func *f = &h->gpu[i];
                char from[STEP_FIELD_LEN], to[STEP_FIELD_LEN], supported[STEP_FIELD_LEN], error[256];
                bool change = false;

                if (bars && plan_is_display(f) &&
                    bars_target(vm, bars, f, from, to, supported, &change, error, sizeof(error)) == 0 && change) {
                        s = add_move(p, f, f->driver, "");
                        if (!f->driver[0])
                                plan_skip(s, "bound to no driver");
                        s = plan_add(p, &step_bar_sizes, f->name, from, to);
                        strscpy(s->data.bar.supported, supported, sizeof(s->data.bar.supported));
                        plan_add(p, &step_pci_driver, f->name, "", VFIO);
                        continue;
                }
                if (bars && plan_is_display(f))
                        plan_skip(plan_add(p, &step_bar_sizes, f->name, from, to), "already at these sizes");
                s = add_move(p, f, f->driver, VFIO);
                if (strcmp(f->driver, VFIO) == 0)
                        plan_skip(s, "already on vfio-pci");
        }
        /* The GPU's reset methods, on vfio-pci (which resets it with them when a VM starts and stops). */
        for (size_t i = 0; i < h->n_gpu; i++) {
                const struct pci_func *f = &h->gpu[i];
                char to[STEP_FIELD_LEN], error[256];
                const char *why;

                if (reset_target(cfg, h, f, to, sizeof(to), &why, error, sizeof(error)) < 0 || (!to[0] && !why))
                        continue;
                s = plan_add(p, &step_reset_method, f->name, f->reset_method, to[0] ? to : cfg->reset_method);
                if (why)
                        plan_skip(s, why);
        }
        /* The modules of the GPU's drivers, now that no device of the GPU is on them. */
        plan_modules(cfg, h, p);
        /* 7. The secondary GPU's display function to its display driver. */
        for (size_t i = 0; i < h->n_secondary; i++) {
                const struct pci_func *f = &h->secondary[i];

                if (!plan_is_display(f))
                        continue;
                s = add_move(p, f, f->driver, h->secondary_driver);
                if (strcmp(f->driver, h->secondary_driver) == 0)
                        plan_skip(s, "already on its display driver");
        }
        /* 8. The consoles of step 3 come back, now on the secondary GPU. */
        plan_vtcons_back(p, first_vtcon, n_vtcon);
        /* 9. The CPUs' frequency governor, and host CPUs restricted while the VM runs. */
        plan_governors(config_vm(cfg, vm), h, p);
        for (size_t i = 0; cpus && i < ELEMENTSOF(plan_cpu_units); i++) {
                s = plan_add(p, &step_cpus, plan_cpu_units[i], d->cpus_now[i], cpus);
                if (strcmp(d->cpus_now[i], cpus) == 0)
                        plan_skip(s, "already set");
        }
        /* 10. The desktop again, now on the secondary GPU: the units of 2, the manager of 1. */
        plan_desktop_starts(p, first_stop, n_stops);
        /* 11. The user's after_start commands, the units this VM wants (its audio receiver), and no
         * suspend while it runs. */
        plan_after_desktop(cfg, vm, d, false, p);
}

static int check_group(const struct host *h, char *error, size_t size) {
        for (size_t i = 0; i < h->n_group; i++) {
                const struct pci_func *f = &h->group[i];

                if (!plan_group_blocks(f))
                        continue;
                snprintf(error, size,
                         "IOMMU group %d of the GPU also holds %s (%04x:%04x) on %s: it would have to go "
                         "to the VM too; bind it to vfio-pci or move the GPU to another slot",
                         f->iommu_group, f->name, f->vendor, f->device, f->driver[0] ? f->driver : "no driver");
                return -EBUSY;
        }
        return 0;
}

int plan_hand_over(const struct config *cfg, const char *vm, const struct host *h,
                   const struct desktop_state *d, struct plan *ret, char *error, size_t size) {
        struct plan p = {};
        bool all_vfio = true;
        int r;

        r = check_group(h, error, size);
        if (r < 0)
                return r;
        r = check_tuning(cfg, vm, h, error, size);
        if (r < 0)
                return r;
        /* An address typed wrong, or an example config left as it is, must not stop the desktop
         * for a VM that passes a USB controller sharing the slot's bus number. */
        bool display = false;
        for (size_t i = 0; i < h->n_gpu; i++)
                display = display || plan_is_display(&h->gpu[i]);
        if (h->n_gpu && !display) {
                snprintf(error, size, "%s is not a GPU (PCI class %06x, not a display controller): is [gpu] "
                         "address (or VIRSH_GPU_VIDEO) the GPU's?", h->gpu[0].name, h->gpu[0].class);
                return -ENODEV;
        }
        for (size_t i = 0; i < h->n_gpu; i++) {
                if (h->gpu[i].iommu_group < 0) {
                        snprintf(error, size, "%s has no IOMMU group: is the IOMMU on (amd_iommu=on or "
                                 "intel_iommu=on on the kernel command line)?", h->gpu[i].name);
                        return -ENODEV;
                }
                all_vfio = all_vfio && strcmp(h->gpu[i].driver, VFIO) == 0;
        }
        for (size_t i = 0; i < h->n_secondary; i++)
                if (plan_is_display(&h->secondary[i]) && !h->secondary_driver[0]) {
                        snprintf(error, size, "no display driver known for the secondary GPU %s: set "
                                 "driver in the [secondary] section of the config", h->secondary[i].name);
                        return -ENOENT;
                }

        strscpy(p.vm, vm, sizeof(p.vm));
        /* Both far below the field size: user names are short, bus paths fit a sockaddr_un. */
        strscpy(p.user, cfg->user ? cfg->user : "", sizeof(p.user));
        strscpy(p.user_bus, cfg->user_bus ? cfg->user_bus : "", sizeof(p.user_bus));
        if (all_vfio) {
                /* Handed over already (another VM has it, or by hand): like start.sh, touch nothing. */
                for (size_t i = 0; i < h->n_gpu; i++)
                        plan_skip(plan_add(&p, &step_pci_driver, h->gpu[i].name, VFIO, VFIO), "already on vfio-pci");
        } else {
                r = plan_check_pci_keys(cfg, vm, h, error, size);
                if (r < 0)
                        return r;
                plan_steps(cfg, vm, h, d, &p);
        }
        *ret = p;
        return 0;
}

void plan_carry(struct plan *p, struct plan *left) {
        size_t n = 0;

        for (size_t i = 0; i < left->n_steps; i++)
                n += in_place(&left->steps[i]);
        if (n) {
                p->steps = xreallocarray(p->steps, p->n_steps + n, sizeof(*p->steps));
                memmove(p->steps + n, p->steps, p->n_steps * sizeof(*p->steps));
                for (size_t i = 0, k = 0; i < left->n_steps; i++)
                        if (in_place(&left->steps[i])) {
                                p->steps[k] = left->steps[i];
                                /* Undone at the release like any step done: the hand-over that
                                 * follows neither redoes nor waits for it. */
                                p->steps[k++].state = STEP_DONE;
                        }
                p->n_steps += n;
        }
        plan_free(left);
}

void plan_free(struct plan *p) {
        free(p->steps);
        *p = (struct plan) {};
}

bool plan_settled(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++)
                if (in_place(&p->steps[i]))
                        return false;
        return true;
}

bool plan_handed_back(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++)
                if (p->steps[i].state == STEP_UNDONE)
                        return true;
        return false;
}

bool plan_complete(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++)
                if (p->steps[i].state != STEP_DONE && p->steps[i].state != STEP_SKIPPED)
                        return false;
        return true;
}

size_t plan_left(const struct plan *p, char *buf, size_t size) {
        size_t n = 0, len = 0;

        buf[0] = '\0';
        for (size_t i = p->n_steps; i-- > 0;) {
                char what[256];

                if (!in_place(&p->steps[i]))
                        continue;
                step_describe(&p->steps[i], true, what, sizeof(what));
                if (len < size)
                        len += (size_t) snprintf(buf + len, size - len, "%s%zu. %s", n ? "; " : "", i + 1, what);
                n++;
        }
        return n;
}

void plan_print(const struct plan *p, bool undo, FILE *f) {
        size_t n = 0;

        for (size_t k = 0; k < p->n_steps; k++) {
                const struct step *s = &p->steps[undo ? p->n_steps - 1 - k : k];
                char what[256];

                if (undo && !in_place(s))
                        continue;
                step_describe(s, undo, what, sizeof(what));
                if (s->state == STEP_SKIPPED)
                        fprintf(f, "%2zu. (skip) %s: %s\n", ++n, what, s->note);
                else
                        fprintf(f, "%2zu. %s\n", ++n, what);
        }
        if (n == 0)
                fprintf(f, "nothing to do\n");
}
