/* A step is data: a kind, a target, the state found before acting (from) and the state to reach
 * (to). apply() takes the target from `from` to `to`; undo() takes it back. Each kind lives in its
 * own src/step-*.c; adding one is a new file and an entry in step_kinds[]. */
#pragma once
#include <stdbool.h>
#include "config.h"
#include "timing.h"
#include "util.h"

typedef struct sd_bus sd_bus;
struct scripts;

#define STEP_FIELD_LEN 128

enum step_state {
        STEP_PLANNED,           /* not started */
        STEP_SKIPPED,           /* nothing to do: already in place or not applicable (see note) */
        STEP_STARTED,           /* intent recorded, the outcome unknown: undo on recovery */
        STEP_DONE,
        STEP_UNDONE,
        STEP_FAILED,            /* apply failed; what it did is undone */
        _STEP_STATE_MAX,
};

struct step;

/* A key a step kind records in the journal besides target, from and to: a field of union
 * step_data, STEP_FIELD_LEN long, at offset in struct step. */
struct step_field {
        const char *key;
        size_t offset;
};

struct run_ctx {
        const struct config *cfg;
        const char *vm;
        usec_t timeout;         /* each wait's allowance */
        bool dry_run;
        const char *qemu_d;     /* where the hook scripts are (step-script.c) */
        const struct scripts *scripts;  /* found and checked, each run by its fd (step-script.c) */
        char *hook_args[4];     /* VM OPERATION SUB-OPERATION EXTRA, for the scripts */
        int xml_fd;             /* the domain XML, the scripts' stdin */
        usec_t script_timeout;  /* each script's allowance */
        sd_bus *system_bus;     /* opened on first use (bus.c) */
        sd_bus *user_bus;
        int lock;               /* the GPU lock's fd while held, else -1 (engine_lock) */
};

struct step_kind {
        const char *name;       /* journal identifier, e.g. "pci-driver" */
        int (*apply)(struct run_ctx *c, struct step *s);
        int (*undo)(struct run_ctx *c, struct step *s);
        /* What apply (or undo) does, in words, for the plan and the log. */
        void (*describe)(const struct step *s, bool undo, char *buf, size_t size);
        /* Where its whole time goes (timing.h): a kind that only waits on something else (systemd's
         * jobs, a script) says so here; the others account for their parts themselves. */
        bool time_whole;
        enum time_account time_account;
        const struct step_field *fields;        /* its own journal keys, {NULL}-terminated, or NULL */
        /* Runs without the GPU lock: a hook script may take long, or start another VM whose
         * hook waits for that lock. */
        bool unlocked;
        /* Its writes go through the kernel's lock of its target device (bind, unbind, a BAR's
         * resize): the undos of such steps on one device follow one another, so after one fails
         * or is left blocked, the ones before it on that device wait in the journal. */
        bool device_ordered;
        /* Waits up to the scripts' deadline ([host] script_timeout), not [host] timeout: what the
         * lock's holder announces counts that. */
        bool script_deadline;
};

struct step {
        const struct step_kind *kind;
        char target[STEP_FIELD_LEN];    /* a device, a unit, a slice */
        char from[STEP_FIELD_LEN];
        char to[STEP_FIELD_LEN];
        char note[STEP_FIELD_LEN];      /* why it is skipped, or what was found: for people only */
        union {                         /* what a kind records of its own (step_kind.fields) */
                struct {
                        char override[STEP_FIELD_LEN];  /* driver_override found before the move,
                                                         * put back by the undo ("": none) */
                } pci;
                struct {
                        char on[STEP_FIELD_LEN];        /* the PCI function it sits on */
                } fb;
                struct {
                        char want[STEP_FIELD_LEN];      /* pages the VM wants free */
                        char free[STEP_FIELD_LEN];      /* free_hugepages when planned */
                } huge;
                struct {
                        char supported[STEP_FIELD_LEN]; /* the sizes each BAR supports, for people */
                } bar;
        } data;
        enum step_state state;
        usec_t duration;
        int writer;                     /* a write of this step left blocked in the kernel: its
                                         * PID (sysfs_write_deadline), 0 when none */
};

extern const struct step_kind step_unit, step_user_unit, step_vtcon, step_framebuffer,
        step_holders, step_pci_driver, step_cpus, step_script, step_hugepages, step_governor, step_reset_method,
        step_bar_sizes, step_inhibit, step_command, step_module;
/* A BAR size of 1 MB << order as "256M", "8G" (step-bars.c; the form of its from and to). */
void bar_size_format(unsigned order, char *buf, size_t size);
const struct step_kind *step_kind_by_name(const char *name);
/* Before a hand-back undoes anything: waits (until the deadline) for the processes holding the
 * vfio nodes of a function it takes off vfio-pci to let go; -EBUSY, logged naming them, when a VM
 * still holds the GPU. */
int holders_check_hand_back(struct run_ctx *c, const struct step *steps, size_t n_steps);
const char *step_state_to_string(enum step_state s);
int step_state_from_string(const char *s);
void step_describe(const struct step *s, bool undo, char *buf, size_t size);
