/* A read-only snapshot of what the hand-over touches, taken with libudev and sysfs reads. */
#pragma once
#include <stdbool.h>
#include <sys/types.h>
#include "util.h"

#define NAME_LEN 64

struct pci_func {
        struct pci_addr addr;
        char name[PCI_ADDR_LEN];                /* "0000:0d:00.0" */
        char driver[NAME_LEN];                  /* "" when unbound */
        char driver_override[NAME_LEN];         /* "" when unset */
        unsigned vendor, device, class;
        int iommu_group;                        /* -1 without IOMMU */
        bool boot_vga;
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
};

/* Fills *ret with the functions of the slots of gpu[] and secondary[], the IOMMU group members,
 * the vtconsoles and the boot framebuffers. A configured slot with no function is -ENODEV
 * (logged, naming the address). */
int host_snapshot(const struct pci_addr *gpu, size_t n_gpu, const struct pci_addr *secondary,
                  size_t n_secondary, struct host *ret);
void host_free(struct host *h);

/* Reads one function's driver and driver_override now ("" when none). */
int host_read_func(const char *name, struct pci_func *ret);

/* The device nodes (/dev/dri/..., /dev/snd/...) of a PCI function's DRM and sound children.
 * Returns the number found (up to max), each a malloc'd string, or a negative errno. */
int host_func_nodes(const char *func, char **nodes, size_t max);

/* Whether the function has a DRM card (cardN) child, and udev has seen it if udevd runs. */
int host_func_has_drm_card(const char *func);

/* Processes holding any of nodes open: writes "PID (comm)" entries into buf, comma-separated;
 * returns how many. */
int host_node_holders(char **nodes, size_t n_nodes, char *buf, size_t size);

/* The driver the kernel's module aliases (libkmod, modules.alias) give for the function,
 * vfio-pci and pci-stub excepted: the display driver of a parked secondary GPU. */
int host_default_driver(const struct pci_func *f, char *buf, size_t size);

/* Loads the module of a PCI driver that is not registered yet (libkmod). */
int host_load_driver(const char *driver);

/* Waits until no process holds the DRM or sound nodes of the function. On -ETIMEDOUT, holders
 * names them ("PID (comm), ..."). */
int host_wait_unused(const char *func, usec_t deadline, char *holders, size_t size);

/* Whether a PCI driver is registered, or can be loaded (libkmod); 1 loaded, 0 loadable, <0 not. */
int host_pci_driver_available(const char *driver);
