/* fakesys: a FUSE passthrough over a BACKING directory that reacts to writes the way the
 * kernel's sysfs does for the files qemu-hook touches (PCI bind/unbind/drivers_probe,
 * driver_override, vtconsole bind, platform framebuffer, DRM/sound cards appearing on bind),
 * with the facts a real 6.1 kernel showed (/work/shared/TESTING.md, "Kernel facts"):
 *   - a vtconsole `bind` write never fails: the kernel ignores what it cannot do ("(S)" system
 *     consoles ignore every write); read the file back for the real state;
 *   - fbcon's vtcon exists only while a framebuffer does (a bound efi-/simple-framebuffer, or a
 *     DRM card: every driver but vfio-pci and pci-stub that binds a display-class device
 *     creates one, with fbdev emulation); it goes with the last one and comes back, bound, at
 *     the lowest free vtcon number when the next registers;
 *   - a probe on the PCI device under the boot framebuffer (its parent, else the boot_vga
 *     device) by a DRM driver or vfio-pci removes the framebuffer's platform device for good;
 *   - unbinding a function with a sound card blocks the writer while any process holds one of
 *     the card's /dev/snd nodes (matched by device number), and completes when it lets go;
 *   - a DRM minor stays taken while a process holds the old node: the next card gets another
 *     number;
 *   - vfio-pci binding the first function of an IOMMU group makes the group's char device
 *     (devices/virtual/vfio/GROUP, class vfio, node DEV/vfio/GROUP), and the last function leaving
 *     removes it; each function on vfio-pci has vfio-dev/vfioN, with a node
 *     (DEV/vfio/devices/vfioN) only when .fakesys/options says vfio_cdev (Linux >= 6.6);
 *   - resourceN_resize (pci-sysfs.c) reads as the BAR's supported sizes, a hex mask (bit n = 1 MB
 *     << n); writing n resizes the BAR to 1 MB << n (its line in `resource`), -EBUSY while a driver
 *     is bound, -EINVAL for a size not in the mask;
 *   - reset_method (pci.c) reads as the enabled methods, space-separated (nothing when none);
 *     writing a list takes it if the device supports every method (.fakesys/reset_methods), else
 *     -EINVAL and nothing changes; "" disables all, "default" enables all it supports;
 *   - unbinding a function from vfio-pci blocks the writer while any process holds its group's
 *     node or its vfio cdev (vfio_unregister_group_dev waits for the user to release the device;
 *     the emulation takes a holder of the group node for a VM holding the device through it).
 *   - huge pages (kernel/mm/hugepages/hugepages-SIZEkB, mm/hugetlb.c): nr_hugepages reads every
 *     page of the pool, surplus ones included (nr_hugepages_show_common: h->nr_huge_pages);
 *     surplus_hugepages those beyond the persistent count (overcommitted, or left in use when the
 *     count was lowered), free_hugepages the pages nobody uses, the reserved ones included;
 *     resv_hugepages those promised to a mapping not yet faulted in. A write of nr_hugepages (an
 *     unsigned number, else EINVAL) sets the persistent count, nr_hugepages less surplus
 *     (set_max_huge_pages): above it, surplus pages first become persistent, then as many new
 *     (free) pages as the memory left allows are allocated, and the write succeeds whatever it
 *     got: the counts read back are the truth; below it, free pages are freed down to
 *     max(count, resv + the pages in use), then pages become surplus until the persistent count
 *     is the one written (at most every page). A test takes pages, as a VM would, by lowering
 *     free_hugepages in BACKING, and lets them go as the kernel frees them (a surplus page goes
 *     back to the system, else it is free again): tests/lib/fakehost.py;
 *   - compaction: fakeproc/sys/vm/compact_memory stands for /proc/sys/vm/compact_memory (the
 *     harness bind-mounts it there in the test namespace: the machine's own is never written);
 *     a write of 1 (anything else: EINVAL) makes the fragmented memory usable for huge pages;
 *   - cpufreq (drivers/cpufreq/cpufreq.c): a write of scaling_governor names one of
 *     scaling_available_governors (else EINVAL); an offline CPU (cpuN/online 0) has an inactive
 *     policy: its cpufreq files answer EBUSY to reads and writes. A CPU without cpufreq/ has no
 *     frequency scaling at all.
 *   - unbinding a GPU from nvidia blocks the writer while any process holds its /dev/nvidiaN (N its
 *     "Device Minor") or its DRM nodes (nv_pci_remove waits for the GPU's usage count);
 *     /proc/driver/nvidia/gpus/ADDR/information (fakeproc/driver/..., bind-mounted over
 *     /proc/driver by the harness) exists while ADDR is bound to nvidia.
 * Device numbers as a kernel hands them out: vfio groups, vfio cdevs and kfd have dynamic majors
 * (alloc_chrdev_region, register_chrdev(0, ...)); here vfio groups are 242:N, N the lowest free
 * minor (not the group number), vfio cdevs 241:N, /dev/kfd 235:0, nvidia-uvm 510:N, the container
 * /dev/vfio/vfio is misc 10:196; DRM 226, ALSA 116, nvidia 195, as real. kfd and the container
 * exist while their modules are loaded.
 *
 * Kernel modules come and go (kernel/module/main.c), by writes of build/kmodtrap to
 * /.fakesys/module (a file only the mount shows, like the marker) standing for the syscalls it
 * trapped; the write's errno is the syscall's. Drivers are registered by modules of other names
 * (vfio_pci: vfio-pci; /module/MOD/drivers/BUS:DRV says which).
 *   - "unload MOD" (delete_module, O_NONBLOCK): ENOENT if not loaded (no /module/MOD/initstate:
 *     absent or built in); EWOULDBLOCK while /module/MOD/holders/ is not empty or refcnt > 0.
 *     Otherwise its exit runs: each driver it registered is unregistered, every device bound to
 *     it unbound as by an `unbind` write (cards, vfio groups, fbcon follow), its directory gone
 *     from /bus/BUS/drivers and from .fakesys/drivers; the DRM cards it gave another driver's
 *     devices go (nvidia_drm), its own char devices go, it leaves its dependencies' holders/,
 *     /module/MOD goes.
 *   - "load MOD" (finit_module): EEXIST if loaded; ENOENT for a name no module on disk has
 *     (.fakesys/modules) or a dependency not loaded (the kernel's "Unknown symbol"). Otherwise
 *     /module/MOD (initstate live, refcnt 0, holders/, drivers/) comes, joins its dependencies'
 *     holders/, its char devices come, its drivers register (bind unbind new_id remove_id uevent,
 *     the module link, appended to .fakesys/drivers) and driver_attach probes each unbound device
 *     whose ids match and whose driver_override is unset or names the driver, as drivers_probe
 *     does; a driver_override naming another driver keeps a device away (the GPU on vfio-pci stays
 *     there when the hook loads amdgpu back). A module giving DRM cards to a driver's devices
 *     (nvidia_drm) makes them for those bound.
 *   - refcnt reads as the file's own value (a test sets it in BACKING to keep a module busy) plus
 *     one per open file, in any process, of a node whose open() takes a reference on the module:
 *     its own char devices (kfd: amdgpu; /dev/nvidia*), and of the devices bound to its drivers
 *     their sound and vfio nodes and DRM nodes (those of nvidia's devices are nvidia_drm's).
 *
 * The backing tree is the whole state: a device is bound when its `driver` symlink exists.
 * Only asynchronous probes and delayed card creation live in memory (the event list), and
 * the writes now blocked.
 *
 * Control files in BACKING/.fakesys/ (see tests/lib/fakehost.py):
 *   options  words, one a line, set by origin.py: "vfio_cdev" (the kernel has the vfio cdev)
 *   reset_methods  "NAME METHOD...": the reset methods PCI function NAME supports (their probe
 *            succeeds), device_specific when vendor-reset is loaded and has a reset for it
 *   drivers  "BUS DRIVER ID..." in registration order (pci ids vendor:device, platform names)
 *   log      one line per attribute write, when it returns: "PATH VALUE RESULT"
 *   fail     "PATH[=VALUE] ERRNO [COUNT]": make the next COUNT (or all) writes to PATH (of VALUE
 *            only, when given) fail; a vtconsole `bind` named there is ignored instead (the
 *            write succeeds and changes nothing), as the kernel ignores a bind it cannot do
 *   hang     "PATH[=VALUE] [D]": writes to PATH block (the writer waits) until the line is
 *            removed; with D the writer is in the kernel's D state: SIGKILL does not end it
 *   blocked  written by fakesys: "PATH VALUE PID" for each write now blocked (hang, a sound
 *            card held), until it completes
 *   memory   "hugepages KB": the memory huge pages of every size can be had from (all pools
 *            together); "fragmented KB": the part of it usable only after a compaction (the write
 *            of compact_memory sets it to 0). Lower hugepages to shrink what can be allocated
 *   delay    "probe MS", "drm MS", "unbind MS"
 *   modules  set by origin.py, the modules on disk, lines "MOD KIND ARGS": "MOD depends DEP..."
 *            (one per module, maybe no DEP), "MOD driver BUS DRIVER ID..." (the drivers its init
 *            registers, ids as in drivers), "MOD node DEVNAME MAJOR MINOR [DIR]" (its own char
 *            devices: with DIR, devices/virtual/CLASS/NAME, a class device; without, a bare
 *            register_chrdev node made in DEV), "MOD drm DRIVER" (it gives the devices bound to
 *            DRIVER their DRM card: without it loaded, binding them makes none)
 *   nvidia/ADDR  set by origin.py: the text of /proc/driver/nvidia/gpus/ADDR/information
 *   kill     "K before|after": the K-th attribute write from now (failed ones count) SIGKILLs
 *            its writer's process group, before the write is made (it never happens) or after it
 *            (the writer dies as it returns); then the line is gone. Never fakesys's own group:
 *            the test starts the hook in a session of its own
 * /.fakesys/marker exists only in the mounted emulation, never in BACKING: the harness refuses
 * to run anything unless it sees it at /sys/.fakesys/marker. /.fakesys/module (write-only) is
 * not in BACKING either: "unload MOD" and "load MOD", kmodtrap's; each is logged.
 *
 * Device nodes: given DEV (the test namespace's private /dev, never the machine's), fakesys is
 * devtmpfs and udev too: char nodes DEV/dri/cardN, DEV/snd/controlCN, DEV/vfio/GROUP... with the
 * class device's numbers, and udev's DEV/dri/by-path/pci-ADDR-card (-render), DEV/snd/by-path/pci-ADDR
 * links, made and removed with the cards (at start: those of the tree, after clearing DEV/dri,
 * DEV/snd, DEV/vfio and DEV/kfd), and the bare nodes of modules while they are loaded.
 *
 * A write that blocks holds no lock of fakesys (the rest of the emulation goes on); a SIGKILLed
 * writer is answered EINTR at once (FUSE interrupt) and its write completes later, once released,
 * except under a hang line with D: then the writer stays blocked, killed or not, as in D state.
 * The device lock: a blocked unbind or bind of a PCI device, or drivers_probe of it, holds the
 * kernel's device_lock() of that device (device_release_driver, __device_attach) while it waits,
 * so every other unbind, bind or drivers_probe of the same device, and each write or read of its
 * driver_override (driver_set_override, driver_override_show), waits until it completes; killable
 * or not as the holder is. Unlike kernfs, FUSE serializes the writes to one file (the inode
 * lock of a direct write): a blocked drivers_probe holds up those of other devices too.
 *
 * Usage: fakesys BACKING MOUNTPOINT [DEV] (stays in the foreground; SIGTERM or umount stops it). */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* Paths are composed with snprintf into PATH_MAX buffers; a truncated one names no file and
 * fails like any missing file, so the compiler's truncation analysis is only noise here. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MARKER "/.fakesys/marker"
#define MODULE_CTL "/.fakesys/module"
#define MARKER_TEXT "fakesys emulated sysfs\n"

static char backing[PATH_MAX];
static char devroot[PATH_MAX];       /* "" : no device nodes */
/* One lock for the tree: FUSE runs multi-threaded and the event thread edits it too. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;

/* ---------- small helpers ---------- */

static void full(char out[PATH_MAX], const char *rel) {
        snprintf(out, PATH_MAX, "%s/%s", backing, rel[0] == '/' ? rel + 1 : rel);
}

static long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const struct { int no; const char *name; } errnames[] = {
        { EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { EIO, "EIO" }, { ENXIO, "ENXIO" },
        { EAGAIN, "EAGAIN" }, { ENOMEM, "ENOMEM" }, { EACCES, "EACCES" }, { EBUSY, "EBUSY" },
        { EEXIST, "EEXIST" }, { ENODEV, "ENODEV" }, { EINVAL, "EINVAL" }, { ENOSPC, "ENOSPC" },
        { ETIMEDOUT, "ETIMEDOUT" }, { EINTR, "EINTR" }, { EPROTO, "EPROTO" },
};

static const char *errname(int no) {
        static char buf[16];
        for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
                if (errnames[i].no == no)
                        return errnames[i].name;
        snprintf(buf, sizeof(buf), "E%d", no);
        return buf;
}

static int errnum(const char *name) {
        for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
                if (strcmp(errnames[i].name, name) == 0)
                        return errnames[i].no;
        return atoi(name) > 0 ? atoi(name) : EIO;
}

/* Read a backing file (relative path) into buf, NUL-terminated; -1 if missing. */
static ssize_t read_rel(const char *rel, char *buf, size_t size) {
        char p[PATH_MAX];
        full(p, rel);
        int fd = open(p, O_RDONLY);
        if (fd < 0)
                return -1;
        ssize_t n = read(fd, buf, size - 1);
        close(fd);
        if (n < 0)
                return -1;
        buf[n] = '\0';
        return n;
}

static int write_rel(const char *rel, const char *text) {
        char p[PATH_MAX];
        full(p, rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
                return -errno;
        ssize_t n = write(fd, text, strlen(text));
        close(fd);
        return n < 0 ? -errno : 0;
}

/* Base name of a symlink's target ("" when there is no link). */
static void link_base(const char *rel, char *out, size_t size) {
        char p[PATH_MAX], t[PATH_MAX];
        full(p, rel);
        ssize_t n = readlink(p, t, sizeof(t) - 1);
        out[0] = '\0';
        if (n < 0)
                return;
        t[n] = '\0';
        const char *b = strrchr(t, '/');
        snprintf(out, size, "%s", b ? b + 1 : t);
}

/* A relative symlink at LINK (relative path) pointing to TARGET (relative to the root): it
 * resolves the same in BACKING and in the mount, as real sysfs links do. */
static void make_link(const char *link, const char *target) {
        char p[PATH_MAX], t[PATH_MAX] = "";
        size_t len = 0;
        for (const char *c = link; (c = strchr(c, '/')); c++)
                len += (size_t) snprintf(t + len, sizeof(t) - len, "../");
        snprintf(t + len, sizeof(t) - len, "%s", target);
        full(p, link);
        unlink(p);
        if (symlink(t, p) < 0)
                fprintf(stderr, "fakesys: symlink %s: %m\n", p);
}

static void unlink_rel(const char *rel) {
        char p[PATH_MAX];
        full(p, rel);
        unlink(p);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        remove(p);      /* best effort: a leftover only makes the tree odder */
        return 0;
}

static void rm_rf(const char *rel) {
        char p[PATH_MAX];
        full(p, rel);
        nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkdirs(const char *abs) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s", abs);
        for (char *c = p + 1; (c = strchr(c, '/')); c++) {
                *c = '\0';
                mkdir(p, 0755);
                *c = '/';
        }
        mkdir(p, 0755);
}

/* ---------- device nodes (devtmpfs and udev) ---------- */

/* The PCI function a class device DIR sits under ("" if none): its nearest PCI ancestor. */
static void pci_ancestor(const char *dir, char *out, size_t size) {
        char copy[PATH_MAX];
        unsigned a, b, c, d;
        int n;
        out[0] = '\0';
        snprintf(copy, sizeof(copy), "%s", dir);
        for (char *save = NULL, *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save))
                if (sscanf(part, "%4x:%2x:%2x.%1x%n", &a, &b, &c, &d, &n) == 4 && !part[n])
                        snprintf(out, size, "%s", part);
}

/* udev's by-path name for DEVNAME of a class device under PCI function ADDR ("" if none). */
static void bypath(const char *devname, const char *addr, char *out, size_t size) {
        out[0] = '\0';
        if (!addr[0])
                return;
        if (!strncmp(devname, "dri/card", 8))
                snprintf(out, size, "dri/by-path/pci-%s-card", addr);
        else if (!strncmp(devname, "dri/renderD", 11))
                snprintf(out, size, "dri/by-path/pci-%s-render", addr);
        else if (!strncmp(devname, "snd/controlC", 12))
                snprintf(out, size, "snd/by-path/pci-%s", addr);
}

static void add_node(const char *dir, const char *devname, int major, int minor) {
        char p[PATH_MAX], addr[32], link[PATH_MAX];
        if (!devroot[0])
                return;
        snprintf(p, sizeof(p), "%s/%s", devroot, devname);
        *strrchr(p, '/') = '\0';
        mkdirs(p);
        snprintf(p, sizeof(p), "%s/%s", devroot, devname);
        unlink(p);
        if (mknod(p, S_IFCHR | 0660, makedev((unsigned) major, (unsigned) minor)) < 0)
                fprintf(stderr, "fakesys: mknod %s: %m\n", p);
        pci_ancestor(dir, addr, sizeof(addr));
        bypath(devname, addr, link, sizeof(link));
        if (!link[0])
                return;
        snprintf(p, sizeof(p), "%s/%s", devroot, link);
        *strrchr(p, '/') = '\0';
        mkdirs(p);
        snprintf(p, sizeof(p), "%s/%s", devroot, link);
        unlink(p);
        snprintf(link, sizeof(link), "../%s", strrchr(devname, '/') ? strrchr(devname, '/') + 1 : devname);
        if (symlink(link, p) < 0)
                fprintf(stderr, "fakesys: symlink %s: %m\n", p);
}

/* The node goes (a holder's fd now reads "... (deleted)"), with udev's link if it is this node's. */
static void drop_node(const char *dir, const char *devname) {
        char p[PATH_MAX], addr[32], link[PATH_MAX], t[PATH_MAX];
        if (!devroot[0] || !devname[0])
                return;
        snprintf(p, sizeof(p), "%s/%s", devroot, devname);
        unlink(p);
        pci_ancestor(dir, addr, sizeof(addr));
        bypath(devname, addr, link, sizeof(link));
        if (!link[0])
                return;
        snprintf(p, sizeof(p), "%s/%s", devroot, link);
        ssize_t n = readlink(p, t, sizeof(t) - 1);
        if (n > 0) {
                t[n] = '\0';
                if (!strcmp(strrchr(t, '/') ? strrchr(t, '/') + 1 : t, strrchr(devname, '/') + 1))
                        unlink(p);
        }
}

/* How many open files, in any process, are nodes of DEVS (by device number, deleted nodes too,
 * wherever the node is: another /dev, a container's); with FIRST, stop at the first. fds whose
 * target is under /sys are not stat()ed: a stat of a file on this very mount would wait for a
 * FUSE answer, possibly from ourselves. Safe under the lock. */
static int holders(const dev_t *devs, size_t n, int first) {
        DIR *proc = n ? opendir("/proc") : NULL;
        int count = 0;
        for (struct dirent *de; proc && !(first && count) && (de = readdir(proc));) {
                char p[PATH_MAX];
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                snprintf(p, sizeof(p), "/proc/%s/fd", de->d_name);
                DIR *fds = opendir(p);
                for (struct dirent *fe; fds && !(first && count) && (fe = readdir(fds));) {
                        char l[PATH_MAX], t[64];
                        struct stat st;
                        snprintf(l, sizeof(l), "/proc/%s/fd/%s", de->d_name, fe->d_name);
                        ssize_t len = readlink(l, t, sizeof(t) - 1);
                        if (len < 1 || t[0] != '/' || (len >= 4 && !strncmp(t, "/sys", 4) && (len == 4 || t[4] == '/')) ||
                            stat(l, &st) < 0 || !S_ISCHR(st.st_mode))
                                continue;
                        for (size_t i = 0; i < n; i++)
                                if (st.st_rdev == devs[i]) {
                                        count++;
                                        break;
                                }
                }
                if (fds)
                        closedir(fds);
        }
        if (proc)
                closedir(proc);
        return count;
}

/* Does any process hold a node of one of DEVS? */
static int held(const dev_t *devs, size_t n) {
        return holders(devs, n, 1) > 0;
}

/* Device directory (relative to the root) of bus/BUS/devices/NAME; -1 if there is none. */
static int device_dir(const char *bus, const char *name, char out[PATH_MAX]) {
        char p[PATH_MAX], r[PATH_MAX];
        snprintf(p, sizeof(p), "%s/bus/%s/devices/%s", backing, bus, name);
        if (strchr(name, '/') || !realpath(p, r) || strncmp(r, backing, strlen(backing)) != 0)
                return -1;
        snprintf(out, PATH_MAX, "%s", r + strlen(backing) + 1);
        return 0;
}

static void strip_nl(char *s) {
        size_t n = strlen(s);
        if (n && s[n - 1] == '\n')
                s[n - 1] = '\0';
}

/* Replace (or drop, when driver is "") the DRIVER= line of DEV/uevent. */
static void uevent_driver(const char *dev, const char *driver) {
        char rel[PATH_MAX], old[4096], out[4096] = "";
        size_t len = 0;
        snprintf(rel, sizeof(rel), "%s/uevent", dev);
        if (read_rel(rel, old, sizeof(old)) < 0)
                old[0] = '\0';
        if (driver[0])
                len += (size_t) snprintf(out, sizeof(out), "DRIVER=%s\n", driver);
        for (char *save = NULL, *l = strtok_r(old, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (strncmp(l, "DRIVER=", 7) != 0 && len < sizeof(out))
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s\n", l);
        write_rel(rel, out);
}

/* ---------- control files ---------- */

/* The number of the last "KEY NUMBER" line for key in the control file (relative), 0 without one. */
static long control_value(const char *file, const char *key) {
        char buf[1024], k[32];
        long v, ret = 0;
        if (read_rel(file, buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %ld", k, &v) == 2 && strcmp(k, key) == 0)
                        ret = v;
        return ret;
}

static long delay_ms(const char *what) {
        return control_value(".fakesys/delay", what);
}

/* Canonical relative form of a path named in the fail file: links resolved, as FUSE sees it. */
static void canonical(const char *in, char out[PATH_MAX]) {
        char p[PATH_MAX], r[PATH_MAX];
        if (strncmp(in, "/sys/", 5) == 0)
                in += 5;
        while (*in == '/')
                in++;
        full(p, in);
        if (realpath(p, r) && strncmp(r, backing, strlen(backing)) == 0 && r[strlen(backing)] == '/')
                snprintf(out, PATH_MAX, "%s", r + strlen(backing) + 1);
        else
                snprintf(out, PATH_MAX, "%s", in);
}

/* Returns the errno to inject for a write of VALUE to REL (0 for none), consuming one of its
 * count. */
static int injected(const char *rel, const char *value) {
        char buf[8192], out[8192] = "", path[PATH_MAX], canon[PATH_MAX], name[32];
        size_t len = 0;
        int ret = 0, changed = 0;
        if (read_rel(".fakesys/fail", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                long count = -1;
                int n = sscanf(l, "%4095s %31s %ld", path, name, &count);
                if (n >= 2 && !ret) {
                        char *want = strchr(path, '=');
                        if (want)
                                *want++ = '\0';
                        canonical(path, canon);
                        if (want)
                                want[-1] = '=';        /* the line is written back whole */
                        if (strcmp(canon, rel) == 0 && (!want || strcmp(want, value) == 0) && count != 0) {
                                ret = errnum(name);
                                if (n == 3) {
                                        count--;
                                        changed = 1;
                                }
                        }
                }
                if (n == 3 && count <= 0)       /* used up: drop the line */
                        continue;
                if (n == 3)
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s %s %ld\n", path, name, count);
                else
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s\n", l);
        }
        if (changed)
                write_rel(".fakesys/fail", out);
        return ret;
}

/* The kill line's mode when this write is its K-th (the line goes), else 0: 1 before, 2 after. */
static int kill_point(void) {
        char buf[256], mode[16], out[64];
        long k;
        if (read_rel(".fakesys/kill", buf, sizeof(buf)) <= 0 || sscanf(buf, "%ld %15s", &k, mode) != 2 || k <= 0)
                return 0;
        if (k > 1) {
                snprintf(out, sizeof(out), "%ld %s\n", k - 1, mode);
                write_rel(".fakesys/kill", out);
                return 0;
        }
        write_rel(".fakesys/kill", "");
        return strcmp(mode, "after") == 0 ? 2 : 1;
}

/* A hook killed at a chosen point: its whole process group (the hook and the child it writes
 * unbind and drivers_probe from), as SIGKILL from outside would. */
static void kill_writer(void) {
        pid_t pgid = getpgid(fuse_get_context()->pid);
        if (pgid > 1 && pgid != getpgrp())
                kill(-pgid, SIGKILL);
        else
                fprintf(stderr, "fakesys: kill line: the writer %d is in our own process group, not killed\n",
                        (int) fuse_get_context()->pid);
}

static void log_write(const char *rel, const char *value, int err) {
        char p[PATH_MAX];
        full(p, ".fakesys/log");
        FILE *f = fopen(p, "a");
        if (!f)
                return;
        fprintf(f, "%s %s %s\n", rel, value[0] ? value : "\"\"", err ? errname(err) : "0");
        fclose(f);
}

/* ---------- the modules on disk (.fakesys/modules) ---------- */

/* One line of .fakesys/modules: "MODULE KIND ARGS..." */
struct modline {
        char mod[64], kind[16], args[512];
};
static struct modline modtab[128];

/* Parse .fakesys/modules into modtab; how many lines. Callers hold the lock. */
static size_t module_table(void) {
        static char buf[32768];
        size_t n = 0;
        int off;
        if (read_rel(".fakesys/modules", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l && n < 128; l = strtok_r(NULL, "\n", &save)) {
                struct modline *m = &modtab[n];
                if (sscanf(l, "%63s %15s %n", m->mod, m->kind, &off) < 2)
                        continue;
                snprintf(m->args, sizeof(m->args), "%s", l + off);
                n++;
        }
        return n;
}

/* A module is loaded when /module/NAME has an initstate (a builtin one has none). */
static int module_loaded(const char *mod) {
        char rel[PATH_MAX], buf[32];
        snprintf(rel, sizeof(rel), "module/%s/initstate", mod);
        return read_rel(rel, buf, sizeof(buf)) > 0;
}

/* The module that gives devices bound to DRV their DRM card when it is not DRV's own (nvidia_drm
 * for nvidia): its name in OUT, 1; else 0. */
static int drm_module(const char *drv, char *out, size_t size) {
        size_t n = module_table();
        for (size_t i = 0; i < n; i++)
                if (!strcmp(modtab[i].kind, "drm") && !strcmp(modtab[i].args, drv)) {
                        snprintf(out, size, "%s", modtab[i].mod);
                        return 1;
                }
        return 0;
}

/* ---------- drivers ---------- */

/* Is DRV registered on BUS, and does it match device DEV (named NAME)? */
static int driver_registered(const char *bus, const char *drv) {
        char buf[8192], b[32], d[64];
        if (read_rel(".fakesys/drivers", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %63s", b, d) == 2 && strcmp(b, bus) == 0 && strcmp(d, drv) == 0)
                        return 1;
        return 0;
}

static int ids_match(const char *bus, const char *dev, const char *name, const char *line) {
        char b[32], d[64], id[64], vendor[16] = "", device[16] = "", rel[PATH_MAX];
        int off;
        if (sscanf(line, "%31s %63s %n", b, d, &off) < 2 || strcmp(b, bus) != 0)
                return 0;
        if (strcmp(bus, "pci") == 0) {
                snprintf(rel, sizeof(rel), "%s/vendor", dev);
                read_rel(rel, vendor, sizeof(vendor));
                snprintf(rel, sizeof(rel), "%s/device", dev);
                read_rel(rel, device, sizeof(device));
        }
        for (const char *p = line + off; sscanf(p, "%63s%n", id, &off) == 1; p += off) {
                if (strcmp(bus, "pci") == 0) {
                        unsigned v, dd;
                        if (sscanf(id, "%x:%x", &v, &dd) == 2 && v == strtoul(vendor, NULL, 16) &&
                            dd == strtoul(device, NULL, 16))
                                return 1;
                } else if (strncmp(name, id, strlen(id)) == 0 && name[strlen(id)] == '.') {
                        return 1;
                }
        }
        return 0;
}

/* The kernel's bus match: driver_override decides alone when set, else the id tables. */
static int driver_matches(const char *bus, const char *dev, const char *name, const char *drv) {
        char rel[PATH_MAX], ov[256], buf[8192], b[32], d[64];
        snprintf(rel, sizeof(rel), "%s/driver_override", dev);
        if (read_rel(rel, ov, sizeof(ov)) >= 0) {
                strip_nl(ov);
                if (ov[0] && strcmp(ov, "(null)") != 0)
                        return strcmp(ov, drv) == 0;
        }
        if (read_rel(".fakesys/drivers", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %63s", b, d) == 2 && strcmp(d, drv) == 0)
                        return ids_match(bus, dev, name, l);
        return 0;
}

/* ---------- cards (drm, sound) ---------- */

static int bound_to(const char *dev, char *drv, size_t size) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/driver", dev);
        link_base(rel, drv, size);
        return drv[0] != '\0';
}

static int pci_display_class(const char *dev) {
        char rel[PATH_MAX], buf[32];
        snprintf(rel, sizeof(rel), "%s/class", dev);
        return read_rel(rel, buf, sizeof(buf)) > 0 && (strtoul(buf, NULL, 16) >> 16) == 0x03;
}

/* Every driver that binds a display-class function is a DRM driver with fbdev emulation, but
 * the two that only park it; a driver whose DRM side is another module only with that module. */
static int is_display(const char *drv) {
        char mod[64];
        if (!strcmp(drv, "vfio-pci") || !strcmp(drv, "pci-stub"))
                return 0;
        /* nvidia's DRM side is nvidia_drm: a card only while it is loaded */
        return drm_module(drv, mod, sizeof(mod)) ? module_loaded(mod) : 1;
}

/* The lowest card number whose minors are free: no card N (nor renderD 128+N) exists, and no
 * process still holds a node of either (the kernel frees them at the last close). */
static int drm_free_minor(void) {
        char p[PATH_MAX];
        struct stat st;
        for (int n = 0; n < 64; n++) {
                dev_t devs[2] = { makedev(226, (unsigned) n), makedev(226, (unsigned) (128 + n)) };
                snprintf(p, sizeof(p), "%s/class/drm/card%d", backing, n);
                if (lstat(p, &st) == 0)
                        continue;
                snprintf(p, sizeof(p), "%s/class/drm/renderD%d", backing, 128 + n);
                if (lstat(p, &st) == 0 || held(devs, 2))
                        continue;
                return n;
        }
        return 64;
}

static int lowest_free(const char *classdir, const char *prefix) {
        char p[PATH_MAX];
        for (int n = 0; n < 64; n++) {
                struct stat st;
                snprintf(p, sizeof(p), "%s/%s/%s%d", backing, classdir, prefix, n);
                if (lstat(p, &st) < 0)
                        return n;
        }
        return 64;
}

/* Class device DIR (child of PARENT, NULL for none) of class CLS: uevent, dev, subsystem and device links,
 * the class/CLS/NAME link udev enumerates by, and its node. */
static void add_class_dev(const char *dir, const char *parent, const char *cls, const char *devname,
                          int major, int minor) {
        char rel[PATH_MAX], text[512], p[PATH_MAX];
        full(p, dir);
        mkdir(p, 0755);
        if (devname)
                snprintf(text, sizeof(text), "MAJOR=%d\nMINOR=%d\nDEVNAME=%s\n", major, minor, devname);
        else
                text[0] = '\0';
        snprintf(rel, sizeof(rel), "%s/uevent", dir);
        write_rel(rel, text);
        if (devname) {
                snprintf(text, sizeof(text), "%d:%d\n", major, minor);
                snprintf(rel, sizeof(rel), "%s/dev", dir);
                write_rel(rel, text);
        }
        snprintf(rel, sizeof(rel), "%s/subsystem", dir);
        snprintf(text, sizeof(text), "class/%s", cls);
        make_link(rel, text);
        if (parent) {   /* none for a virtual device (devices/virtual/...) */
                snprintf(rel, sizeof(rel), "%s/device", dir);
                make_link(rel, parent);
        }
        snprintf(rel, sizeof(rel), "class/%s/%s", cls, strrchr(dir, '/') + 1);
        make_link(rel, dir);
        if (devname)
                add_node(dir, devname, major, minor);
}

static void fbcon_update(void);

static void add_drm(const char *dev) {
        char p[PATH_MAX], node[64];
        snprintf(p, sizeof(p), "%s/%s/drm", backing, dev);
        mkdir(p, 0755);
        int n = drm_free_minor();
        snprintf(p, sizeof(p), "%s/drm/card%d", dev, n);
        snprintf(node, sizeof(node), "dri/card%d", n);
        add_class_dev(p, dev, "drm", node, 226, n);
        snprintf(p, sizeof(p), "%s/drm/renderD%d", dev, 128 + n);
        snprintf(node, sizeof(node), "dri/renderD%d", 128 + n);
        add_class_dev(p, dev, "drm", node, 226, 128 + n);
        fbcon_update();         /* the driver's fbdev emulation registered a framebuffer */
}

/* A card with its control node and one HDMI playback PCM, as snd_hda_intel makes them. */
static void add_sound(const char *dev) {
        char p[PATH_MAX], node[64], card[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s/sound", backing, dev);
        mkdir(p, 0755);
        int n = lowest_free("class/sound", "card");
        snprintf(card, sizeof(card), "%s/sound/card%d", dev, n);
        add_class_dev(card, dev, "sound", NULL, 0, 0);
        snprintf(p, sizeof(p), "%s/controlC%d", card, n);
        snprintf(node, sizeof(node), "snd/controlC%d", n);
        add_class_dev(p, card, "sound", node, 116, 32 * n);
        snprintf(p, sizeof(p), "%s/pcmC%dD3p", card, n);
        snprintf(node, sizeof(node), "snd/pcmC%dD3p", n);
        add_class_dev(p, card, "sound", node, 116, 32 * n + 3);
}

/* What one walk of a card directory collects: its nodes' numbers, or it removes them. */
static const char *walk_cls;
static int walk_drop;
static dev_t walk_devs[32];
static size_t walk_n;

static int walk_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        char text[512], devname[256] = "", rel[PATH_MAX];
        unsigned major = 0, minor = 0;
        if (flag != FTW_D)
                return 0;
        snprintf(rel, sizeof(rel), "%s/uevent", p + strlen(backing) + 1);
        if (read_rel(rel, text, sizeof(text)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                sscanf(l, "MAJOR=%u", &major);
                sscanf(l, "MINOR=%u", &minor);
                sscanf(l, "DEVNAME=%255s", devname);
        }
        if (!walk_drop) {
                if (devname[0] && walk_n < sizeof(walk_devs) / sizeof(walk_devs[0]))
                        walk_devs[walk_n++] = makedev(major, minor);
                return 0;
        }
        snprintf(rel, sizeof(rel), "class/%s/%s", walk_cls, strrchr(p, '/') + 1);
        unlink_rel(rel);
        drop_node(p + strlen(backing) + 1, devname);
        return 0;
}

/* Numbers of the nodes under DEV/SUB (its cards); how many. */
static size_t card_devs(const char *dev, const char *sub) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s/%s", backing, dev, sub);
        walk_n = 0;
        walk_drop = 0;
        nftw(p, walk_entry, 16, FTW_PHYS);
        return walk_n;
}

/* Remove DEV/SUB, the class links pointing into it and the nodes. */
static void remove_cards(const char *dev, const char *sub) {
        char p[PATH_MAX], rel[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s/%s", backing, dev, sub);
        walk_cls = sub;
        walk_drop = 1;
        nftw(p, walk_entry, 16, FTW_PHYS);
        walk_drop = 0;
        snprintf(rel, sizeof(rel), "%s/%s", dev, sub);
        rm_rf(rel);
}

/* ---------- vfio ---------- */

#define VFIO_GROUP_MAJOR 242
#define VFIO_CDEV_MAJOR 241

static int option(const char *word) {
        char buf[1024];
        if (read_rel(".fakesys/options", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (!strcmp(l, word))
                        return 1;
        return 0;
}

/* The device number in a class device's dev file ("242:0"); 0 when it has none. */
static dev_t class_devnum(const char *cls, const char *name) {
        char rel[PATH_MAX], buf[32];
        unsigned major, minor;
        snprintf(rel, sizeof(rel), "class/%s/%s/dev", cls, name);
        if (read_rel(rel, buf, sizeof(buf)) < 0 || sscanf(buf, "%u:%u", &major, &minor) != 2)
                return 0;
        return makedev(major, minor);
}

/* The lowest minor no vfio group has (the kernel's ida). */
static int vfio_group_minor(void) {
        char p[PATH_MAX];
        for (int minor = 0; minor < 256; minor++) {
                int used = 0;
                snprintf(p, sizeof(p), "%s/class/vfio", backing);
                DIR *d = opendir(p);
                for (struct dirent *de; d && !used && (de = readdir(d));)
                        used = de->d_name[0] != '.' &&
                               class_devnum("vfio", de->d_name) == makedev(VFIO_GROUP_MAJOR, (unsigned) minor);
                if (d)
                        closedir(d);
                if (!used)
                        return minor;
        }
        return 255;
}

static void iommu_group(const char *dev, char *out, size_t size) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/iommu_group", dev);
        link_base(rel, out, size);
}

/* vfio-pci bound DEV: its group's char device if it is the first of the group, its vfio-dev. */
static void vfio_add(const char *dev) {
        char group[32], p[PATH_MAX], node[64];
        struct stat st;
        iommu_group(dev, group, sizeof(group));
        snprintf(p, sizeof(p), "%s/class/vfio/%s", backing, group);
        if (group[0] && lstat(p, &st) < 0) {
                full(p, "devices/virtual/vfio");
                mkdirs(p);
                snprintf(p, sizeof(p), "devices/virtual/vfio/%s", group);
                snprintf(node, sizeof(node), "vfio/%s", group);
                add_class_dev(p, NULL, "vfio", node, VFIO_GROUP_MAJOR, vfio_group_minor());
        }
        snprintf(p, sizeof(p), "%s/%s/vfio-dev", backing, dev);
        mkdir(p, 0755);
        int n = lowest_free("class/vfio-dev", "vfio");
        snprintf(p, sizeof(p), "%s/vfio-dev/vfio%d", dev, n);
        snprintf(node, sizeof(node), "vfio/devices/vfio%d", n);
        add_class_dev(p, dev, "vfio-dev", option("vfio_cdev") ? node : NULL, VFIO_CDEV_MAJOR, n);
}

/* Is a function of GROUP other than DEV bound to vfio-pci? */
static int group_on_vfio(const char *group, const char *dev) {
        char p[PATH_MAX], other[PATH_MAX], drv[64];
        int found = 0;
        snprintf(p, sizeof(p), "%s/kernel/iommu_groups/%s/devices", backing, group);
        DIR *d = opendir(p);
        for (struct dirent *de; d && !found && (de = readdir(d));)
                found = de->d_name[0] != '.' && device_dir("pci", de->d_name, other) == 0 && strcmp(other, dev) != 0 &&
                        bound_to(other, drv, sizeof(drv)) && !strcmp(drv, "vfio-pci");
        if (d)
                closedir(d);
        return found;
}

/* vfio-pci let go of DEV: its vfio-dev goes, and the group's char device with the last function. */
static void vfio_remove(const char *dev) {
        char group[32], rel[PATH_MAX], node[64];
        remove_cards(dev, "vfio-dev");
        iommu_group(dev, group, sizeof(group));
        if (!group[0] || group_on_vfio(group, dev))
                return;
        snprintf(rel, sizeof(rel), "devices/virtual/vfio/%s", group);
        snprintf(node, sizeof(node), "vfio/%s", group);
        drop_node(rel, node);
        rm_rf(rel);
        snprintf(rel, sizeof(rel), "class/vfio/%s", group);
        unlink_rel(rel);
}

/* The nodes through which a user holds DEV on vfio-pci: its group's and its vfio cdev; how many. */
static size_t vfio_devs(const char *dev, dev_t *devs, size_t max) {
        char group[32];
        size_t n = card_devs(dev, "vfio-dev");
        n = n < max ? n : max;
        memcpy(devs, walk_devs, n * sizeof(*devs));
        iommu_group(dev, group, sizeof(group));
        dev_t g = group[0] ? class_devnum("vfio", group) : 0;
        if (g && n < max)
                devs[n++] = g;
        return n;
}

/* ---------- nvidia ---------- */

#define NVIDIA_MAJOR 195

/* /proc/driver/nvidia/gpus/ADDR/information (fakeproc/ here) exists while ADDR is bound to
 * nvidia; its text is origin.py's, in .fakesys/nvidia/ADDR. */
static void nvidia_proc(const char *name, int bound) {
        char rel[PATH_MAX], text[4096], p[PATH_MAX];
        snprintf(rel, sizeof(rel), "fakeproc/driver/nvidia/gpus/%s", name);
        if (!bound) {
                rm_rf(rel);
                return;
        }
        snprintf(p, sizeof(p), ".fakesys/nvidia/%s", name);
        if (read_rel(p, text, sizeof(text)) < 0)
                return;
        full(p, rel);
        mkdirs(p);
        snprintf(p, sizeof(p), "%s/information", rel);
        write_rel(p, text);
}

/* The GPU's own node /dev/nvidiaN, N its "Device Minor" (nv_pci_probe numbers the GPUs); 0 when
 * it has none. */
static dev_t nvidia_gpu_dev(const char *name) {
        char rel[PATH_MAX], text[4096];
        snprintf(rel, sizeof(rel), ".fakesys/nvidia/%s", name);
        if (read_rel(rel, text, sizeof(text)) < 0 || !strstr(text, "Device Minor:"))
                return 0;
        return makedev(NVIDIA_MAJOR, (unsigned) atoi(strstr(text, "Device Minor:") + 13));
}

/* ---------- framebuffers and fbcon ---------- */

static int is_boot_fb(const char *name) {
        return !strncmp(name, "efi-framebuffer.", 16) || !strncmp(name, "simple-framebuffer.", 19);
}

/* Registered framebuffers: bound boot framebuffers and DRM cards (fbdev emulation). */
static int fb_count(void) {
        char p[PATH_MAX], dev[PATH_MAX], drv[64];
        int count = 0;
        snprintf(p, sizeof(p), "%s/bus/platform/devices", backing);
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));)
                if (is_boot_fb(de->d_name) && device_dir("platform", de->d_name, dev) == 0 &&
                    bound_to(dev, drv, sizeof(drv)))
                        count++;
        if (d)
                closedir(d);
        snprintf(p, sizeof(p), "%s/class/drm", backing);
        d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));) {
                unsigned n;
                int len = 0;
                if (sscanf(de->d_name, "card%u%n", &n, &len) == 1 && !de->d_name[len])
                        count++;
        }
        if (d)
                closedir(d);
        return count;
}

/* fbcon's vtcon (by name), "" if it has none. */
static void fbcon_vtcon(char *out, size_t size) {
        char p[PATH_MAX], rel[PATH_MAX], name[128];
        out[0] = '\0';
        snprintf(p, sizeof(p), "%s/class/vtconsole", backing);
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));) {
                snprintf(rel, sizeof(rel), "class/vtconsole/%s/name", de->d_name);
                if (de->d_name[0] != '.' && read_rel(rel, name, sizeof(name)) > 0 &&
                    strstr(name, "frame buffer device"))
                        snprintf(out, size, "%s", de->d_name);
        }
        if (d)
                closedir(d);
}

/* fbcon unregisters its console driver with the last framebuffer and takes the consoles over
 * again, as a new vtcon bound, when the next one registers. */
static void fbcon_update(void) {
        char vt[64], rel[PATH_MAX], dir[PATH_MAX];
        int fbs = fb_count();
        fbcon_vtcon(vt, sizeof(vt));
        if (!fbs && vt[0]) {
                snprintf(rel, sizeof(rel), "devices/virtual/vtconsole/%s", vt);
                rm_rf(rel);
                snprintf(rel, sizeof(rel), "class/vtconsole/%s", vt);
                unlink_rel(rel);
        } else if (fbs && !vt[0]) {
                int n = lowest_free("class/vtconsole", "vtcon");
                snprintf(dir, sizeof(dir), "devices/virtual/vtconsole/vtcon%d", n);
                full(rel, dir);
                mkdirs(rel);
                snprintf(rel, sizeof(rel), "%s/uevent", dir);
                write_rel(rel, "");
                snprintf(rel, sizeof(rel), "%s/name", dir);
                write_rel(rel, "(M) frame buffer device\n");
                snprintf(rel, sizeof(rel), "%s/bind", dir);
                write_rel(rel, "1\n");
                snprintf(rel, sizeof(rel), "%s/subsystem", dir);
                make_link(rel, "class/vtconsole");
                snprintf(rel, sizeof(rel), "class/vtconsole/vtcon%d", n);
                make_link(rel, dir);
        }
}

/* The PCI function (device dir) whose aperture boot framebuffer DEV (device dir) shows: its
 * parent when it is a PCI device, else the boot_vga one. 0 when found. */
static int boot_fb_gpu(const char *fbdev, char out[PATH_MAX]) {
        char rel[PATH_MAX], sub[64], p[PATH_MAX], val[16];
        snprintf(rel, sizeof(rel), "%s", fbdev);
        char *slash = strrchr(rel, '/');
        if (slash) {
                *slash = '\0';
                snprintf(p, sizeof(p), "%s/subsystem", rel);
                link_base(p, sub, sizeof(sub));
                if (!strcmp(sub, "pci")) {
                        snprintf(out, PATH_MAX, "%s", rel);
                        return 0;
                }
        }
        snprintf(p, sizeof(p), "%s/bus/pci/devices", backing);
        DIR *d = opendir(p);
        int r = -1;
        for (struct dirent *de; d && r < 0 && (de = readdir(d));) {
                if (de->d_name[0] == '.' || device_dir("pci", de->d_name, out) < 0)
                        continue;
                snprintf(rel, sizeof(rel), "%s/boot_vga", out);
                if (read_rel(rel, val, sizeof(val)) > 0 && atoi(val) == 1)
                        r = 0;
        }
        if (d)
                closedir(d);
        return r;
}

/* A DRM driver's or vfio-pci's probe of PCI function DEV takes its aperture over: the boot
 * framebuffer showing it is unregistered as a platform device, for good. */
static void remove_boot_fb(const char *dev) {
        char p[PATH_MAX], fbdev[PATH_MAX], gpu[PATH_MAX], drv[64], rel[PATH_MAX];
        snprintf(p, sizeof(p), "%s/bus/platform/devices", backing);
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));) {
                if (!is_boot_fb(de->d_name) || device_dir("platform", de->d_name, fbdev) < 0 ||
                    boot_fb_gpu(fbdev, gpu) < 0 || strcmp(gpu, dev) != 0)
                        continue;
                if (bound_to(fbdev, drv, sizeof(drv))) {
                        snprintf(rel, sizeof(rel), "bus/platform/drivers/%s/%s", drv, de->d_name);
                        unlink_rel(rel);
                }
                snprintf(rel, sizeof(rel), "bus/platform/devices/%s", de->d_name);
                unlink_rel(rel);
                rm_rf(fbdev);
        }
        if (d)
                closedir(d);
        fbcon_update();
}

/* ---------- events (async probe, delayed drm card) ---------- */

enum ev_kind { EV_BIND, EV_DRM };
static struct event {
        int used;
        enum ev_kind kind;
        long due;
        char bus[32], drv[64], name[64], dev[PATH_MAX];
} events[64];

static int pending(const char *dev, enum ev_kind kind) {
        for (size_t i = 0; i < 64; i++)
                if (events[i].used && events[i].kind == kind && !strcmp(events[i].dev, dev))
                        return 1;
        return 0;
}

static void cancel(const char *dev) {
        for (size_t i = 0; i < 64; i++)
                if (events[i].used && !strcmp(events[i].dev, dev))
                        events[i].used = 0;
}

static void do_event(const struct event *e);

static void schedule(enum ev_kind kind, long ms, const char *bus, const char *drv, const char *name,
                     const char *dev) {
        struct event e = { .used = 1, .kind = kind, .due = now_ms() + ms };
        snprintf(e.bus, sizeof(e.bus), "%s", bus);
        snprintf(e.drv, sizeof(e.drv), "%s", drv);
        snprintf(e.name, sizeof(e.name), "%s", name);
        snprintf(e.dev, sizeof(e.dev), "%s", dev);
        if (ms <= 0) {
                do_event(&e);
                return;
        }
        for (size_t i = 0; i < 64; i++)
                if (!events[i].used) {
                        events[i] = e;
                        pthread_cond_signal(&wake);
                        return;
                }
        do_event(&e);   /* table full: complete at once rather than lose it */
}

static void do_event(const struct event *e) {
        char rel[PATH_MAX], target[PATH_MAX];
        if (e->kind == EV_DRM) {
                add_drm(e->dev);
                return;
        }
        snprintf(rel, sizeof(rel), "%s/driver", e->dev);
        snprintf(target, sizeof(target), "bus/%s/drivers/%s", e->bus, e->drv);
        make_link(rel, target);
        snprintf(rel, sizeof(rel), "bus/%s/drivers/%s/%s", e->bus, e->drv, e->name);
        make_link(rel, e->dev);
        uevent_driver(e->dev, e->drv);
        if (!strcmp(e->bus, "pci") && !strcmp(e->drv, "vfio-pci"))
                vfio_add(e->dev);
        if (!strcmp(e->bus, "pci") && pci_display_class(e->dev)) {
                if (strcmp(e->drv, "pci-stub") != 0)
                        remove_boot_fb(e->dev);         /* vfio-pci's probe too */
                if (is_display(e->drv))
                        schedule(EV_DRM, delay_ms("drm"), e->bus, e->drv, e->name, e->dev);
        }
        if (!strcmp(e->drv, "snd_hda_intel"))
                add_sound(e->dev);
        if (!strcmp(e->drv, "nvidia"))
                nvidia_proc(e->name, 1);
        if (!strcmp(e->bus, "platform") && is_boot_fb(e->name))
                fbcon_update();
}

static void *event_thread(void *arg) {
        pthread_mutex_lock(&lock);
        for (;;) {
                long next = -1, now = now_ms();
                for (size_t i = 0; i < 64; i++) {
                        if (!events[i].used)
                                continue;
                        if (events[i].due <= now) {
                                struct event e = events[i];
                                events[i].used = 0;
                                do_event(&e);
                                now = now_ms();
                                i = (size_t) -1;        /* rescan: do_event may add events */
                                next = -1;
                                continue;
                        }
                        if (next < 0 || events[i].due < next)
                                next = events[i].due;
                }
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                long wait = next < 0 ? 3600000 : next - now;
                ts.tv_sec += wait / 1000;
                ts.tv_nsec += (wait % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&wake, &lock, &ts);
        }
        return NULL;
}

/* ---------- attribute stores ---------- */

static int store_unbind(const char *bus, const char *drv, const char *name) {
        char dev[PATH_MAX], cur[64], rel[PATH_MAX];
        if (device_dir(bus, name, dev) < 0 || !bound_to(dev, cur, sizeof(cur)) || strcmp(cur, drv))
                return -ENODEV;
        long ms = delay_ms("unbind");
        if (ms > 0) {   /* a slow driver remove(): others may read sysfs meanwhile */
                pthread_mutex_unlock(&lock);
                usleep((useconds_t) ms * 1000);
                pthread_mutex_lock(&lock);
        }
        cancel(dev);
        remove_cards(dev, "drm");
        remove_cards(dev, "sound");
        snprintf(rel, sizeof(rel), "%s/driver", dev);
        unlink_rel(rel);
        snprintf(rel, sizeof(rel), "bus/%s/drivers/%s/%s", bus, drv, name);
        unlink_rel(rel);
        if (!strcmp(bus, "pci") && !strcmp(drv, "vfio-pci"))
                vfio_remove(dev);
        if (!strcmp(drv, "nvidia"))
                nvidia_proc(name, 0);
        uevent_driver(dev, "");
        fbcon_update();
        return 0;
}

static int store_bind(const char *bus, const char *drv, const char *name) {
        char dev[PATH_MAX], cur[64];
        if (device_dir(bus, name, dev) < 0 || !driver_registered(bus, drv) ||
            !driver_matches(bus, dev, name, drv))
                return -ENODEV;
        if (bound_to(dev, cur, sizeof(cur)) || pending(dev, EV_BIND))
                return -EBUSY;
        schedule(EV_BIND, delay_ms("probe"), bus, drv, name, dev);
        return 0;
}

static int store_probe(const char *bus, const char *name) {
        char dev[PATH_MAX], cur[64], buf[8192], b[32], d[64];
        if (device_dir(bus, name, dev) < 0)
                return -ENODEV;
        if (bound_to(dev, cur, sizeof(cur)) || pending(dev, EV_BIND))
                return 0;
        if (read_rel(".fakesys/drivers", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %63s", b, d) == 2 && !strcmp(b, bus) &&
                    driver_matches(bus, dev, name, d)) {
                        schedule(EV_BIND, delay_ms("probe"), bus, d, name, dev);
                        break;
                }
        return 0;       /* no matching driver: the kernel leaves it unbound and succeeds */
}

/* ---------- modules: delete_module and finit_module (kernel/module/main.c) ---------- */

struct bound {
        char name[64], dev[PATH_MAX];
};

/* The devices bound to BUS's driver DRV (the links in its directory); how many. */
static size_t driver_devices(const char *bus, const char *drv, struct bound *out, size_t max) {
        char p[PATH_MAX];
        size_t n = 0;
        snprintf(p, sizeof(p), "%s/bus/%s/drivers/%s", backing, bus, drv);
        DIR *d = opendir(p);
        for (struct dirent *de; d && n < max && (de = readdir(d));)
                if (de->d_type == DT_LNK && strcmp(de->d_name, "module") &&
                    device_dir(bus, de->d_name, out[n].dev) == 0) {
                        snprintf(out[n].name, sizeof(out[n].name), "%s", de->d_name);
                        n++;
                }
        if (d)
                closedir(d);
        return n;
}

/* The drivers MOD registered, "BUS:DRV" as /module/MOD/drivers names them; how many. */
static size_t module_drivers(const char *mod, char out[][128], size_t max) {
        char p[PATH_MAX];
        size_t n = 0;
        snprintf(p, sizeof(p), "%s/module/%s/drivers", backing, mod);
        DIR *d = opendir(p);
        for (struct dirent *de; d && n < max && (de = readdir(d));)
                if (strchr(de->d_name, ':'))
                        snprintf(out[n++], 128, "%s", de->d_name);
        if (d)
                closedir(d);
        return n;
}

static size_t add_devs(dev_t *devs, size_t n, size_t max, size_t k) {
        k = k < max - n ? k : max - n;
        memcpy(devs + n, walk_devs, k * sizeof(*devs));
        return n + k;
}

/* The nodes whose open() takes a reference on MOD (the file_operations' owner): its own char
 * devices, and of the devices bound to its drivers their sound, vfio and DRM nodes (the DRM ones
 * of nvidia's devices are nvidia_drm's); how many. */
static size_t module_nodes(const char *mod, dev_t *devs, size_t max) {
        char drivers[16][128], bus[32], drv[64], other[64];
        struct bound b[16];
        unsigned major, minor;
        size_t n = 0, lines = module_table();
        struct modline mine[32];
        size_t m = 0;
        for (size_t i = 0; i < lines && m < 32; i++)
                if (!strcmp(modtab[i].mod, mod))
                        mine[m++] = modtab[i];
        for (size_t i = 0; i < m; i++) {
                if (!strcmp(mine[i].kind, "node") && sscanf(mine[i].args, "%*s %u %u", &major, &minor) == 2 && n < max)
                        devs[n++] = makedev(major, minor);
                if (!strcmp(mine[i].kind, "drm"))
                        for (size_t k = 0, c = driver_devices("pci", mine[i].args, b, 16); k < c; k++)
                                n = add_devs(devs, n, max, card_devs(b[k].dev, "drm"));
        }
        for (size_t i = 0, c = module_drivers(mod, drivers, 16); i < c; i++) {
                if (sscanf(drivers[i], "%31[^:]:%63s", bus, drv) != 2)
                        continue;
                for (size_t k = 0, nb = driver_devices(bus, drv, b, 16); k < nb; k++) {
                        n = add_devs(devs, n, max, card_devs(b[k].dev, "sound"));
                        if (!drm_module(drv, other, sizeof(other)))
                                n = add_devs(devs, n, max, card_devs(b[k].dev, "drm"));
                        if (!strcmp(drv, "vfio-pci"))
                                n += vfio_devs(b[k].dev, devs + n, max - n);
                }
        }
        return n;
}

/* /module/MOD/refcnt: the file's own count (a test sets it to keep the module busy) and one per
 * open file of the module's nodes, in any process. */
static long module_refcnt(const char *mod) {
        char rel[PATH_MAX], buf[32];
        dev_t devs[64];
        snprintf(rel, sizeof(rel), "module/%s/refcnt", mod);
        long own = read_rel(rel, buf, sizeof(buf)) > 0 ? atol(buf) : 0;
        return own + holders(devs, module_nodes(mod, devs, 64), 0);
}

static int dir_empty(const char *rel) {
        char p[PATH_MAX];
        int empty = 1;
        full(p, rel);
        DIR *d = opendir(p);
        for (struct dirent *de; d && empty && (de = readdir(d));)
                empty = de->d_name[0] == '.';
        if (d)
                closedir(d);
        return empty;
}

/* A char device of the module's own: "DEVNAME MAJOR MINOR [DIR]", with DIR a class device
 * (devices/virtual/CLASS/NAME: kfd, the vfio container), else a bare register_chrdev node. */
static void module_node(const char *args, int add) {
        char devname[128], dir[PATH_MAX] = "", cls[64] = "", p[PATH_MAX];
        int major, minor;
        if (sscanf(args, "%127s %d %d %4095s", devname, &major, &minor, dir) < 3)
                return;
        if (!dir[0]) {
                if (add)
                        add_node("", devname, major, minor);
                else
                        drop_node("", devname);
                return;
        }
        sscanf(dir, "devices/virtual/%63[^/]", cls);
        if (add) {
                full(p, dir);
                *strrchr(p, '/') = '\0';
                mkdirs(p);
                add_class_dev(dir, NULL, cls, devname, major, minor);
                return;
        }
        drop_node(dir, devname);
        rm_rf(dir);
        snprintf(p, sizeof(p), "class/%s/%s", cls, strrchr(dir, '/') + 1);
        unlink_rel(p);
}

/* .fakesys/drivers without BUS's DRV, or with it appended (its LINE). */
static void drivers_file(const char *bus, const char *drv, const char *line) {
        char buf[8192], out[8192] = "", b[32], d[64];
        size_t len = 0;
        if (read_rel(".fakesys/drivers", buf, sizeof(buf)) < 0)
                buf[0] = '\0';
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %63s", b, d) == 2 && (strcmp(b, bus) || strcmp(d, drv)))
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s\n", l);
        if (line)
                snprintf(out + len, sizeof(out) - len, "%s\n", line);
        write_rel(".fakesys/drivers", out);
}

/* driver_unregister: every device bound to it is unbound as by an unbind write, its pending
 * probes never complete, its directory goes. */
static void driver_unregister(const char *bus, const char *drv) {
        struct bound b[16];
        char rel[PATH_MAX];
        for (size_t i = 0, n = driver_devices(bus, drv, b, 16); i < n; i++)
                store_unbind(bus, drv, b[i].name);
        for (size_t i = 0; i < 64; i++)
                if (events[i].used && events[i].kind == EV_BIND && !strcmp(events[i].bus, bus) &&
                    !strcmp(events[i].drv, drv))
                        events[i].used = 0;
        snprintf(rel, sizeof(rel), "bus/%s/drivers/%s", bus, drv);
        rm_rf(rel);
        drivers_file(bus, drv, NULL);
}

/* driver_register and driver_attach: the driver's directory, then each unbound device it matches
 * (its ids, or a driver_override naming it; one naming another driver keeps it away) is probed
 * as by drivers_probe. ARGS: "BUS DRIVER ID...". */
static void driver_register(const char *mod, const char *args) {
        static const char *const attrs[] = { "bind", "unbind", "uevent", "new_id", "remove_id" };
        char bus[32], drv[64], rel[PATH_MAX], p[PATH_MAX], cur[64], target[PATH_MAX];
        if (sscanf(args, "%31s %63s", bus, drv) != 2)
                return;
        for (size_t i = 0; i < (strcmp(bus, "pci") ? 3 : 5); i++) {
                snprintf(rel, sizeof(rel), "bus/%s/drivers/%s/%s", bus, drv, attrs[i]);
                full(p, rel);
                *strrchr(p, '/') = '\0';
                mkdirs(p);
                write_rel(rel, "");
                full(p, rel);
                chmod(p, 0200);
        }
        snprintf(rel, sizeof(rel), "bus/%s/drivers/%s/module", bus, drv);
        snprintf(target, sizeof(target), "module/%s", mod);
        make_link(rel, target);
        snprintf(rel, sizeof(rel), "module/%s/drivers/%s:%s", mod, bus, drv);
        snprintf(target, sizeof(target), "bus/%s/drivers/%s", bus, drv);
        make_link(rel, target);
        drivers_file(bus, drv, args);
        snprintf(p, sizeof(p), "%s/bus/%s/devices", backing, bus);
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));) {
                char dev[PATH_MAX];
                if (de->d_name[0] == '.' || device_dir(bus, de->d_name, dev) < 0 ||
                    bound_to(dev, cur, sizeof(cur)) || pending(dev, EV_BIND) || !driver_matches(bus, dev, de->d_name, drv))
                        continue;
                schedule(EV_BIND, delay_ms("probe"), bus, drv, de->d_name, dev);
        }
        if (d)
                closedir(d);
}

/* delete_module(NAME, O_NONBLOCK): its exit unregisters its drivers and removes its char
 * devices; the DRM cards it gave another driver's devices go. */
static int store_unload(const char *mod) {
        char rel[PATH_MAX], drivers[16][128], bus[32], drv[64], p[PATH_MAX];
        struct modline mine[32];
        struct bound b[16];
        size_t m = 0, lines = module_table();
        snprintf(rel, sizeof(rel), "module/%s/holders", mod);
        if (strchr(mod, '/') || !mod[0] || !module_loaded(mod))
                return -ENOENT;
        if (!dir_empty(rel) || module_refcnt(mod) > 0)
                return -EWOULDBLOCK;
        for (size_t i = 0; i < lines && m < 32; i++)
                if (!strcmp(modtab[i].mod, mod))
                        mine[m++] = modtab[i];
        for (size_t i = 0, n = module_drivers(mod, drivers, 16); i < n; i++)
                if (sscanf(drivers[i], "%31[^:]:%63s", bus, drv) == 2)
                        driver_unregister(bus, drv);
        for (size_t i = 0; i < m; i++) {
                if (!strcmp(mine[i].kind, "node"))
                        module_node(mine[i].args, 0);
                if (!strcmp(mine[i].kind, "drm"))
                        for (size_t k = 0, n = driver_devices("pci", mine[i].args, b, 16); k < n; k++) {
                                cancel(b[k].dev);
                                remove_cards(b[k].dev, "drm");
                        }
        }
        fbcon_update();
        /* it leaves its dependencies' holders/ */
        full(p, "module");
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));) {
                snprintf(rel, sizeof(rel), "module/%s/holders/%s", de->d_name, mod);
                if (de->d_name[0] != '.')
                        unlink_rel(rel);
        }
        if (d)
                closedir(d);
        snprintf(rel, sizeof(rel), "module/%s", mod);
        rm_rf(rel);
        if (!strcmp(mod, "nvidia"))     /* its proc directory goes with it */
                rm_rf("fakeproc/driver/nvidia");
        return 0;
}

/* finit_module of NAME's file: ENOENT for a name no module on disk has, or a dependency not
 * loaded (the kernel's "Unknown symbol"); EEXIST when loaded. Its init makes /module/NAME, joins
 * its dependencies' holders/, makes its char devices, registers its drivers (which probe) and
 * gives the devices of the driver it serves DRM for their cards. */
static int store_load(const char *mod) {
        char rel[PATH_MAX], target[PATH_MAX], dep[64];
        struct modline mine[32];
        struct bound b[16];
        size_t m = 0, lines = module_table();
        int off;
        if (strchr(mod, '/') || !mod[0])
                return -ENOENT;
        if (module_loaded(mod))
                return -EEXIST;
        for (size_t i = 0; i < lines && m < 32; i++)
                if (!strcmp(modtab[i].mod, mod))
                        mine[m++] = modtab[i];
        if (!m)
                return -ENOENT;
        for (size_t i = 0; i < m; i++)
                if (!strcmp(mine[i].kind, "depends"))
                        for (const char *a = mine[i].args; sscanf(a, "%63s%n", dep, &off) == 1; a += off)
                                if (!module_loaded(dep))
                                        return -ENOENT;
        snprintf(rel, sizeof(rel), "module/%s/initstate", mod);
        full(target, rel);
        *strrchr(target, '/') = '\0';
        mkdirs(target);
        write_rel(rel, "live\n");
        snprintf(rel, sizeof(rel), "module/%s/refcnt", mod);
        write_rel(rel, "0\n");
        for (size_t i = 0; i < 2; i++) {
                snprintf(rel, sizeof(rel), "%s/module/%s/%s", backing, mod, i ? "drivers" : "holders");
                mkdir(rel, 0755);
        }
        for (size_t i = 0; i < m; i++) {
                if (!strcmp(mine[i].kind, "depends"))
                        for (const char *a = mine[i].args; sscanf(a, "%63s%n", dep, &off) == 1; a += off) {
                                snprintf(rel, sizeof(rel), "module/%s/holders/%s", dep, mod);
                                snprintf(target, sizeof(target), "module/%s", mod);
                                make_link(rel, target);
                        }
                if (!strcmp(mine[i].kind, "node"))
                        module_node(mine[i].args, 1);
        }
        for (size_t i = 0; i < m; i++) {
                if (!strcmp(mine[i].kind, "driver"))
                        driver_register(mod, mine[i].args);
                if (!strcmp(mine[i].kind, "drm"))
                        for (size_t k = 0, n = driver_devices("pci", mine[i].args, b, 16); k < n; k++)
                                if (pci_display_class(b[k].dev) && !pending(b[k].dev, EV_DRM))
                                        schedule(EV_DRM, delay_ms("drm"), "pci", mine[i].args, b[k].name, b[k].dev);
        }
        return 0;
}

/* A write of "unload NAME" or "load NAME" to .fakesys/module (kmodtrap's, for a trapped
 * syscall): the syscall's errno. */
static int store_module(const char *value) {
        char verb[16], mod[128];
        if (sscanf(value, "%15s %127s", verb, mod) != 2)
                return -EINVAL;
        if (!strcmp(verb, "unload"))
                return store_unload(mod);
        if (!strcmp(verb, "load"))
                return store_load(mod);
        return -EINVAL;
}

static int store_override(const char *rel, const char *value) {
        char text[300];
        if (strlen(value) >= 256)
                return -EINVAL;
        snprintf(text, sizeof(text), "%s\n", value[0] ? value : "(null)");
        return write_rel(rel, text);
}

/* vt.c's store_bind: simple_strtoul (anything else reads as 0: unbind), never an error; a
 * system console ("(S)", not registered by a module) ignores it. */
static int store_vtcon(const char *rel, const char *value) {
        char name[PATH_MAX], text[128];
        snprintf(name, sizeof(name), "%.*s/name", (int) (strrchr(rel, '/') - rel), rel);
        if (read_rel(name, text, sizeof(text)) > 0 && !strncmp(text, "(S)", 3))
                return 0;
        write_rel(rel, strtoul(value, NULL, 0) ? "1\n" : "0\n");
        return 0;
}

/* pci-sysfs.c's resourceN_resize store: kstrtoul (base 0) of the size value n (1 MB << n);
 * -EBUSY while a driver is bound; -EINVAL for a size not in the BAR's mask (what reading the file
 * gives: "%016llx", bit n = 1 MB << n); else the BAR takes the size: its line in `resource` ends
 * at start + size - 1 (the kernel assigns the BARs again; here they keep their start). */
static int store_resize(const char *rel, unsigned bar, const char *value) {
        char dev[PATH_MAX], cur[64], text[64], res[PATH_MAX], lines[4096], out[4096] = "", *end;
        unsigned long n;
        size_t len = 0;
        unsigned i = 0;

        errno = 0;
        n = strtoul(value, &end, 0);
        if (!value[0] || *end || errno || bar > 5)
                return -EINVAL;
        snprintf(dev, sizeof(dev), "%.*s", (int) (strrchr(rel, '/') - rel), rel);
        if (bound_to(dev, cur, sizeof(cur)))
                return -EBUSY;
        if (read_rel(rel, text, sizeof(text)) < 0 || n >= 64 || !(strtoull(text, NULL, 16) & (1ULL << n)))
                return -EINVAL;
        snprintf(res, sizeof(res), "%s/resource", dev);
        if (read_rel(res, lines, sizeof(lines)) < 0)
                return -EIO;
        for (char *save = NULL, *l = strtok_r(lines, "\n", &save); l; l = strtok_r(NULL, "\n", &save), i++) {
                unsigned long long start, last, flags;
                if (i == bar && sscanf(l, "%llx %llx %llx", &start, &last, &flags) == 3)
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "0x%016llx 0x%016llx 0x%016llx\n",
                                                 start, start + ((1ULL << 20) << n) - 1, flags);
                else
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s\n", l);
        }
        return write_rel(res, out);
}

/* pci.c's reset_method store: "" disables every method, "default" enables every one the device
 * supports (in the kernel's order), else each name of the space-separated list must be one the
 * device supports (-EINVAL otherwise, nothing changed). What the device supports, in the kernel's
 * order, is origin.py's line for it in .fakesys/reset_methods ("NAME METHOD..."), device_specific
 * included when vendor-reset is loaded and knows it. Shown as the list, nothing when empty. */
static int store_reset_method(const char *rel, const char *value) {
        static const char *const known[] = { "device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus" };
        char dev[PATH_MAX], buf[4096], supported[512] = "", list[512] = "", words[512];
        const char *name;
        size_t len = 0;

        snprintf(dev, sizeof(dev), "%.*s", (int) (strrchr(rel, '/') - rel), rel);
        name = strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev;
        if (read_rel(".fakesys/reset_methods", buf, sizeof(buf)) >= 0)
                for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                        if (!strncmp(l, name, strlen(name)) && l[strlen(name)] == ' ')
                                snprintf(supported, sizeof(supported), " %s ", l + strlen(name) + 1);
        if (!value[0])
                return write_rel(rel, "");
        if (!strcmp(value, "default")) {
                for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
                        char w[32];
                        snprintf(w, sizeof(w), " %s ", known[i]);
                        if (strstr(supported, w))
                                len += (size_t) snprintf(list + len, sizeof(list) - len, "%s%s", len ? " " : "", known[i]);
                }
        } else {
                snprintf(words, sizeof(words), "%s", value);
                for (char *save = NULL, *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
                        char pad[64];
                        snprintf(pad, sizeof(pad), " %s ", w);
                        if (!strstr(supported, pad))
                                return -EINVAL;
                        len += (size_t) snprintf(list + len, sizeof(list) - len, "%s%s", len ? " " : "", w);
                }
        }
        if (len)
                snprintf(list + len, sizeof(list) - len, "\n");
        return write_rel(rel, list);
}

static int is_vtcon_bind(const char *rel) {
        const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
        return !strncmp(rel, "devices/virtual/vtconsole/", 26) && !strcmp(base, "bind");
}

static int is_trigger(const char *base) {
        static const char *const names[] = { "bind", "unbind", "new_id", "remove_id",
                "drivers_probe", "drivers_autoprobe", "uevent", "remove", "rescan", "reset" };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (!strcmp(base, names[i]))
                        return 1;
        return 0;
}

/* ---------- huge pages, compaction, cpufreq ---------- */

static long memory_value(const char *key) {
        return control_value(".fakesys/memory", key);
}

static void memory_set(const char *key, long value) {
        char buf[1024], out[1024] = "", k[32];
        size_t len = 0;
        long v;
        if (read_rel(".fakesys/memory", buf, sizeof(buf)) < 0)
                buf[0] = '\0';
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %ld", k, &v) == 2 && strcmp(k, key))
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s %ld\n", k, v);
        snprintf(out + len, sizeof(out) - len, "%s %ld\n", key, value);
        write_rel(".fakesys/memory", out);
}

static long pool_value(const char *pool, const char *file) {
        char rel[PATH_MAX], buf[64];
        snprintf(rel, sizeof(rel), "kernel/mm/hugepages/%s/%s", pool, file);
        return read_rel(rel, buf, sizeof(buf)) > 0 ? atol(buf) : 0;
}

static void pool_set(const char *pool, const char *file, long value) {
        char rel[PATH_MAX], text[32];
        snprintf(rel, sizeof(rel), "kernel/mm/hugepages/%s/%s", pool, file);
        snprintf(text, sizeof(text), "%ld\n", value);
        write_rel(rel, text);
}

/* kB held by every pool (nr_hugepages counts the surplus pages too). */
static long pools_kb(void) {
        char p[PATH_MAX];
        long kb, total = 0;
        full(p, "kernel/mm/hugepages");
        DIR *d = opendir(p);
        for (struct dirent *de; d && (de = readdir(d));)
                if (sscanf(de->d_name, "hugepages-%ldkB", &kb) == 1)
                        total += kb * pool_value(de->d_name, "nr_hugepages");
        if (d)
                closedir(d);
        return total;
}

/* set_max_huge_pages, on the counts: nr (all pages), surplus, free (reserved ones included), resv. */
static int store_hugepages(const char *pool, const char *value) {
        char *end;
        long kb;
        errno = 0;
        unsigned long want = strtoul(value, &end, 10);
        if (end == value || *end || errno || value[0] == '-' || sscanf(pool, "hugepages-%ldkB", &kb) != 1 || kb <= 0)
                return -EINVAL;
        long nr = pool_value(pool, "nr_hugepages"), surplus = pool_value(pool, "surplus_hugepages"),
             free = pool_value(pool, "free_hugepages"), resv = pool_value(pool, "resv_hugepages"),
             count = want > (unsigned long) LONG_MAX ? LONG_MAX : (long) want;
        /* Increase: surplus pages become persistent first, then fresh pages are allocated. */
        while (surplus && count > nr - surplus)
                surplus--;
        if (count > nr - surplus) {
                long left = memory_value("hugepages") - memory_value("fragmented") - pools_kb();
                long can = left > 0 ? left / kb : 0, add = can < count - (nr - surplus) ? can : count - (nr - surplus);
                nr += add;
                free += add;
        }
        /* Decrease: free pages go, keeping those in use and reserved; then surplus. */
        long min_count = resv + nr - free > count ? resv + nr - free : count;
        while (min_count < nr - surplus && free > 0) {
                nr--;
                free--;
        }
        while (count < nr - surplus && surplus < nr)
                surplus++;
        pool_set(pool, "nr_hugepages", nr);
        pool_set(pool, "free_hugepages", free);
        pool_set(pool, "surplus_hugepages", surplus);
        return 0;
}

static int store_compact(const char *value) {
        if (strcmp(value, "1"))
                return -EINVAL;
        memory_set("fragmented", 0);
        return 0;
}

/* An offline CPU's cpufreq files: "devices/system/cpu/cpuN/cpufreq/..." with cpuN/online 0. */
static int cpufreq_inactive(const char *rel) {
        char online[PATH_MAX], buf[8];
        unsigned cpu;
        int n = 0;
        if (sscanf(rel, "devices/system/cpu/cpu%u/cpufreq/%n", &cpu, &n) != 1 || n == 0)
                return 0;
        snprintf(online, sizeof(online), "devices/system/cpu/cpu%u/online", cpu);
        return read_rel(online, buf, sizeof(buf)) > 0 && buf[0] == '0';
}

static int store_governor(const char *rel, const char *value) {
        char avail[PATH_MAX], list[1024], text[80];
        if (cpufreq_inactive(rel))
                return -EBUSY;
        snprintf(avail, sizeof(avail), "%.*s/scaling_available_governors", (int) (strrchr(rel, '/') - rel), rel);
        if (read_rel(avail, list, sizeof(list)) < 0)
                return -EINVAL;
        for (char *save = NULL, *w = strtok_r(list, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
                if (!strcmp(w, value)) {
                        snprintf(text, sizeof(text), "%s\n", value);
                        return write_rel(rel, text);
                }
        return -EINVAL;
}

/* One write(2) to an attribute: the kernel's store handler, under the lock. */
static int store(const char *rel, const char *value) {
        char bus[32], drv[64], attr[32];
        const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;

        if (sscanf(rel, "bus/%31[^/]/drivers/%63[^/]/%31s", bus, drv, attr) == 3) {
                if (!strcmp(attr, "bind"))
                        return store_bind(bus, drv, value);
                if (!strcmp(attr, "unbind"))
                        return store_unbind(bus, drv, value);
                return 0;       /* new_id, remove_id: only logged; qemu-hook must not use them */
        }
        if (sscanf(rel, "bus/%31[^/]/%31s", bus, attr) == 2 && !strcmp(attr, "drivers_probe"))
                return store_probe(bus, value);
        if (!strcmp(base, "driver_override"))
                return store_override(rel, value);
        if (is_vtcon_bind(rel))
                return store_vtcon(rel, value);
        unsigned bar;
        char tail;
        if (sscanf(base, "resource%u_resiz%c", &bar, &tail) == 2 && !strcmp(strchr(base, '_'), "_resize"))
                return store_resize(rel, bar, value);
        if (!strcmp(base, "reset_method"))
                return store_reset_method(rel, value);
        if (is_trigger(base))
                return 0;
        char pool[64];
        if (sscanf(rel, "kernel/mm/hugepages/%63[^/]/%31s", pool, attr) == 2 && !strcmp(attr, "nr_hugepages"))
                return store_hugepages(pool, value);
        if (!strcmp(rel, "fakeproc/sys/vm/compact_memory"))
                return store_compact(value);
        if (!strncmp(rel, "devices/system/cpu/", 19) && !strcmp(base, "scaling_governor"))
                return store_governor(rel, value);
        return write_rel(rel, value);   /* plain attribute: keep the value */
}

/* ---------- writes that block ---------- */

/* The writes now waiting, as .fakesys/blocked shows them. */
static struct {
        int used, pid;
        int locks;              /* holds its device's lock: 1 killable, 2 not (D) */
        char rel[PATH_MAX], value[256], dev[PATH_MAX];
} blocked[32];

static void blocked_save(void) {
        char out[8192] = "";
        size_t len = 0;
        for (size_t i = 0; i < 32; i++)
                if (blocked[i].used && len < sizeof(out))
                        len += (size_t) snprintf(out + len, sizeof(out) - len, "%s %s %d\n", blocked[i].rel,
                                                 blocked[i].value[0] ? blocked[i].value : "\"\"", blocked[i].pid);
        write_rel(".fakesys/blocked", out);
}

static int blocked_add(const char *rel, const char *value, int pid) {
        for (int i = 0; i < 32; i++)
                if (!blocked[i].used) {
                        blocked[i].used = 1;
                        blocked[i].locks = 0;
                        blocked[i].pid = pid;
                        snprintf(blocked[i].rel, sizeof(blocked[i].rel), "%s", rel);
                        snprintf(blocked[i].value, sizeof(blocked[i].value), "%s", value);
                        blocked_save();
                        return i;
                }
        return -1;
}

static void blocked_drop(int i) {
        if (i < 0)
                return;
        blocked[i].used = 0;
        blocked_save();
}

/* Does a line "PATH[=VALUE]" of .fakesys/hang name this write? */
static int hang_matches(const char *rel, const char *value) {
        char buf[8192], path[PATH_MAX], canon[PATH_MAX];
        if (read_rel(".fakesys/hang", buf, sizeof(buf)) <= 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (sscanf(l, "%4095s", path) != 1)
                        continue;
                char *want = strchr(path, '=');
                if (want)
                        *want++ = '\0';
                canonical(path, canon);
                if (!strcmp(canon, rel) && (!want || !strcmp(want, value))) {
                        char mode[8] = "";
                        return sscanf(l, "%*s %7s", mode) == 1 && !strcmp(mode, "D") ? 2 : 1;
                }
        }
        return 0;
}

/* An unbind of a function while a process holds one of its sound card's nodes (snd_card_free()
 * waits for the last close), or, from vfio-pci, its group's node or vfio cdev (vfio-pci's remove
 * waits for the user to release the device), or, from nvidia, its /dev/nvidiaN or DRM nodes
 * (nv_pci_remove waits for the GPU's usage count to drop). */
static int unbind_held(const char *rel, const char *value) {
        char bus[32], drv[64], attr[32], dev[PATH_MAX], cur[64];
        dev_t devs[64];
        if (sscanf(rel, "bus/%31[^/]/drivers/%63[^/]/%31s", bus, drv, attr) != 3 || strcmp(attr, "unbind") != 0 ||
            device_dir(bus, value, dev) < 0 || !bound_to(dev, cur, sizeof(cur)) || strcmp(cur, drv) != 0)
                return 0;
        size_t n = card_devs(dev, "sound");
        memcpy(devs, walk_devs, n * sizeof(*devs));
        if (!strcmp(bus, "pci") && !strcmp(drv, "vfio-pci"))
                n += vfio_devs(dev, devs + n, sizeof(devs) / sizeof(devs[0]) - n);
        if (!strcmp(drv, "nvidia")) {
                size_t k = card_devs(dev, "drm");
                memcpy(devs + n, walk_devs, k * sizeof(*devs));
                n += k;
                if (nvidia_gpu_dev(value))
                        devs[n++] = nvidia_gpu_dev(value);
        }
        return n && held(devs, n);
}

/* The PCI device whose device_lock() a write of VALUE to REL takes (unbind, bind, drivers_probe
 * of it, its driver_override): its directory in OUT, or 0 when it takes none. */
static int locked_device(const char *rel, const char *value, char out[PATH_MAX]) {
        char bus[32], drv[64], attr[32];
        const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
        if (sscanf(rel, "bus/%31[^/]/drivers/%63[^/]/%31s", bus, drv, attr) == 3)
                return !strcmp(bus, "pci") && (!strcmp(attr, "bind") || !strcmp(attr, "unbind")) &&
                       device_dir(bus, value, out) == 0;
        if (sscanf(rel, "bus/%31[^/]/%31s", bus, attr) == 2 && !strcmp(attr, "drivers_probe"))
                return !strcmp(bus, "pci") && device_dir(bus, value, out) == 0;
        if (!strcmp(base, "driver_override") && !strncmp(rel, "devices/", 8)) {
                snprintf(out, PATH_MAX, "%.*s", (int) (base - rel - 1), rel);
                return 1;
        }
        return 0;
}

/* Does a blocked write other than SELF hold DEV's lock? 1 killable, 2 not. */
static int lock_held(const char *dev, int self) {
        for (int i = 0; i < 32; i++)
                if (i != self && blocked[i].used && blocked[i].locks && !strcmp(blocked[i].dev, dev))
                        return blocked[i].locks;
        return 0;
}

/* Must this write wait (the slot SELF, -1 before it has one)? 0 no, 1 killable, 2 not. A write
 * waiting on a hang line or a held device holds its device's lock meanwhile (not a
 * driver_override write: driver_set_override takes it only around the assignment). */
static int must_wait(const char *rel, const char *value, int self) {
        char dev[PATH_MAX];
        int locking = locked_device(rel, value, dev);
        int held_by_other = locking ? lock_held(dev, self) : 0;
        if (held_by_other) {
                if (self >= 0)
                        blocked[self].locks = 0;
                return held_by_other;
        }
        int w = hang_matches(rel, value);
        if (!w && unbind_held(rel, value))
                w = 1;
        if (self >= 0) {
                const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
                blocked[self].locks = w && locking && strcmp(base, "driver_override") ? w : 0;
                snprintf(blocked[self].dev, sizeof(blocked[self].dev), "%s", locking ? dev : "");
        }
        return w;
}

struct job {
        int slot;
        char rel[PATH_MAX], value[4096];
};

/* Under the lock: wait, without it, while the write must; then store and log it. Returns the
 * store's result, or 1 when the writer was interrupted first (the job is not done). */
static int run_job(struct job *j, int interruptible) {
        for (int w; (w = must_wait(j->rel, j->value, j->slot));) {
                pthread_mutex_unlock(&lock);
                usleep(2000);
                int intr = interruptible && w == 1 && fuse_interrupted();
                pthread_mutex_lock(&lock);
                if (intr)
                        return 1;
        }
        int r = store(j->rel, j->value);
        log_write(j->rel, j->value, -r);
        blocked_drop(j->slot);
        return r;
}

/* The rest of an interrupted writer's job: it completes once released, as the kernel's would. */
static void *job_thread(void *arg) {
        struct job *j = arg;
        pthread_mutex_lock(&lock);
        run_job(j, 0);
        pthread_mutex_unlock(&lock);
        free(j);
        return NULL;
}

/* A write that must wait: the writer blocks; SIGKILL (a FUSE interrupt) answers it EINTR and the
 * write goes on in a thread of its own. */
static int blocking_write(const char *rel, const char *value) {
        struct job *j = calloc(1, sizeof(*j));
        pthread_t t;
        if (!j)
                return -ENOMEM;
        snprintf(j->rel, sizeof(j->rel), "%s", rel);
        snprintf(j->value, sizeof(j->value), "%s", value);
        j->slot = blocked_add(rel, value, (int) fuse_get_context()->pid);
        int r = run_job(j, 1);
        if (r == 1) {
                if (pthread_create(&t, NULL, job_thread, j) == 0) {
                        pthread_detach(t);
                        return -EINTR;
                }
                r = run_job(j, 0);
        }
        free(j);
        return r;
}

/* ---------- FUSE operations ---------- */

static int is_marker(const char *path) { return !strcmp(path, MARKER); }
static int is_module_ctl(const char *path) { return !strcmp(path, MODULE_CTL); }
static int is_control(const char *path) { return !strncmp(path, "/.fakesys/", 10); }

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
        pthread_t t;
        pthread_condattr_t ca;
        /* No caching: links and contents change behind the kernel's back. */
        cfg->entry_timeout = 0;
        cfg->attr_timeout = 0;
        cfg->negative_timeout = 0;
        cfg->direct_io = 1;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&wake, &ca);
        pthread_create(&t, NULL, event_thread, NULL);
        pthread_detach(t);
        return NULL;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        if (is_marker(path)) {
                memset(st, 0, sizeof(*st));
                st->st_mode = S_IFREG | 0444;
                st->st_nlink = 1;
                st->st_size = sizeof(MARKER_TEXT) - 1;
                return 0;
        }
        if (is_module_ctl(path)) {
                memset(st, 0, sizeof(*st));
                st->st_mode = S_IFREG | 0200;
                st->st_nlink = 1;
                return 0;
        }
        full(p, path);
        pthread_mutex_lock(&lock);
        int r = lstat(p, st) < 0 ? -errno : 0;
        pthread_mutex_unlock(&lock);
        return r;
}

static int fs_readlink(const char *path, char *buf, size_t size) {
        char p[PATH_MAX];
        full(p, path);
        pthread_mutex_lock(&lock);
        ssize_t n = readlink(p, buf, size - 1);
        int r = n < 0 ? -errno : 0;
        pthread_mutex_unlock(&lock);
        if (n >= 0)
                buf[n] = '\0';
        return r;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
        char p[PATH_MAX];
        full(p, path);
        pthread_mutex_lock(&lock);
        DIR *d = opendir(p);
        int r = d ? 0 : -errno;
        for (struct dirent *de; d && (de = readdir(d));)
                fill(buf, de->d_name, NULL, 0, 0);
        if (d)
                closedir(d);
        pthread_mutex_unlock(&lock);
        if (!r && !strcmp(path, "/.fakesys")) {
                fill(buf, "marker", NULL, 0, 0);
                fill(buf, "module", NULL, 0, 0);
        }
        return r;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        struct stat st;
        if (is_marker(path))
                return (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : -EACCES;
        if (is_module_ctl(path))
                return (fi->flags & O_ACCMODE) == O_WRONLY ? 0 : -EACCES;
        full(p, path);
        if (lstat(p, &st) < 0)
                return -errno;
        /* sysfs refuses writes to read-only attributes even for root */
        if ((fi->flags & O_ACCMODE) != O_RDONLY && !(st.st_mode & 0222))
                return -EACCES;
        if (is_control(path) && (fi->flags & O_TRUNC))
                return truncate(p, 0) < 0 ? -errno : 0;
        return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        if (is_marker(path)) {
                size_t len = sizeof(MARKER_TEXT) - 1;
                if ((size_t) off >= len)
                        return 0;
                size = size < len - (size_t) off ? size : len - (size_t) off;
                memcpy(buf, MARKER_TEXT + off, size);
                return (int) size;
        }
        full(p, path);
        pthread_mutex_lock(&lock);
        if (cpufreq_inactive(path + 1)) {
                pthread_mutex_unlock(&lock);
                return -EBUSY;
        }
        /* driver_override_show() takes the device lock */
        char dev[PATH_MAX];
        if (locked_device(path + 1, "", dev))
                for (int w; (w = lock_held(dev, -1));) {
                        pthread_mutex_unlock(&lock);
                        usleep(2000);
                        int intr = w == 1 && fuse_interrupted();
                        pthread_mutex_lock(&lock);
                        if (intr) {
                                pthread_mutex_unlock(&lock);
                                return -EINTR;
                        }
                }
        char mod[64], tail[16];
        if (sscanf(path, "/module/%63[^/]/%15s", mod, tail) == 2 && !strcmp(tail, "refcnt") && module_loaded(mod)) {
                char text[32];
                int len = snprintf(text, sizeof(text), "%ld\n", module_refcnt(mod));
                pthread_mutex_unlock(&lock);
                if (off >= len)
                        return 0;
                size = size < (size_t) (len - off) ? size : (size_t) (len - off);
                memcpy(buf, text + off, size);
                return (int) size;
        }
        int fd = open(p, O_RDONLY);
        ssize_t n = fd < 0 ? -1 : pread(fd, buf, size, off);
        int r = n < 0 ? -errno : (int) n;
        if (fd >= 0)
                close(fd);
        pthread_mutex_unlock(&lock);
        return r;
}

/* The module syscall kmodtrap trapped, "unload NAME" or "load NAME": its errno is the write's. */
static int module_write(const char *value, size_t size) {
        pthread_mutex_lock(&lock);
        int r = store_module(value);
        log_write(".fakesys/module", value, -r);
        pthread_mutex_unlock(&lock);
        return r < 0 ? r : (int) size;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi) {
        char p[PATH_MAX], value[4096];
        const char *rel = path + 1;
        int r;

        full(p, path);
        if (is_control(path) && !is_module_ctl(path)) {         /* control files are plain files */
                pthread_mutex_lock(&lock);
                /* an appending writer's offset may come from a stale size: append here */
                int fd = open(p, O_WRONLY | (fi->flags & O_APPEND));
                ssize_t n = fd < 0 ? -1 : (fi->flags & O_APPEND) ? write(fd, buf, size)
                                                                 : pwrite(fd, buf, size, off);
                r = n < 0 ? -errno : (int) n;
                if (fd >= 0)
                        close(fd);
                pthread_mutex_unlock(&lock);
                return r;
        }
        if (size >= sizeof(value))
                return -EINVAL;
        memcpy(value, buf, size);
        value[size] = '\0';
        strip_nl(value);
        if (is_module_ctl(path))
                return module_write(value, size);
        pthread_mutex_lock(&lock);
        int kill_at = kill_point();
        if (kill_at == 1) {
                kill_writer();
                log_write(rel, value, -EINTR);
                pthread_mutex_unlock(&lock);
                return -EINTR;
        }
        r = -injected(rel, value);
        if (r && is_vtcon_bind(rel)) {
                r = 0;          /* the kernel ignores a bind it cannot do: success, no change */
                log_write(rel, value, 0);
        } else if (r) {
                log_write(rel, value, -r);
        } else if (must_wait(rel, value, -1)) {
                r = blocking_write(rel, value);
        } else {
                r = store(rel, value);
                log_write(rel, value, -r);
        }
        if (kill_at == 2)
                kill_writer();
        pthread_mutex_unlock(&lock);
        return r < 0 ? r : (int) size;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        if (!is_control(path) || is_module_ctl(path))
                return 0;       /* `echo x > attr` truncates first: sysfs ignores that */
        full(p, path);
        return truncate(p, size) < 0 ? -errno : 0;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        if (!is_control(path) || is_marker(path))
                return -EACCES;
        full(p, path);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode & 0777);
        if (fd < 0)
                return -errno;
        close(fd);
        return 0;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
        return 0;
}

static const struct fuse_operations ops = {
        .init = fs_init,
        .getattr = fs_getattr,
        .readlink = fs_readlink,
        .readdir = fs_readdir,
        .open = fs_open,
        .read = fs_read,
        .write = fs_write,
        .truncate = fs_truncate,
        .create = fs_create,
        .utimens = fs_utimens,
};

/* DEV as devtmpfs and udev would have it for the tree: DEV/dri, DEV/snd, DEV/vfio and DEV/kfd
 * anew, and the bare nodes of the loaded modules (/dev/nvidia0...). */
static void populate_dev(void) {
        static const char *const classes[] = { "drm", "sound", "vfio", "vfio-dev", "misc", "kfd" };
        static const char *const cleared[] = { "dri", "snd", "vfio", "kfd" };
        char p[PATH_MAX], r[PATH_MAX], rel[PATH_MAX], text[512], devname[256];
        for (size_t c = 0; c < sizeof(cleared) / sizeof(cleared[0]); c++) {
                snprintf(p, sizeof(p), "%s/%s", devroot, cleared[c]);
                nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
                snprintf(p, sizeof(p), "%s/class/%s", backing, classes[c]);
                DIR *d = opendir(p);
                for (struct dirent *de; d && (de = readdir(d));) {
                        unsigned major = 0, minor = 0;
                        snprintf(p, sizeof(p), "%s/class/%s/%s", backing, classes[c], de->d_name);
                        if (de->d_name[0] == '.' || !realpath(p, r) || strncmp(r, backing, strlen(backing)) != 0)
                                continue;
                        snprintf(rel, sizeof(rel), "%s/uevent", r + strlen(backing) + 1);
                        devname[0] = '\0';
                        if (read_rel(rel, text, sizeof(text)) < 0)
                                continue;
                        for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                                sscanf(l, "MAJOR=%u", &major);
                                sscanf(l, "MINOR=%u", &minor);
                                sscanf(l, "DEVNAME=%255s", devname);
                        }
                        if (devname[0])
                                add_node(r + strlen(backing) + 1, devname, (int) major, (int) minor);
                }
                if (d)
                        closedir(d);
        }
        /* the bare nodes of modules (register_chrdev, no class device): those of loaded ones */
        for (size_t i = 0, n = module_table(); i < n; i++) {
                char name[128], dir[PATH_MAX] = "";
                int major, minor;
                if (strcmp(modtab[i].kind, "node") ||
                    sscanf(modtab[i].args, "%127s %d %d %4095s", name, &major, &minor, dir) != 3)
                        continue;
                drop_node("", name);
                if (module_loaded(modtab[i].mod))
                        add_node("", name, major, minor);
        }
}

int main(int argc, char **argv) {
        /* glibc sizes a new thread's malloc arena by reading /sys/devices/system/cpu/online:
         * once mounted, that is this very filesystem, and a thread asking it while holding the
         * lock never gets the answer. One arena: no such read. */
        mallopt(M_ARENA_MAX, 1);
        if (argc != 3 && argc != 4) {
                fprintf(stderr, "usage: %s BACKING MOUNTPOINT [DEV]\n", argv[0]);
                return 2;
        }
        if (!realpath(argv[1], backing)) {
                fprintf(stderr, "fakesys: %s: %m\n", argv[1]);
                return 2;
        }
        if (argc == 4) {
                if (!realpath(argv[3], devroot)) {
                        fprintf(stderr, "fakesys: %s: %m\n", argv[3]);
                        return 2;
                }
                populate_dev();
        }
        char *fargv[] = { argv[0], "-f", "-o", "allow_other,fsname=fakesys,subtype=fakesys",
                          argv[2], NULL };
        if (geteuid() != 0)
                fargv[3] = "fsname=fakesys,subtype=fakesys";
        return fuse_main(5, fargv, &ops, NULL);
}
