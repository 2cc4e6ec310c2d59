/* The planner: a pure function from (config, host snapshot, direction) to an ordered list of
 * steps. No I/O: unit tests assert plans without touching anything. */
#pragma once
#include "config.h"
#include "host.h"
#include "step.h"

#define PLAN_DRIVER_UNITS 4
/* The system services that come with the host drivers of the GPU's functions and hold the GPU while
 * they run (NVIDIA's nvidia-persistenced and nvidia-powerd): into units, at most PLAN_DRIVER_UNITS;
 * returns how many. */
size_t plan_driver_units(const struct host *h, const char **units);

/* What the D-Bus side of the host looks like; filled by the caller (bus.c), so the planner stays
 * pure. */
struct desktop_state {
        char display_manager[NAME_LEN];         /* resolved unit, "" when none */
        bool display_manager_active;
        const char *display_manager_skip;       /* why the DM step is skipped, or NULL */
        const char *user_units_skip;            /* why the user-unit steps are skipped, or NULL */
        bool user_unit_active[CONFIG_MAX_UNITS];
        char cpus_now[3][STEP_FIELD_LEN];       /* AllowedCPUs of user.slice, system.slice, init.scope */
        char host_cpus[STEP_FIELD_LEN];         /* every CPU of the host, "0-11" */
        const char *inhibit_skip;               /* why the sleep inhibitor is skipped, or NULL */
        bool vm_unit_active[CONFIG_MAX_UNITS];  /* [vm NAME] user_units, as they are */
        /* The services of the GPU's drivers (plan_driver_units) that exist, and whether each runs. */
        char driver_units[PLAN_DRIVER_UNITS][NAME_LEN];
        bool driver_unit_active[PLAN_DRIVER_UNITS];
        size_t n_driver_units;
};

struct plan {
        char vm[256];
        /* The desktop user and their bus at the hand-over, journaled: the hand-back reaches the
         * same user's units whatever the config says by then, or without one. "": none. */
        char user[STEP_FIELD_LEN];
        char user_bus[STEP_FIELD_LEN];
        struct step *steps;
        size_t n_steps;
};

/* The hand-over (prepare begin). Returns 0, or a negative errno with *error describing what makes
 * the hand-over impossible (a device on a foreign driver in the GPU's IOMMU group, ...). */
int plan_hand_over(const struct config *cfg, const char *vm, const struct host *h,
                   const struct desktop_state *d, struct plan *ret, char *error, size_t size);
/* The hand-over that must have happened, derived from the config and the host as it is now, for a
 * hand-back without a journal: steps marked done whose undo is the hand-back. Empty when the GPU
 * is not on vfio-pci (nothing was handed over). */
int plan_derive_hand_back(const struct config *cfg, const char *vm, const struct host *h,
                          const struct desktop_state *d, struct plan *ret);
struct step *plan_add(struct plan *p, const struct step_kind *kind, const char *target,
                      const char *from, const char *to);

/* The pieces both planners (plan.c, plan-back.c) build with, so both lists come in one order. */
#define PLAN_VFIO "vfio-pci"
extern const char *const plan_cpu_units[3];     /* AllowedCPUs of these, in this order */
void plan_skip(struct step *s, const char *why);
bool plan_is_display(const struct pci_func *f);
/* Whether f, another member of the GPU's IOMMU group, keeps the group from going to a VM: anything
 * but a bridge or a function on vfio-pci. */
bool plan_group_blocks(const struct pci_func *f);
/* What [gpu] reset_method and vm's bar_sizes ask of the GPU's functions h shows: -EINVAL, with
 * error, for what the kernel would refuse (checked before the first step of a hand-over). */
int plan_check_pci_keys(const struct config *cfg, const char *vm, const struct host *h, char *error, size_t size);
/* Appends the sizes of a resourceN_resize mask to buf: " 256M-8G", " 256M 1G 8G". */
void plan_bar_sizes_supported(uint64_t mask, char *buf, size_t size);
/* [gpu] unload_driver: a step for each module of h->modules, in its order (those using one first),
 * skipped with the reason when it must stay loaded. */
void plan_modules(const struct config *cfg, const struct host *h, struct plan *p);
/* The huge pages of the pool v's hugepages needs (*want) beyond those free and not reserved now:
 * what the hand-over allocates (<= 0: none). The pool must exist (page_kb set). */
long plan_hugepages_missing(const struct vm_config *v, const struct huge_pool *pool, long *want);
/* The [vm] section's CPU list, else [host]'s; NULL: no restriction. */
const char *plan_host_cpus(const struct config *cfg, const char *vm);
/* Steps 1-2: the display manager's and the user units' stops; with all, active or not. */
void plan_desktop_stops(const struct config *cfg, const struct desktop_state *d, bool all, struct plan *p);
/* The sleep inhibitor's unit for vm: qemu-hook-inhibit-VM.service, the name escaped as systemd
 * does (a name too long for a step's field: its hash instead). */
void plan_inhibit_unit(const char *vm, char *buf, size_t size);
/* The first steps of a hand-over: the before_stop commands. */
void plan_before_desktop(const struct config *cfg, const char *vm, const struct desktop_state *d,
                         struct plan *p);
/* The last ones: the after_start commands, the VM's user units and the sleep inhibitor. */
void plan_after_desktop(const struct config *cfg, const char *vm, const struct desktop_state *d,
                        bool all, struct plan *p);
/* Step 10: a start for each stop among the n steps from first on (plan_desktop_stops'), in reverse. */
void plan_desktop_starts(struct plan *p, size_t first, size_t n);
/* Step 8: a bind for each of the n vtcon unbinds from index first on. */
void plan_vtcons_back(struct plan *p, size_t first, size_t n);
/* Puts the steps of left that are still in place (an earlier hand-over's, whose undo the kernel
 * refused) first in p, as done: undone last, at p's release. Frees left. */
void plan_carry(struct plan *p, struct plan *left);
void plan_free(struct plan *p);
/* Whether nothing of the plan is in place (no step done or started): nothing to undo. */
bool plan_settled(const struct plan *p);
/* Whether a hand-back (or a rollback) has undone any of it: what is still in place is left over. */
bool plan_handed_back(const struct plan *p);
/* Whether every step is done or skipped: the hand-over happened whole. */
bool plan_complete(const struct plan *p);
/* What an undo still has to do (the steps done or started), in undo order, each with its number:
 * "6. rebind ...; 3. move ..."; returns how many. */
size_t plan_left(const struct plan *p, char *buf, size_t size);
void plan_print(const struct plan *p, bool undo, FILE *f);
