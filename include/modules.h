/* The kernel modules of the GPU's host drivers, for [gpu] unload_driver: what the planner needs to
 * know of them (read with libkmod and sysfs), and their unload and load (step-module.c). */
#pragma once
#include <stdbool.h>
#include "host.h"
#include "util.h"

#define MODULE_LIST_LEN 128

struct kmodule {
        char name[NAME_LEN];                    /* "amdgpu", as /sys/module names it */
        bool builtin;                           /* part of the kernel image: cannot be unloaded */
        bool loadable;                          /* libkmod finds its file (modules.dep): it can come back */
        int refcnt;                             /* open files of its devices and the like, now */
        char drivers[MODULE_LIST_LEN];          /* the drivers it registers, "amdgpu" (space-separated) */
        char devices[MODULE_LIST_LEN];          /* the devices bound to them now */
        char others[MODULE_LIST_LEN];           /* of those, the ones that are not the GPU's */
        char holders[MODULE_LIST_LEN];          /* the modules using it (/sys/module/M/holders) */
};

/* Fills h->modules with the modules of the host drivers of the GPU's functions (vfio-pci's
 * excepted) and every module holding one of them, in the order they can be unloaded: each after
 * the modules holding it (nvidia_drm, nvidia_modeset, nvidia_uvm, nvidia). */
int host_modules(struct host *h);
/* Unloads the module: refused (-EBUSY, logged) while a device is bound to one of its drivers or a
 * module holds it; waits until deadline for its last users (open files) to let go. 0 when it is
 * not loaded. */
int module_unload(const char *name, usec_t deadline);
/* Loads the first module name stands for (a module name or alias, "vfio-pci") that loads, with its
 * dependencies, as module_load does; its name into loaded. Negative errno, not logged. */
int module_load_lookup(const char *name, char *loaded, size_t size);
/* Loads the module with its dependencies (libkmod, modules.dep and modprobe.d's options); 0 when it
 * is loaded already. Logs what failed. */
int module_load(const char *name);
