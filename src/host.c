#define _GNU_SOURCE     /* statx */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <libkmod.h>
#include <libudev.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <systemd/sd-login.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "modules.h"
#include "sysfs.h"

static void udev_unrefp(struct udev **u) { if (*u) udev_unref(*u); }
static void udev_enumerate_unrefp(struct udev_enumerate **e) { if (*e) udev_enumerate_unref(*e); }
static void udev_device_unrefp(struct udev_device **d) { if (*d) udev_device_unref(*d); }

static unsigned hex_attr(const char *func, const char *attr) {
        char path[PATH_MAX], buf[32];

        snprintf(path, sizeof(path), "bus/pci/devices/%s/%s", func, attr);
        return sysfs_read(path, buf, sizeof(buf)) < 0 ? 0 : (unsigned) strtoul(buf, NULL, 16);
}

int host_read_func(const char *name, struct pci_func *ret) {
        char path[PATH_MAX], buf[NAME_LEN];
        int r;

        memset(ret, 0, sizeof(*ret));
        r = pci_addr_parse(name, &ret->addr);
        if (r < 0)
                return r;
        pci_addr_format(&ret->addr, ret->name);
        snprintf(path, sizeof(path), "bus/pci/devices/%s", name);
        if (!sysfs_exists(path))
                return -ENODEV;

        snprintf(path, sizeof(path), "bus/pci/devices/%s/driver", name);
        r = sysfs_link_name(path, ret->driver, sizeof(ret->driver));
        if (r < 0 && r != -ENOENT)
                return r;
        /* Older kernels print an unset override as "(null)", newer ones as an empty line. */
        snprintf(path, sizeof(path), "bus/pci/devices/%s/driver_override", name);
        if (sysfs_read(path, buf, sizeof(buf)) == 0 && strcmp(buf, "(null)") != 0)
                strscpy(ret->driver_override, buf, sizeof(ret->driver_override));

        ret->vendor = hex_attr(name, "vendor");
        ret->device = hex_attr(name, "device");
        ret->class = hex_attr(name, "class");
        ret->boot_vga = hex_attr(name, "boot_vga") == 1;
        snprintf(path, sizeof(path), "bus/pci/devices/%s/iommu_group", name);
        ret->iommu_group = sysfs_link_name(path, buf, sizeof(buf)) < 0 ? -1 : atoi(buf);
        return 0;
}

/* The reset methods and the resizable BARs, for the snapshot: the plan's checks and --check. */
static void read_reset_and_bars(struct pci_func *f) {
        char path[PATH_MAX], buf[64];

        snprintf(path, sizeof(path), "bus/pci/devices/%s/reset_method", f->name);
        /* Visible only when the kernel found a method when it added the device (reset_method_attr_is_visible);
         * empty once a user disabled them all. */
        f->has_reset_method = sysfs_read(path, f->reset_method, sizeof(f->reset_method)) == 0;
        if (!f->has_reset_method)
                f->reset_method[0] = '\0';
        for (unsigned i = 0; i < PCI_BARS; i++) {
                /* Only with the Resizable BAR capability for this BAR: "%016llx", bit n = 1 MB << n. */
                snprintf(path, sizeof(path), "bus/pci/devices/%s/resource%u_resize", f->name, i);
                f->bar_supported[i] = sysfs_read(path, buf, sizeof(buf)) == 0 ? strtoull(buf, NULL, 16) : 0;
        }
        for (unsigned i = 0; i < PCI_BARS; i++)
                if (host_bar_bytes(f->name, i, &f->bar_bytes[i]) < 0)
                        break;
}

int host_bar_bytes(const char *func, unsigned index, uint64_t *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char path[PATH_MAX], line[128];
        unsigned long long start, end, flags;

        /* One "0xSTART 0xEND 0xFLAGS" line per resource, the BARs first. */
        snprintf(path, sizeof(path), SYSFS_ROOT "/bus/pci/devices/%s/resource", func);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        for (unsigned i = 0; i <= index; i++)
                if (!fgets(line, sizeof(line), f))
                        return -ENODATA;
        if (sscanf(line, "%llx %llx %llx", &start, &end, &flags) != 3)
                return -EIO;
        *ret = end > start ? end - start + 1 : 0;
        return 0;
}

bool host_vendor_reset_supports(unsigned vendor, unsigned device) {
        /* Polaris 10/11/12, Vega 10/20, Navi 10/12/14/23, Arcturus (vendor-reset's src/device-db.h). */
        static const uint16_t ids[] = {
                0x67c0, 0x67c1, 0x67c2, 0x67c4, 0x67c7, 0x67d0, 0x67df, 0x67c8, 0x67c9, 0x67ca, 0x67cc,
                0x67cf, 0x6fdf, 0x67e0, 0x67e3, 0x67e8, 0x67eb, 0x67ef, 0x67ff, 0x67e1, 0x67e7, 0x67e9,
                0x6980, 0x6981, 0x6985, 0x6986, 0x6987, 0x6995, 0x6997, 0x699f, 0x6860, 0x6861, 0x6862,
                0x6863, 0x6864, 0x6867, 0x6868, 0x6869, 0x686a, 0x686b, 0x686c, 0x686d, 0x686e, 0x686f,
                0x687f, 0x66a0, 0x66a1, 0x66a2, 0x66a3, 0x66a4, 0x66a7, 0x66af, 0x164c, 0x7310, 0x7312,
                0x7318, 0x7319, 0x731a, 0x731b, 0x731e, 0x731f, 0x15bf, 0x15dd, 0x15de, 0x15e7, 0x1636,
                0x1638, 0x7340, 0x7341, 0x7347, 0x734f, 0x7360, 0x7362, 0x73ff, 0x738c,
        };

        for (size_t i = 0; vendor == 0x1002 && i < ELEMENTSOF(ids); i++)
                if (ids[i] == device)
                        return true;
        return false;
}

/* Appends every PCI function of the slot of addr to *funcs. */
static int add_slot(struct udev *udev, const struct pci_addr *addr, struct pci_func **funcs,
                    size_t *n) {
        _cleanup_(udev_enumerate_unrefp) struct udev_enumerate *e = udev_enumerate_new(udev);
        struct udev_list_entry *entry;
        char want[PCI_ADDR_LEN], pattern[PCI_ADDR_LEN + 1];
        size_t found = 0;
        int r;

        pci_addr_format(addr, want);
        snprintf(pattern, sizeof(pattern), "%.10s*", want);    /* "0000:0d:00.*" */
        if (!e || udev_enumerate_add_match_subsystem(e, "pci") < 0 ||
            udev_enumerate_add_match_sysname(e, pattern) < 0 || udev_enumerate_scan_devices(e) < 0)
                return log_error_errno(ENOMEM, "reading the host: listing its PCI devices: %m");
        udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e)) {
                const char *syspath = udev_list_entry_get_name(entry);
                const char *name = strrchr(syspath, '/') + 1;

                *funcs = xreallocarray(*funcs, *n + 1, sizeof(**funcs));
                r = host_read_func(name, &(*funcs)[*n]);
                if (r < 0)
                        return log_error_errno(r, "reading the host: PCI device %s: %m", name);
                read_reset_and_bars(&(*funcs)[*n]);
                (*n)++;
                found++;
        }
        if (found == 0)
                return log_error_errno(ENODEV, "PCI device %s does not exist (no function in its slot)", want);
        return 0;
}

static bool has_func(const struct pci_func *funcs, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(funcs[i].name, name) == 0)
                        return true;
        return false;
}

static int add_group(int group, struct host *h) {
        _cleanup_(closedirp) DIR *d = NULL;
        char path[PATH_MAX];
        struct dirent *de;
        int r;

        snprintf(path, sizeof(path), SYSFS_ROOT "/kernel/iommu_groups/%d/devices", group);
        d = opendir(path);
        if (!d)
                return log_error_errno(errno, "reading the host: listing IOMMU group %d: %m", group);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || has_func(h->gpu, h->n_gpu, de->d_name) ||
                    has_func(h->group, h->n_group, de->d_name))
                        continue;
                h->group = xreallocarray(h->group, h->n_group + 1, sizeof(*h->group));
                r = host_read_func(de->d_name, &h->group[h->n_group]);
                if (r < 0)
                        return log_error_errno(r, "reading the host: %s of IOMMU group %d: %m", de->d_name, group);
                h->n_group++;
        }
        return 0;
}

/* fbcon registers as "(M) frame buffer device"; the dummy console as "(S) dummy device". */
static bool is_fbcon(const char *vtcon) {
        char path[PATH_MAX], name[128];

        snprintf(path, sizeof(path), "class/vtconsole/%s/name", vtcon);
        return sysfs_read(path, name, sizeof(name)) == 0 && strstr(name, "frame buffer");
}

static int add_vtcons(struct udev *udev, struct host *h) {
        _cleanup_(udev_enumerate_unrefp) struct udev_enumerate *e = udev_enumerate_new(udev);
        struct udev_list_entry *entry;

        if (!e || udev_enumerate_add_match_subsystem(e, "vtconsole") < 0 || udev_enumerate_scan_devices(e) < 0)
                return log_error_errno(ENOMEM, "reading the host: listing the vtconsoles: %m");
        udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e)) {
                const char *name = strrchr(udev_list_entry_get_name(entry), '/') + 1;
                char path[PATH_MAX], buf[128];
                struct vtcon v = {};

                if (sscanf(name, "vtcon%u", &v.index) != 1)
                        continue;
                v.framebuffer = is_fbcon(name);
                snprintf(path, sizeof(path), "class/vtconsole/%s/bind", name);
                v.bound = sysfs_read(path, buf, sizeof(buf)) == 0 && strcmp(buf, "1") == 0;
                h->vtcons = xreallocarray(h->vtcons, h->n_vtcons + 1, sizeof(*h->vtcons));
                h->vtcons[h->n_vtcons++] = v;
        }
        return 0;
}

static int add_fbs(struct udev *udev, struct host *h) {
        _cleanup_(udev_enumerate_unrefp) struct udev_enumerate *e = udev_enumerate_new(udev);
        struct udev_list_entry *entry;

        if (!e || udev_enumerate_add_match_subsystem(e, "platform") < 0 ||
            udev_enumerate_add_match_sysname(e, "efi-framebuffer.*") < 0 ||
            udev_enumerate_add_match_sysname(e, "simple-framebuffer.*") < 0 ||
            udev_enumerate_scan_devices(e) < 0)
                return log_error_errno(ENOMEM, "reading the host: listing the framebuffers: %m");
        udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e)) {
                _cleanup_(udev_device_unrefp) struct udev_device *dev =
                        udev_device_new_from_syspath(udev, udev_list_entry_get_name(entry));
                struct boot_fb fb = {};

                if (!dev)
                        continue;
                strscpy(fb.name, udev_device_get_sysname(dev), sizeof(fb.name));
                if (udev_device_get_driver(dev))
                        strscpy(fb.driver, udev_device_get_driver(dev), sizeof(fb.driver));
                /* Since Linux 6.3 sysfb makes the PCI device whose BAR holds the framebuffer the
                 * platform device's parent; older kernels leave it under /devices/platform. */
                struct udev_device *parent = udev_device_get_parent_with_subsystem_devtype(dev, "pci", NULL);
                if (parent)
                        strscpy(fb.parent, udev_device_get_sysname(parent), sizeof(fb.parent));
                h->fbs = xreallocarray(h->fbs, h->n_fbs + 1, sizeof(*h->fbs));
                h->fbs[h->n_fbs++] = fb;
        }
        return 0;
}

int host_snapshot(const struct pci_addr *gpu, size_t n_gpu, const struct pci_addr *secondary,
                  size_t n_secondary, struct host *ret) {
        _cleanup_(udev_unrefp) struct udev *udev = udev_new();
        struct host h = {};
        int r = 0;

        if (!udev)
                return log_error_errno(ENOMEM, "reading the host: creating a udev context: %m");
        for (size_t i = 0; i < n_gpu && r >= 0; i++)
                if (!has_func(h.gpu, h.n_gpu, pci_addr_format(&gpu[i], (char[PCI_ADDR_LEN]){})))
                        r = add_slot(udev, &gpu[i], &h.gpu, &h.n_gpu);
        for (size_t i = 0; i < n_secondary && r >= 0; i++)
                if (!has_func(h.secondary, h.n_secondary, pci_addr_format(&secondary[i], (char[PCI_ADDR_LEN]){})))
                        r = add_slot(udev, &secondary[i], &h.secondary, &h.n_secondary);
        for (size_t i = 0; i < h.n_gpu && r >= 0; i++) {
                bool seen = false;
                for (size_t j = 0; j < i; j++)
                        seen = seen || h.gpu[j].iommu_group == h.gpu[i].iommu_group;
                if (!seen && h.gpu[i].iommu_group >= 0)
                        r = add_group(h.gpu[i].iommu_group, &h);
        }
        if (r >= 0)
                r = add_vtcons(udev, &h);
        if (r >= 0)
                r = add_fbs(udev, &h);
        h.vendor_reset = sysfs_exists("module/vendor_reset");
        if (r < 0) {
                host_free(&h);
                return r;
        }
        *ret = h;
        return 0;
}

void host_free(struct host *h) {
        free(h->gpu);
        free(h->secondary);
        free(h->group);
        free(h->vtcons);
        free(h->fbs);
        free(h->cpus);
        free(h->modules);
        *h = (struct host) {};
}

/* Calls fn for every child of the PCI function in subsystem ("drm", "sound"). */
static int foreach_child(const char *func, const char *subsystem,
                         int (*fn)(struct udev_device *child, void *data), void *data) {
        _cleanup_(udev_unrefp) struct udev *udev = udev_new();
        _cleanup_(udev_device_unrefp) struct udev_device *parent = NULL;
        _cleanup_(udev_enumerate_unrefp) struct udev_enumerate *e = NULL;
        struct udev_list_entry *entry;
        char syspath[PATH_MAX];
        int r;

        snprintf(syspath, sizeof(syspath), SYSFS_ROOT "/bus/pci/devices/%s", func);
        if (!udev || !(parent = udev_device_new_from_syspath(udev, syspath)))
                return -ENODEV;
        e = udev_enumerate_new(udev);
        if (!e || udev_enumerate_add_match_parent(e, parent) < 0 ||
            udev_enumerate_add_match_subsystem(e, subsystem) < 0 || udev_enumerate_scan_devices(e) < 0)
                return -ENOMEM;
        udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e)) {
                _cleanup_(udev_device_unrefp) struct udev_device *child =
                        udev_device_new_from_syspath(udev, udev_list_entry_get_name(entry));
                if (child && (r = fn(child, data)) != 0)
                        return r;
        }
        return 0;
}

struct node_list {
        struct func_node *nodes;
        size_t n, max;
};

static void add_devnum(struct node_list *l, dev_t devnum, const char *path) {
        if (major(devnum) == 0 || l->n >= l->max)
                return;
        for (size_t i = 0; i < l->n; i++)
                if (l->nodes[i].devnum == devnum)
                        return;
        l->nodes[l->n] = (struct func_node) { .devnum = devnum };
        /* Only for the message: a name too long for it is cut, the number is what counts. */
        snprintf(l->nodes[l->n].path, sizeof(l->nodes[l->n].path), "%s", path ? path : "?");
        l->n++;
}

static void add_node(struct node_list *l, struct udev_device *dev) {
        add_devnum(l, udev_device_get_devnum(dev), udev_device_get_devnode(dev));
}

static int add_child_node(struct udev_device *child, void *data) {
        add_node(data, child);
        return 0;
}

/* A node the kernel makes no class device for (NVIDIA's, made by nvidia-modprobe or udev rules
 * with mknod): by its path. Absent is fine. */
static void add_dev_node(struct node_list *l, const char *path) {
        struct stat st;

        if (stat(path, &st) == 0 && S_ISCHR(st.st_mode))
                add_devnum(l, st.st_rdev, path);
}

/* The GPU's own node, /dev/nvidiaN: N is the "Device Minor" of the driver's procfs file for it.
 * Without that file, every /dev/nvidiaN: one held for another NVIDIA GPU then holds this one up,
 * which is slow but safe, where missing a holder would leave the unbind waiting in the kernel. */
static void add_nvidia_nodes(struct node_list *l, const char *func) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        char path[PATH_MAX], line[256];
        unsigned minor;
        struct dirent *de;

        /* Every NVIDIA GPU's: the control node, modesetting, CUDA's unified memory. */
        static const char *const shared[] = { "/dev/nvidiactl", "/dev/nvidia-modeset", "/dev/nvidia-uvm",
                                              "/dev/nvidia-uvm-tools" };
        for (size_t i = 0; i < ELEMENTSOF(shared); i++)
                add_dev_node(l, shared[i]);
        snprintf(path, sizeof(path), "/proc/driver/nvidia/gpus/%s/information", func);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "Device Minor: %u", &minor) == 1) {
                        snprintf(path, sizeof(path), "/dev/nvidia%u", minor);
                        add_dev_node(l, path);
                        return;
                }
        d = opendir("/dev");
        while (d && (de = readdir(d)))
                if (strncmp(de->d_name, "nvidia", 6) == 0 && sscanf(de->d_name + 6, "%u", &minor) == 1) {
                        snprintf(path, sizeof(path), "/dev/%s", de->d_name);
                        add_dev_node(l, path);
                }
}

/* The node of a class device that is no child of the function (/dev/vfio/GROUP, /dev/kfd): absent
 * is fine, the kernel makes them only while they have users to serve. */
static void add_class_node(struct node_list *l, const char *subsystem, const char *sysname) {
        _cleanup_(udev_unrefp) struct udev *udev = udev_new();
        _cleanup_(udev_device_unrefp) struct udev_device *dev = NULL;

        if (udev && (dev = udev_device_new_from_subsystem_sysname(udev, subsystem, sysname)))
                add_node(l, dev);
}

int host_func_nodes(const char *func, struct func_node *nodes, size_t max) {
        /* vfio-dev: the device's own vfio cdev (/dev/vfio/devices/vfioN, Linux >= 6.6); before
         * that its vfio-dev/vfioN has no node, and it is skipped like a sound card's directory. */
        static const char *const subsystems[] = { "drm", "sound", "graphics", "vfio-dev" };
        struct node_list l = { .nodes = nodes, .max = max };
        char path[PATH_MAX], driver[NAME_LEN] = "", group[16] = "";
        int r;

        /* The links alone, not host_read_func(): driver_override takes the device's lock, which
         * a write still pending in the kernel may hold. */
        snprintf(path, sizeof(path), "bus/pci/devices/%s/driver", func);
        r = sysfs_link_name(path, driver, sizeof(driver));
        if (r < 0 && r != -ENOENT)
                return r;
        snprintf(path, sizeof(path), "bus/pci/devices/%s/iommu_group", func);
        (void) sysfs_link_name(path, group, sizeof(group));
        for (size_t i = 0; i < ELEMENTSOF(subsystems); i++) {
                r = foreach_child(func, subsystems[i], add_child_node, &l);
                if (r < 0)
                        return r;
        }
        /* On vfio-pci, a VM uses the function through its IOMMU group's node (qemu opens
         * /dev/vfio/GROUP, then the device through it): a holder is a VM still running with it,
         * and vfio-pci's remove waits for it to let go. Not /dev/vfio/vfio: the container node,
         * open in every VM, says nothing about this function. */
        if (strcmp(driver, "vfio-pci") == 0 && group[0])
                add_class_node(&l, "vfio", group);
        /* ROCm and OpenCL reach amdgpu through /dev/kfd, one node for every amdgpu device: a
         * compute process holding it keeps amdgpu busy, whichever GPU it computes on. */
        if (strcmp(driver, "amdgpu") == 0)
                add_class_node(&l, "kfd", "kfd");
        /* NVIDIA's driver waits in its remove for the GPU's users to let go, as a sound card does. */
        if (strcmp(driver, "nvidia") == 0)
                add_nvidia_nodes(&l, func);
        return (int) l.n;
}

static int is_card(struct udev_device *child, void *data) {
        const char *name = udev_device_get_sysname(child);
        unsigned n;
        int len = 0;

        /* The card itself, not one of its connectors (card0-HDMI-A-1) nor a render node; of this
         * device, never by number: a process still holding the old card keeps its minor, so the
         * new one is another. */
        if (sscanf(name, "card%u%n", &n, &len) != 1 || name[len] != '\0')
                return 0;
        /* With udevd running, wait until it processed the card too: the display manager opens
         * it by the node and permissions udev sets. Without udevd (containers, tests) sysfs is all
         * there is. */
        if (access("/run/udev/control", F_OK) == 0 && !udev_device_get_is_initialized(child))
                return 0;
        return 1;
}

int host_func_has_drm_card(const char *func) {
        return foreach_child(func, "drm", is_card, NULL);
}

/* The index in nodes of a node the process whose fd directory is fds holds open, or -1. */
static int holds(int fds, const struct func_node *nodes, size_t n_nodes) {
        _cleanup_(closedirp) DIR *d = fdopendir(fds);
        struct dirent *de;

        if (!d) {
                close(fds);
                return -1;
        }
        while ((de = readdir(d))) {
                struct statx st;

                /* statx() follows the magic link to the open file itself, in whatever mount
                 * namespace the process lives (its path may exist only there), and after the node
                 * was deleted: the device number is all that counts. AT_STATX_DONT_SYNC: from the
                 * inode as cached, so that a file open on a dead NFS server or a wedged FUSE mount
                 * cannot block the scan. */
                if (de->d_name[0] == '.' ||
                    statx(dirfd(d), de->d_name, AT_STATX_DONT_SYNC, STATX_TYPE, &st) < 0 || !S_ISCHR(st.stx_mode))
                        continue;
                for (size_t i = 0; i < n_nodes; i++)
                        if (makedev(st.stx_rdev_major, st.stx_rdev_minor) == nodes[i].devnum)
                                return (int) i;
        }
        return -1;
}

/* "PID (comm, unit)": what a user needs to find the process and stop it the right way. */
static void describe_pid(pid_t pid, char *buf, size_t size) {
        _cleanup_free_ char *unit = NULL, *user_unit = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        char path[64], comm[64] = "?";
        uid_t uid;

        snprintf(path, sizeof(path), "/proc/%d/comm", (int) pid);
        if ((f = fopen(path, "re")) && fgets(comm, sizeof(comm), f))
                comm[strcspn(comm, "\n")] = '\0';
        if (sd_pid_get_user_unit(pid, &user_unit) >= 0 && sd_pid_get_owner_uid(pid, &uid) >= 0)
                snprintf(buf, size, "%d (%s, unit %s of user %u)", (int) pid, comm, user_unit, (unsigned) uid);
        else if (sd_pid_get_unit(pid, &unit) >= 0)
                snprintf(buf, size, "%d (%s, unit %s)", (int) pid, comm, unit);
        else
                snprintf(buf, size, "%d (%s, in no unit)", (int) pid, comm);
}

int host_node_holders(const struct func_node *nodes, size_t n_nodes, char *buf, size_t size,
                      unsigned *unreadable) {
        _cleanup_(closedirp) DIR *proc = opendir("/proc");
        struct dirent *de;
        int count = 0;
        pid_t self = getpid();

        buf[0] = '\0';
        if (unreadable)
                *unreadable = 0;
        if (!proc || n_nodes == 0)
                return proc ? 0 : -errno;
        while ((de = readdir(proc))) {
                char path[PATH_MAX], who[256];
                int fds, i;

                if (!isdigit((unsigned char) de->d_name[0]) || atoi(de->d_name) == self)
                        continue;
                snprintf(path, sizeof(path), "%s/fd", de->d_name);
                fds = openat(dirfd(proc), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                /* EACCES: another user's process, seen by one that is not root (--status). */
                if (fds < 0 && errno == EACCES && unreadable)
                        (*unreadable)++;
                if (fds < 0 || (i = holds(fds, nodes, n_nodes)) < 0)
                        continue;       /* gone, a kernel thread, unreadable, or not a holder */
                describe_pid(atoi(de->d_name), who, sizeof(who));
                size_t len = strlen(buf);
                snprintf(buf + len, size - len, "%s%s holding %s", count ? ", " : "", who, nodes[i].path);
                count++;
        }
        return count;
}

static void kmod_unrefp(struct kmod_ctx **c) { if (*c) kmod_unref(*c); }
static void kmod_list_unrefp(struct kmod_list **l) { if (*l) kmod_module_unref_list(*l); }

int host_default_driver(const struct pci_func *f, char *buf, size_t size) {
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = kmod_new(NULL, NULL);
        _cleanup_(kmod_list_unrefp) struct kmod_list *list = NULL;
        struct kmod_list *l;
        char modalias[128];
        int r;

        if (!ctx)
                return -ENOMEM;
        /* The same modalias the kernel announces in the device's uevent. */
        snprintf(modalias, sizeof(modalias), "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X",
                 f->vendor, f->device, hex_attr(f->name, "subsystem_vendor"),
                 hex_attr(f->name, "subsystem_device"), f->class >> 16, (f->class >> 8) & 0xff,
                 f->class & 0xff);
        r = kmod_module_new_from_lookup(ctx, modalias, &list);
        if (r < 0)
                return r;
        kmod_list_foreach(l, list) {
                struct kmod_module *m = kmod_module_get_module(l);
                const char *name = kmod_module_get_name(m);

                r = strcmp(name, "vfio_pci") == 0 || strcmp(name, "pci_stub") == 0 ? 0 :
                        strscpy(buf, name, size) == 0 ? 1 : -ENAMETOOLONG;
                kmod_module_unref(m);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        return -ENOENT;
}

/* The PCI driver a loaded module registers (/sys/module/M/drivers/pci:DRIVER); -ENOENT when the
 * module is not loaded or registers none. */
static int module_pci_driver(const char *module, char *buf, size_t size) {
        _cleanup_(closedirp) DIR *d = NULL;
        char path[PATH_MAX], found[NAME_LEN] = "";
        struct dirent *de;

        snprintf(path, sizeof(path), SYSFS_ROOT "/module/%s/drivers", module);
        for (char *p = path + strlen(SYSFS_ROOT "/module/"); *p && *p != '/'; p++)
                if (*p == '-')
                        *p = '_';       /* module names are spelled with underscores in sysfs */
        d = opendir(path);
        if (!d)
                return -ENOENT;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "pci:", 4) != 0)
                        continue;
                if (found[0])
                        return log_error_errno(ENOTUNIQ, "module %s registers several PCI drivers (%s, %s): set "
                                               "the driver itself in the config", module, found, de->d_name + 4);
                strscpy(found, de->d_name + 4, sizeof(found));
        }
        return found[0] ? strscpy(buf, found, size) : -ENOENT;
}

int host_load_default_driver(const char *func) {
        struct pci_func f;
        char module[NAME_LEN], path[PATH_MAX], loaded[NAME_LEN];
        int r;

        r = host_read_func(func, &f);
        if (r >= 0)
                r = host_default_driver(&f, module, sizeof(module));
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "module/%s", module);
        if (sysfs_exists(path))
                return 0;
        r = module_load_lookup(module, loaded, sizeof(loaded));
        if (r < 0)
                return log_warning_errno(r, "%s: loading module %s, its driver by the kernel's aliases, failed: %m",
                                         func, module);
        log_info("%s: loaded module %s, its driver by the kernel's aliases", func, module);
        return 0;
}

int host_pci_driver(const char *name, bool load, char *buf, size_t size) {
        char path[PATH_MAX], module[NAME_LEN];
        int r;

        snprintf(path, sizeof(path), "bus/pci/drivers/%s", name);
        if (sysfs_exists(path))
                return strscpy(buf, name, size);
        r = module_pci_driver(name, buf, size);
        if (r != -ENOENT || !load)
                return r;
        r = module_load_lookup(name, module, sizeof(module));
        if (r < 0)
                return log_error_errno(r, "%s is no registered PCI driver, and loading it as a module failed: %m", name);
        r = module_pci_driver(module, buf, size);
        if (r == -ENOENT)
                return log_error_errno(ENOENT, "module %s (for %s) is loaded but registers no PCI driver", module, name);
        return r;
}

int host_find_fbcon(char *name, size_t size, bool *bound) {
        _cleanup_(closedirp) DIR *d = opendir(SYSFS_ROOT "/class/vtconsole");
        struct dirent *de;

        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                char path[PATH_MAX], buf[128];

                if (strncmp(de->d_name, "vtcon", 5) != 0 || !is_fbcon(de->d_name))
                        continue;
                snprintf(path, sizeof(path), "class/vtconsole/%s/bind", de->d_name);
                *bound = sysfs_read(path, buf, sizeof(buf)) == 0 && strcmp(buf, "1") == 0;
                return strscpy(name, de->d_name, size) < 0 ? -ENAMETOOLONG : 1;
        }
        return 0;
}

int host_pci_driver_available(const char *driver) {
        char path[PATH_MAX];
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = NULL;
        _cleanup_(kmod_list_unrefp) struct kmod_list *list = NULL;
        int r;

        snprintf(path, sizeof(path), "bus/pci/drivers/%s", driver);
        if (sysfs_exists(path))
                return 1;
        ctx = kmod_new(NULL, NULL);
        if (!ctx)
                return -ENOMEM;
        r = kmod_module_new_from_lookup(ctx, driver, &list);
        return r < 0 ? r : list ? 0 : -ENOENT;
}

struct unused_wait {
        struct func_node nodes[64];
        size_t n_nodes;
        char *holders;
        size_t size;
};

static int nobody_holds(void *data) {
        struct unused_wait *w = data;
        int r = host_node_holders(w->nodes, w->n_nodes, w->holders, w->size, NULL);
        return r < 0 ? r : r == 0;
}

int host_wait_unused(const char *func, usec_t deadline, char *holders, size_t size) {
        _cleanup_free_ struct unused_wait *w = xcalloc(1, sizeof(*w));
        int r;

        holders[0] = '\0';
        r = host_func_nodes(func, w->nodes, ELEMENTSOF(w->nodes));
        if (r < 0)
                return r;
        w->n_nodes = (size_t) r;
        w->holders = holders;
        w->size = size;
        return wait_until(deadline, nobody_holds, w);
}

void host_resolve_secondary_driver(struct host *h, const char *configured) {
        char driver[NAME_LEN];

        if (configured)
                strscpy(h->secondary_driver, configured, sizeof(h->secondary_driver));
        else
                for (size_t i = 0; i < h->n_secondary && !h->secondary_driver[0]; i++)
                        if ((h->secondary[i].class >> 16) == 0x03)
                                (void) host_default_driver(&h->secondary[i], h->secondary_driver,
                                                           sizeof(h->secondary_driver));
        /* A module's name, from the aliases or the config, becomes the driver it registers when it
         * is loaded already, so the plan names what the kernel will show; otherwise the step
         * loads it and resolves it then. */
        if (h->secondary_driver[0] && host_pci_driver(h->secondary_driver, false, driver, sizeof(driver)) == 0)
                strscpy(h->secondary_driver, driver, sizeof(h->secondary_driver));
}
