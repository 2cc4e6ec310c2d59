/* fakesys: a FUSE passthrough over a BACKING directory that reacts to writes the way the
 * kernel's sysfs does for the files qemu-hook touches (PCI bind/unbind/drivers_probe,
 * driver_override, vtconsole bind, platform framebuffer, DRM/sound cards appearing on bind).
 *
 * The backing tree is the whole state: a device is bound when its `driver` symlink exists.
 * Only asynchronous probes and delayed card creation live in memory (the event list).
 *
 * Control files in BACKING/.fakesys/ (see tests/lib/fakehost.py):
 *   drivers  "BUS DRIVER ID..." in registration order (pci ids vendor:device, platform names)
 *   log      one line per attribute write: "PATH VALUE RESULT"
 *   fail     "PATH[=VALUE] ERRNO [COUNT]": make the next COUNT (or all) writes to PATH (of VALUE
 *            only, when given) fail
 *   delay    "probe MS", "drm MS", "unbind MS"
 * /.fakesys/marker exists only in the mounted emulation, never in BACKING: the harness refuses
 * to run anything unless it sees it at /sys/.fakesys/marker.
 *
 * Usage: fakesys BACKING MOUNTPOINT (stays in the foreground; SIGTERM or umount stops it). */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Paths are composed with snprintf into PATH_MAX buffers; a truncated one names no file and
 * fails like any missing file, so the compiler's truncation analysis is only noise here. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MARKER "/.fakesys/marker"
#define MARKER_TEXT "fakesys emulated sysfs\n"

static char backing[PATH_MAX];
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

static long delay_ms(const char *what) {
        char buf[1024], key[32];
        long ms, ret = 0;
        if (read_rel(".fakesys/delay", buf, sizeof(buf)) < 0)
                return 0;
        for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (sscanf(l, "%31s %ld", key, &ms) == 2 && strcmp(key, what) == 0)
                        ret = ms;
        return ret;
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

static void log_write(const char *rel, const char *value, int err) {
        char p[PATH_MAX];
        full(p, ".fakesys/log");
        FILE *f = fopen(p, "a");
        if (!f)
                return;
        fprintf(f, "%s %s %s\n", rel, value[0] ? value : "\"\"", err ? errname(err) : "0");
        fclose(f);
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

static int is_display(const char *drv) {
        return !strcmp(drv, "amdgpu") || !strcmp(drv, "radeon") || !strcmp(drv, "nouveau") ||
               !strcmp(drv, "i915");
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

/* Class device DIR (child of PARENT) of class CLS: uevent, dev, subsystem and device links,
 * and the class/CLS/NAME link udev enumerates by. */
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
        snprintf(rel, sizeof(rel), "%s/device", dir);
        make_link(rel, parent);
        snprintf(rel, sizeof(rel), "class/%s/%s", cls, strrchr(dir, '/') + 1);
        make_link(rel, dir);
}

static void add_drm(const char *dev) {
        char p[PATH_MAX], node[64];
        snprintf(p, sizeof(p), "%s/%s/drm", backing, dev);
        mkdir(p, 0755);
        int n = lowest_free("class/drm", "card");
        snprintf(p, sizeof(p), "%s/drm/card%d", dev, n);
        snprintf(node, sizeof(node), "dri/card%d", n);
        add_class_dev(p, dev, "drm", node, 226, n);
        snprintf(p, sizeof(p), "%s/drm/renderD%d", dev, 128 + n);
        snprintf(node, sizeof(node), "dri/renderD%d", 128 + n);
        add_class_dev(p, dev, "drm", node, 226, 128 + n);
}

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
}

/* Remove DEV/SUB and the class links pointing into it. */
static void remove_cards(const char *dev, const char *sub) {
        char p[PATH_MAX], rel[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s/%s", backing, dev, sub);
        DIR *d = opendir(p);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(rel, sizeof(rel), "class/%s/%s", sub, de->d_name);
                unlink_rel(rel);
                if (!strcmp(sub, "sound")) {    /* the card's control node is linked too */
                        snprintf(rel, sizeof(rel), "class/%s/controlC%s", sub, de->d_name + 4);
                        unlink_rel(rel);
                }
        }
        closedir(d);
        snprintf(rel, sizeof(rel), "%s/%s", dev, sub);
        rm_rf(rel);
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

static int pci_display_class(const char *dev) {
        char rel[PATH_MAX], buf[32];
        snprintf(rel, sizeof(rel), "%s/class", dev);
        return read_rel(rel, buf, sizeof(buf)) > 0 && (strtoul(buf, NULL, 16) >> 16) == 0x03;
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
        if (!strcmp(e->bus, "pci") && is_display(e->drv) && pci_display_class(e->dev))
                schedule(EV_DRM, delay_ms("drm"), e->bus, e->drv, e->name, e->dev);
        if (!strcmp(e->drv, "snd_hda_intel"))
                add_sound(e->dev);
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

static int bound_to(const char *dev, char *drv, size_t size) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/driver", dev);
        link_base(rel, drv, size);
        return drv[0] != '\0';
}

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
        uevent_driver(dev, "");
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

static int store_override(const char *rel, const char *value) {
        char text[300];
        if (strlen(value) >= 256)
                return -EINVAL;
        snprintf(text, sizeof(text), "%s\n", value[0] ? value : "(null)");
        return write_rel(rel, text);
}

static int store_vtcon(const char *rel, const char *value) {
        char *end;
        long v = strtol(value, &end, 10);
        if (end == value || *end)
                return -EINVAL;
        return write_rel(rel, v ? "1\n" : "0\n");
}

static int is_trigger(const char *base) {
        static const char *const names[] = { "bind", "unbind", "new_id", "remove_id",
                "drivers_probe", "drivers_autoprobe", "uevent", "remove", "rescan", "reset" };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (!strcmp(base, names[i]))
                        return 1;
        return 0;
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
        if (!strncmp(rel, "devices/virtual/vtconsole/", 26) && !strcmp(base, "bind"))
                return store_vtcon(rel, value);
        if (is_trigger(base))
                return 0;
        return write_rel(rel, value);   /* plain attribute: keep the value */
}

/* ---------- FUSE operations ---------- */

static int is_marker(const char *path) { return !strcmp(path, MARKER); }
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
        if (!r && !strcmp(path, "/.fakesys"))
                fill(buf, "marker", NULL, 0, 0);
        return r;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        struct stat st;
        if (is_marker(path))
                return (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : -EACCES;
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
        int fd = open(p, O_RDONLY);
        ssize_t n = fd < 0 ? -1 : pread(fd, buf, size, off);
        int r = n < 0 ? -errno : (int) n;
        if (fd >= 0)
                close(fd);
        pthread_mutex_unlock(&lock);
        return r;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi) {
        char p[PATH_MAX], value[4096];
        const char *rel = path + 1;
        int r;

        full(p, path);
        if (is_control(path)) {         /* control files are plain files */
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
        pthread_mutex_lock(&lock);
        r = injected(rel, value);
        if (r)
                r = -r;
        else
                r = store(rel, value);
        log_write(rel, value, -r);
        pthread_mutex_unlock(&lock);
        return r < 0 ? r : (int) size;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
        char p[PATH_MAX];
        if (!is_control(path))
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

int main(int argc, char **argv) {
        if (argc != 3) {
                fprintf(stderr, "usage: %s BACKING MOUNTPOINT\n", argv[0]);
                return 2;
        }
        if (!realpath(argv[1], backing)) {
                fprintf(stderr, "fakesys: %s: %m\n", argv[1]);
                return 2;
        }
        char *fargv[] = { argv[0], "-f", "-o", "allow_other,fsname=fakesys,subtype=fakesys",
                          argv[2], NULL };
        if (geteuid() != 0)
                fargv[3] = "fsname=fakesys,subtype=fakesys";
        return fuse_main(5, fargv, &ops, NULL);
}
