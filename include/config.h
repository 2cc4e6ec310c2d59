/* kvm.conf, read with inih: the shell scripts' original KEY="value" format and a native INI format
 * with sections. See conf/kvm.conf for every key. */
#pragma once
#include <stdbool.h>
#include <stdio.h>
#include "util.h"

#define CONFIG_MAX_ADDRS 8
#define CONFIG_MAX_UNITS 16
#define CONFIG_MAX_COMMANDS 8
#define CONFIG_COMMAND_MAX_LEN 127     /* a step's field (step.h STEP_FIELD_LEN) holds it */
#define CONFIG_TIMEOUT_DEFAULT_MS 20000U
#define CONFIG_SCRIPT_TIMEOUT_DEFAULT_MS 60000U

/* PCI resizable BARs: BAR index to 1 MB << order, the kernel's resourceN_resize value. */
#define CONFIG_MAX_BARS 6
struct bar_sizes {
        struct { unsigned index, order; } bar[CONFIG_MAX_BARS];
        size_t n;
};

struct vm_config {
        char *name;
        int handle;             /* -1: decide from the domain XML, 0: never, 1: always */
        char *host_cpus;        /* NULL: the global value */
        unsigned timeout_ms;    /* 0: the global value */
        char *user_units[CONFIG_MAX_UNITS + 1]; /* the desktop user's units started while it runs */
        unsigned long hugepages_kb;     /* free as huge pages while it runs; 0: none */
        unsigned long hugepage_kb;      /* their size: 2048 or 1048576; 0: the default, 2048 */
        char *cpu_governor;     /* every CPU's scaling_governor while it runs; NULL: untouched */
        struct bar_sizes bar_sizes;     /* the GPU's BARs while this VM has it; n 0: left alone */
};

struct config {
        char *path;
        bool original;          /* VIRSH_* keys: the shell scripts' kvm.conf and their behaviour */
        struct pci_addr gpu[CONFIG_MAX_ADDRS];  /* each stands for every function of its slot */
        size_t n_gpu;
        struct pci_addr secondary[CONFIG_MAX_ADDRS];
        size_t n_secondary;
        char *secondary_driver; /* display driver of the secondary GPU; NULL: resolve from the host */
        char *reset_method;     /* the GPU's while handed over: "auto" or methods separated by one space;
                                 * NULL: left alone */
        bool unload_driver;     /* unload the modules of the GPU's host drivers while handed over */
        char *park_driver;      /* where the secondary GPU idles while the host has the big one */
        char *user;             /* the desktop user; NULL: none */
        char *user_bus;         /* that user's bus address; NULL: unix:path=/run/user/UID/bus */
        char *display_manager;  /* "auto" (display-manager.service), "none" or a unit name */
        char *user_units[CONFIG_MAX_UNITS + 1]; /* NULL-terminated */
        char *host_cpus;        /* CPU list for the host while a VM runs; NULL: no restriction */
        unsigned timeout_ms;    /* deadline of every wait */
        unsigned script_timeout_ms;     /* deadline of every hook script of qemu.d */
        bool vtconsoles;        /* unbind frame-buffer vtconsoles around the move */
        bool framebuffer;       /* unbind the boot framebuffer when it sits on the GPU */
        bool inhibit_sleep;     /* a logind sleep:idle inhibitor while a VM has the GPU */
        /* Commands run as the desktop user (words, no shell), before the display manager stops
         * and after it is back; NULL-terminated. */
        char *before_stop[CONFIG_MAX_COMMANDS + 1];
        char *after_start[CONFIG_MAX_COMMANDS + 1];
        struct vm_config *vms;
        size_t n_vms;
};

/* Loads path into *ret (defaults filled in first). On error logs one message naming the file, the
 * line and the key and what was expected, and returns a negative errno; *ret is then freed.
 * With check_owner, refuses (-EPERM) a file not owned by root or writable by group or others. */
int config_load(const char *path, bool check_owner, struct config *ret);
/* config_load's reader, on an open file (path: for messages and ret->path). */
int config_read(FILE *f, const char *path, struct config *ret);
void config_free(struct config *c);
/* Whether a is a function of the GPU (in the slot of one of its addresses). */
bool config_is_gpu(const struct config *c, const struct pci_addr *a);
#define CONFIG_HUGEPAGE_DEFAULT_KB 2048UL
/* The [vm NAME] section for vm, or NULL. */
const struct vm_config *config_vm(const struct config *c, const char *vm);
