/* Kernel modules of the GPU's drivers ([gpu] unload_driver).
 *
 * The kernel (kernel/module/main.c, delete_module): a module another module uses (its holders/ in
 * sysfs) cannot go; with O_NONBLOCK, which libkmod always passes, one whose reference count is not
 * zero is refused with EWOULDBLOCK: every open file of its devices holds a reference (DRM and
 * sound nodes, /dev/kfd, /dev/nvidia*). Otherwise its exit function runs: a PCI driver's
 * unregisters the driver, which unbinds every device still bound to it, whoever's it is. So the
 * unload is refused here while any device is bound to one of its drivers: after the move the GPU's
 * functions are on vfio-pci, and a device still bound is someone else's (the secondary GPU's
 * display, the board's own audio on snd_hda_intel). Loading it again (finit_module) registers its
 * drivers, and the driver core probes every unbound device they match, but not one whose
 * driver_override names another driver: the GPU stays on vfio-pci until its own move back. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libkmod.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "modules.h"
#include "sysfs.h"

static void kmod_unrefp(struct kmod_ctx **c) { if (*c) kmod_unref(*c); }
static void kmod_module_unrefp(struct kmod_module **m) { if (*m) kmod_module_unref(*m); }
static void kmod_list_unrefp(struct kmod_list **l) { if (*l) kmod_module_unref_list(*l); }

static void list_add(char *list, const char *word) {
        size_t len = strlen(list);

        if (len + 1 + strlen(word) < MODULE_LIST_LEN)
                snprintf(list + len, MODULE_LIST_LEN - len, "%s%s", len ? " " : "", word);
}

/* Whether the device at sysfs path dev is one of the GPU's functions or beneath one (an HDA codec
 * of its audio function). */
static bool of_gpu(const struct host *h, const char *dev) {
        for (size_t i = 0; i < h->n_gpu; i++) {
                const char *p = strstr(dev, h->gpu[i].name);
                size_t n = strlen(h->gpu[i].name);

                if (p && p[-1] == '/' && (p[n] == '/' || p[n] == '\0'))
                        return true;
        }
        return false;
}

/* The devices bound to each driver the module registers (/sys/module/M/drivers/BUS:DRIVER, whose
 * directory links each bound device). With h, the GPU's are told apart into m->others. */
static int read_users(const struct host *h, struct kmodule *m) {
        _cleanup_(closedirp) DIR *d = NULL;
        char path[PATH_MAX];
        struct dirent *de;

        m->drivers[0] = m->devices[0] = m->others[0] = '\0';
        snprintf(path, sizeof(path), SYSFS_ROOT "/module/%s/drivers", m->name);
        d = opendir(path);
        if (!d)
                return errno == ENOENT ? 0 : -errno;    /* registers none (nvidia_drm, nvidia_uvm) */
        while ((de = readdir(d))) {
                _cleanup_(closedirp) DIR *drv = NULL;
                const char *colon = strchr(de->d_name, ':');
                struct dirent *e;

                if (de->d_name[0] == '.' || !colon)
                        continue;
                list_add(m->drivers, colon + 1);
                snprintf(path, sizeof(path), SYSFS_ROOT "/module/%s/drivers/%s", m->name, de->d_name);
                drv = opendir(path);
                while (drv && (e = readdir(drv))) {
                        char target[PATH_MAX];
                        ssize_t n;

                        if (e->d_name[0] == '.' || strcmp(e->d_name, "module") == 0)
                                continue;
                        n = readlinkat(dirfd(drv), e->d_name, target, sizeof(target) - 1);
                        if (n < 0)
                                continue;       /* not a link: bind, unbind, new_id... */
                        target[n] = '\0';
                        if (!strstr(target, "devices/"))
                                continue;
                        list_add(m->devices, e->d_name);
                        if (h && !of_gpu(h, target))
                                list_add(m->others, e->d_name);
                }
        }
        return 0;
}

static int find_module(const struct host *h, const char *name) {
        for (size_t i = 0; i < h->n_modules; i++)
                if (strcmp(h->modules[i].name, name) == 0)
                        return (int) i;
        return -1;
}

static int cmp_name(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Appends name to h->modules after the modules holding it (depth first: those first), each
 * module's holders by name: the kernel lists them in no particular order, and any order with the
 * holders first is one it accepts. depth bounds a loop of holders, which the kernel never makes. */
static int visit(struct kmod_ctx *ctx, struct host *h, const char *name, unsigned depth) {
        _cleanup_(kmod_module_unrefp) struct kmod_module *mod = NULL;
        _cleanup_(kmod_list_unrefp) struct kmod_list *holders = NULL;
        const char *names[16];
        size_t n = 0;
        struct kmodule m = {};
        struct kmod_list *l;
        int r;

        if (find_module(h, name) >= 0 || depth > 8)
                return 0;
        r = kmod_module_new_from_name(ctx, name, &mod);
        if (r < 0)
                return r;
        strscpy(m.name, kmod_module_get_name(mod), sizeof(m.name));
        r = kmod_module_get_initstate(mod);
        m.builtin = r == KMOD_MODULE_BUILTIN;
        m.loadable = kmod_module_get_path(mod) != NULL;
        m.refcnt = m.builtin ? 0 : kmod_module_get_refcnt(mod);
        /* The names live as long as the list holds its modules. */
        holders = kmod_module_get_holders(mod);
        kmod_list_foreach(l, holders) {
                _cleanup_(kmod_module_unrefp) struct kmod_module *hm = kmod_module_get_module(l);

                if (n < ELEMENTSOF(names))
                        names[n++] = kmod_module_get_name(hm);
        }
        qsort(names, n, sizeof(*names), cmp_name);
        for (size_t i = 0; i < n; i++) {
                list_add(m.holders, names[i]);
                r = visit(ctx, h, names[i], depth + 1);
                if (r < 0)
                        return r;
        }
        r = read_users(h, &m);
        if (r < 0)
                return log_error_errno(r, "reading the drivers of module %s (" SYSFS_ROOT "/module/%s/drivers): %m",
                                       m.name, m.name);
        h->modules = xreallocarray(h->modules, h->n_modules + 1, sizeof(*h->modules));
        h->modules[h->n_modules++] = m;
        return 0;
}

int host_modules(struct host *h) {
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = kmod_new(NULL, NULL);

        if (!ctx)
                return log_error_errno(ENOMEM, "libkmod: %m");
        for (size_t i = 0; i < h->n_gpu; i++) {
                const struct pci_func *f = &h->gpu[i];
                char link[PATH_MAX], module[NAME_LEN];
                int r;

                if (!f->driver[0] || strcmp(f->driver, "vfio-pci") == 0)
                        continue;
                /* The driver core links each driver to the module that registered it, built-in
                 * ones too (module_add_driver); a driver without the link has no module at all. */
                snprintf(link, sizeof(link), "bus/pci/drivers/%s/module", f->driver);
                if (sysfs_link_name(link, module, sizeof(module)) < 0) {
                        h->modules = xreallocarray(h->modules, h->n_modules + 1, sizeof(*h->modules));
                        h->modules[h->n_modules] = (struct kmodule) { .builtin = true };
                        strscpy(h->modules[h->n_modules].name, f->driver, NAME_LEN);
                        list_add(h->modules[h->n_modules++].drivers, f->driver);
                        continue;
                }
                r = visit(ctx, h, module, 0);
                if (r < 0)
                        return log_error_errno(r, "reading module %s (of %s's driver %s): %m", module, f->name,
                                               f->driver);
        }
        return 0;
}

struct unload_wait {
        struct kmod_module *mod;
        int result;
};

/* One try: 1 done (or gone already), 0 still referenced, <0 refused. */
static int try_unload(void *data) {
        struct unload_wait *w = data;
        int r = kmod_module_remove_module(w->mod, KMOD_REMOVE_NOLOG);

        w->result = r;
        if (r == -ENOENT)
                return 1;       /* gone meanwhile */
        return r == 0 ? 1 : r == -EAGAIN || r == -EWOULDBLOCK ? 0 : r;
}

int module_unload(const char *name, usec_t deadline) {
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = kmod_new(NULL, NULL);
        _cleanup_(kmod_module_unrefp) struct kmod_module *mod = NULL;
        _cleanup_(kmod_list_unrefp) struct kmod_list *holders = NULL;
        struct kmodule m = {};
        int r;

        if (!ctx)
                return log_error_errno(ENOMEM, "libkmod: %m");
        r = kmod_module_new_from_name(ctx, name, &mod);
        if (r < 0)
                return log_error_errno(r, "unloading module %s: %m", name);
        r = kmod_module_get_initstate(mod);
        if (r == -ENOENT) {
                log_info("module %s is not loaded: nothing to unload", name);
                return 0;
        }
        strscpy(m.name, name, sizeof(m.name));
        r = read_users(NULL, &m);
        if (r < 0)
                return log_error_errno(r, "unloading module %s: reading its drivers failed: %m", name);
        if (m.devices[0])
                return log_error_errno(EBUSY, "module %s is not unloaded: its drivers (%s) still drive %s, which "
                                       "unloading it would leave without a driver", name, m.drivers, m.devices);
        holders = kmod_module_get_holders(mod);
        if (holders) {
                _cleanup_(kmod_module_unrefp) struct kmod_module *hm = kmod_module_get_module(holders);
                return log_error_errno(EBUSY, "module %s is not unloaded: module %s uses it", name,
                                       kmod_module_get_name(hm));
        }
        struct unload_wait w = { .mod = mod };
        r = wait_until(deadline, try_unload, &w);
        if (r == -ETIMEDOUT)
                return log_error_errno(EBUSY, "module %s is still in use (refcount %d) after the deadline: a process "
                                       "keeps one of its devices open (lsof /dev/dri /dev/snd /dev/nvidia*)", name,
                                       kmod_module_get_refcnt(mod));
        if (r < 0)
                return log_error_errno(r, "unloading module %s failed: %m", name);
        if (kmod_module_get_initstate(mod) != -ENOENT)
                return log_error_errno(EIO, "unloading module %s: the kernel still shows it (" SYSFS_ROOT
                                       "/module/%s)", name, name);
        return 0;
}

/* modprobe.d's options and soft dependencies apply; its install commands would need a shell: the
 * module itself is loaded instead. */
static int insert(struct kmod_module *mod) {
        return kmod_module_probe_insert_module(mod, KMOD_PROBE_IGNORE_COMMAND, NULL, NULL, NULL, NULL);
}

int module_load_lookup(const char *name, char *loaded, size_t size) {
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = kmod_new(NULL, NULL);
        _cleanup_(kmod_list_unrefp) struct kmod_list *list = NULL;
        struct kmod_list *l;
        int r;

        if (!ctx)
                return -ENOMEM;
        r = kmod_module_new_from_lookup(ctx, name, &list);
        if (r < 0)
                return r;
        r = -ENOENT;
        kmod_list_foreach(l, list) {
                _cleanup_(kmod_module_unrefp) struct kmod_module *m = kmod_module_get_module(l);

                r = insert(m);
                if (r >= 0)
                        return strscpy(loaded, kmod_module_get_name(m), size);
        }
        return r;
}

int module_load(const char *name) {
        _cleanup_(kmod_unrefp) struct kmod_ctx *ctx = kmod_new(NULL, NULL);
        _cleanup_(kmod_module_unrefp) struct kmod_module *mod = NULL;
        int r;

        if (!ctx)
                return log_error_errno(ENOMEM, "libkmod: %m");
        r = kmod_module_new_from_name(ctx, name, &mod);
        if (r < 0)
                return log_error_errno(r, "loading module %s: %m", name);
        r = insert(mod);
        if (r == -ENOENT && !kmod_module_get_path(mod))
                return log_error_errno(r, "loading module %s failed: this kernel's modules.dep has no file for it "
                                       "(were the running kernel's modules removed by an upgrade?)", name);
        if (r < 0)
                return log_error_errno(r, "loading module %s failed: %m", name);
        r = kmod_module_get_initstate(mod);
        if (r != KMOD_MODULE_LIVE && r != KMOD_MODULE_BUILTIN)
                return log_error_errno(EIO, "loading module %s: the kernel shows it %s", name,
                                       r < 0 ? "absent" : kmod_module_initstate_str(r));
        return 0;
}
