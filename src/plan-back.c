/* The hand-back without a journal (installed while the VM ran, /run wiped): the hand-over that
 * must have happened, derived from the config and the host as it is now, every step marked done,
 * so that undoing it in reverse is the hand-back of SPEC section 5. Pure, like plan.c. */
#include <stdio.h>
#include <string.h>

#include "plan.h"

int plan_derive_hand_back(const struct config *cfg, const char *vm, const struct host *h,
                          const struct desktop_state *d, struct plan *ret) {
        const char *cpus = plan_host_cpus(cfg, vm);
        struct plan p = {};
        bool handed_over = false;

        /* Our hand-over leaves driver_override=vfio-pci on the GPU: without it, nothing of ours
         * is in place and the hand-back must not restart anybody's desktop. */
        for (size_t i = 0; i < h->n_gpu; i++)
                handed_over = handed_over || (strcmp(h->gpu[i].driver, PLAN_VFIO) == 0 &&
                                              strcmp(h->gpu[i].driver_override, PLAN_VFIO) == 0);
        strscpy(p.vm, vm, sizeof(p.vm));
        if (!handed_over) {
                *ret = p;
                return 0;
        }
        plan_before_desktop(cfg, vm, d, &p);
        /* Every unit, active or not: they were stopped, and the undo starts them. */
        size_t first_stop = p.n_steps;
        plan_desktop_stops(cfg, d, true, &p);
        size_t n_stops = p.n_steps - first_stop;
        /* fbcon's console, bound or not now: the undo rebinds it when it is there. */
        size_t first_vtcon = p.n_steps;
        for (size_t i = 0; cfg->vtconsoles && i < h->n_vtcons; i++) {
                char name[32];

                if (!h->vtcons[i].framebuffer)
                        continue;
                snprintf(name, sizeof(name), "vtcon%u", h->vtcons[i].index);
                plan_add(&p, &step_vtcon, name, "1", "0");
        }
        size_t n_vtcon = p.n_steps - first_vtcon;
        /* No boot framebuffer (gone with the GPU's driver, never rebound over it) and no holders
         * step: the moves back check the holders themselves. Each function that is ours goes
         * back to whatever the kernel binds without an override ("*"). */
        for (size_t i = 0; i < h->n_gpu; i++)
                if (strcmp(h->gpu[i].driver, PLAN_VFIO) == 0 && strcmp(h->gpu[i].driver_override, PLAN_VFIO) == 0)
                        plan_add(&p, &step_pci_driver, h->gpu[i].name, "*", PLAN_VFIO);
        /* The reset methods [gpu] reset_method set: what they were is in the journal only; the undo
         * writes "default", the kernel's own choice (what it probes now: device_specific first while
         * vendor-reset is loaded). The BAR sizes bar_sizes set are left: what they were is not
         * known, and the GPU's driver sizes them itself when it binds (amdgpu resizes BAR 0). */
        for (size_t i = 0; cfg->reset_method && i < h->n_gpu; i++) {
                const struct pci_func *f = &h->gpu[i];

                if (plan_is_display(f) && f->has_reset_method && strcmp(f->driver, PLAN_VFIO) == 0 &&
                    strcmp(f->driver_override, PLAN_VFIO) == 0)
                        plan_add(&p, &step_reset_method, f->name, "default", f->reset_method);
        }
        /* The secondary GPU back to where the config parks it, if it is on its display driver. */
        for (size_t i = 0; i < h->n_secondary; i++) {
                const struct pci_func *f = &h->secondary[i];

                if (!plan_is_display(f))
                        continue;
                struct step *s = plan_add(&p, &step_pci_driver, f->name, cfg->park_driver ? cfg->park_driver :
                                          f->driver, h->secondary_driver);
                if (strcmp(f->driver, h->secondary_driver) != 0)
                        plan_skip(s, "not on its display driver");
        }
        plan_vtcons_back(&p, first_vtcon, n_vtcon);
        /* AllowedCPUs back to unset: what they were before is not known, and unset is systemd's
         * default (every CPU, and CPUs brought online later too, which a full list would not). */
        for (size_t i = 0; cpus && i < ELEMENTSOF(plan_cpu_units); i++)
                plan_add(&p, &step_cpus, plan_cpu_units[i], "", cpus);
        plan_desktop_starts(&p, first_stop, n_stops);
        plan_after_desktop(cfg, vm, d, true, &p);
        for (size_t i = 0; i < p.n_steps; i++)
                if (p.steps[i].state == STEP_PLANNED)
                        p.steps[i].state = STEP_DONE;
        *ret = p;
        return 0;
}
