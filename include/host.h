/* A read-only snapshot of what the hand-over touches, taken with libudev and sysfs reads. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "config.h"
#include "util.h"

#define NAME_LEN 64
#define PCI_BARS 6

struct kmodule;

struct pci_func {
        struct pci_addr addr;
        char name[PCI_ADDR_LEN];                /* "0000:0d:00.0" */
        char driver[NAME_LEN];                  /* "" when unbound */
        char driver_override[NAME_LEN];         /* "" when unset */
        unsigned vendor, device, class;
        int iommu_group;                        /* -1 without IOMMU */
        bool boot_vga;
        /* Read for the snapshot only (host_snapshot), not by host_read_func: */
        bool has_reset_method;                  /* the kernel shows reset_method (it found a method) */
        char reset_method[NAME_LEN];            /* its enabled methods, "bus" ("": all disabled) */
        uint64_t bar_supported[PCI_BARS];       /* resourceN_resize: bit n = 1 MB << n; 0: not resizable */
        uint64_t bar_bytes[PCI_BARS];           /* each BAR's size now (resource), 0 when unused */
};

struct vtcon {
        unsigned index;
        bool framebuffer;                       /* a frame-buffer console (fbcon) */
        bool bound;
};

struct boot_fb {
        char name[NAME_LEN];                    /* "efi-framebuffer.0" */
        char driver[NAME_LEN];                  /* "" when unbound */
        char parent[PCI_ADDR_LEN];              /* the PCI function it sits on, "" if unknown */
};

/* A pool of huge pages of one size (kernel/mm/hugepages/hugepages-SIZEkB). */
struct huge_pool {
        unsigned long page_kb;                  /* 0: the kernel has no pool of the size asked */
        unsigned long asked_kb;                 /* the size of the pool looked for */
        long nr, free;                          /* nr_hugepages (surplus included), free_hugepages */
        long surplus, resv;                     /* surplus_hugepages, resv_hugepages (counted in free) */
};

/* One CPU's frequency scaling (devices/system/cpu/cpuN/cpufreq). */
struct cpu_freq {
        unsigned cpu;
        bool online;
        bool cpufreq;                           /* a cpufreq driver scales it */
        char governor[NAME_LEN];                /* scaling_governor; "" when unreadable */
        char available[256];                    /* scaling_available_governors */
};

struct host {
        struct pci_func *gpu;                   /* every function of the configured GPU slots */
        size_t n_gpu;
        struct pci_func *secondary;
        size_t n_secondary;
        struct pci_func *group;                 /* the other members of the GPU's IOMMU groups */
        size_t n_group;
        struct vtcon *vtcons;
        size_t n_vtcons;
        struct boot_fb *fbs;
        size_t n_fbs;
        char secondary_driver[NAME_LEN];        /* display driver of the secondary GPU, resolved
                                                 * by the caller (config, else module aliases) */
        /* Read by host_tuning only when the VM's config asks for huge pages or a governor. */
        struct huge_pool huge;
        struct cpu_freq *cpus;
        size_t n_cpus;
        bool vendor_reset;                      /* the vendor_reset module is loaded */
        /* Read by host_modules (modules.h) only when the config asks to unload the GPU's driver. */
        struct kmodule *modules;
        size_t n_modules;
};

/* Whether vendor-reset (github.com/gnif/vendor-reset) has a reset for the device: the ids of its
 * device table (src/device-db.h). Pure. */
bool host_vendor_reset_supports(unsigned vendor, unsigned device);

/* Fills *ret with the functions of the slots of gpu[] and secondary[], the IOMMU group members,
 * the vtconsoles and the boot framebuffers. A configured slot with no function is -ENODEV
 * (logged, naming the address). */
int host_snapshot(const struct pci_addr *gpu, size_t n_gpu, const struct pci_addr *secondary,
                  size_t n_secondary, struct host *ret);
void host_free(struct host *h);
/* Adds to h what the [vm] section of vm asks to tune (tune.c): the huge page pool of its size,
 * every CPU's governor; nothing when it asks for neither. */
int host_tuning(const struct config *cfg, const char *vm, struct host *h);
/* Whether word is one of the space-separated words of list. */
bool host_word_in(const char *list, const char *word);

/* Fills h->secondary_driver: configured (the config's [secondary] driver) or, when NULL, the module
 * the aliases give for the secondary GPU's display function; as the driver it registers when that
 * module is loaded already ("" when none is known). */
void host_resolve_secondary_driver(struct host *h, const char *configured);

/* The size of BAR index of the function now (its line in `resource`), 0 when unused. */
int host_bar_bytes(const char *func, unsigned index, uint64_t *ret);

/* Reads one function's driver and driver_override now ("" when none). */
int host_read_func(const char *name, struct pci_func *ret);

/* A device node through which a process uses a PCI function: matched by number, named by path. */
struct func_node {
        dev_t devnum;
        char path[64];                          /* "/dev/vfio/17", for messages */
};

/* The nodes of a PCI function a process may hold: its DRM (card, render), sound (/dev/snd/...),
 * framebuffer (/dev/fbN) and vfio cdev (/dev/vfio/devices/vfioN) nodes; on vfio-pci its IOMMU
 * group's /dev/vfio/GROUP (never the container /dev/vfio/vfio, which every VM holds); on amdgpu
 * /dev/kfd, which all amdgpu devices share. Returns how many were found (up to max), or a negative
 * errno. */
int host_func_nodes(const char *func, struct func_node *nodes, size_t max);

/* Whether the function has a DRM card (cardN, not a connector) of its own, and udev has processed
 * it if udevd runs. */
int host_func_has_drm_card(const char *func);

/* Processes holding any of the nodes open (matched by device number through /proc/PID/fd, in any
 * mount namespace, deleted or not): writes "PID (comm, unit U) holding /dev/NODE" entries into buf,
 * comma-separated; returns how many. unreadable (if not NULL): how many processes' open files could
 * not be read (EACCES: another user's, to a caller that is not root); they are not in buf. */
int host_node_holders(const struct func_node *nodes, size_t n_nodes, char *buf, size_t size,
                      unsigned *unreadable);

/* The module the kernel's module aliases (libkmod, modules.alias) give for the function, vfio_pci
 * and pci_stub excepted: the display driver of a parked secondary GPU, as a module name (see
 * host_pci_driver). */
int host_default_driver(const struct pci_func *f, char *buf, size_t size);

/* Loads the module host_default_driver gives for the function if it is not loaded (as udev does at
 * boot for a device without a driver): before a move to "whatever the kernel binds" of a hand-back
 * without a journal, after [gpu] unload_driver unloaded it. Failures are logged as warnings. */
int host_load_default_driver(const char *func);
/* The PCI driver that name stands for: itself when registered, else the one the module of that
 * name registers (module bochs registers bochs-drm, vfio_pci vfio-pci: module names are not
 * driver names). With load, a module not loaded yet is loaded first (libkmod); without, that
 * is -ENOENT. */
int host_pci_driver(const char *name, bool load, char *buf, size_t size);

/* fbcon's vtconsole, found by its name: 1 and its name and binding, or 0 when fbcon has none
 * (no framebuffer). */
int host_find_fbcon(char *name, size_t size, bool *bound);

/* Waits until no process holds a node of the function (host_func_nodes). On -ETIMEDOUT, holders
 * names them ("PID (comm, unit U) holding /dev/NODE, ..."). */
int host_wait_unused(const char *func, usec_t deadline, char *holders, size_t size);

/* Whether a PCI driver is registered, or can be loaded (libkmod); 1 loaded, 0 loadable, <0 not. */
int host_pci_driver_available(const char *driver);
