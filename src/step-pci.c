/* One PCI function from one driver to another, the way libvirt does it: driver_override, unbind,
 * drivers_probe, and read the driver link back. Never new_id: a dynamic id stays in the driver's
 * table and makes identical or later-probed devices bind to the wrong driver. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "sysfs.h"
#include "timing.h"

#define ANY_DRIVER "*"          /* whatever the kernel binds without an override */

struct bound_wait {
        const char *func;
        const char *driver;
};

static int is_bound(void *data) {
        struct bound_wait *w = data;
        struct pci_func f;
        int r = host_read_func(w->func, &f);

        return r < 0 ? r : strcmp(f.driver, w->driver) == 0;
}

static int has_card(void *data) {
        return host_func_has_drm_card(data);
}

static int write_attr(const char *func, const char *attr, const char *value) {
        char path[128];

        snprintf(path, sizeof(path), "bus/pci/devices/%s/%s", func, attr);
        return sysfs_write(path, value);
}

/* Moves func to driver ("" leaves it unbound, ANY_DRIVER lets the kernel choose). Works from any
 * state, so the same function undoes a move that failed half way. With check_holders, first waits
 * until no process holds the function's nodes. The unbind and the probe run under the deadline:
 * the kernel can block either for good. */
static int move(struct run_ctx *c, const char *func, const char *driver, const char *final_override,
                bool check_holders) {
        usec_t deadline = now_usec() + c->timeout;
        bool named = driver[0] && strcmp(driver, ANY_DRIVER) != 0;
        const char *to = driver[0] ? driver : "no driver";
        struct pci_func f;
        char path[128], holders[512];
        int r;

        r = host_read_func(func, &f);
        if (r < 0)
                return log_error_errno(r, "moving %s to %s: cannot read the device: %m", func, to);
        if (named && strcmp(f.driver, driver) == 0 && strcmp(f.driver_override, final_override) == 0)
                return 0;
        if (check_holders && f.driver[0] && strcmp(f.driver, driver) != 0) {
                usec_t start = now_usec();
                r = host_wait_unused(func, deadline, holders, sizeof(holders));
                timing_add(TIME_HOLDERS, start);
                if (r == -ETIMEDOUT)
                        return log_error_errno(EBUSY, "moving %s to %s: still in use by %s", func, to, holders);
                if (r < 0)
                        return log_error_errno(r, "moving %s to %s: checking who holds it failed: %m", func, to);
                deadline = now_usec() + c->timeout;     /* the writes' own, whatever the wait took */
        }
        /* The override decides what drivers_probe binds; "\n" clears it. */
        r = write_attr(func, "driver_override", named ? driver : "\n");
        if (r < 0)
                return log_error_errno(r, "moving %s to %s: setting driver_override failed: %m", func, to);
        if (f.driver[0] && strcmp(f.driver, driver) != 0) {
                snprintf(path, sizeof(path), "bus/pci/drivers/%s/unbind", f.driver);
                r = sysfs_write_deadline(path, func, deadline);
                if (r == -EINPROGRESS)
                        return log_error_errno(r, "moving %s to %s: unbind from %s blocked in the kernel for %.1f s "
                                               "(a process holding the device?)", func, to, f.driver,
                                               (double) c->timeout / USEC_PER_SEC);
                if (r < 0 && r != -ENODEV)      /* ENODEV: it let go by itself meanwhile */
                        return log_error_errno(r, "moving %s to %s: unbind from %s failed: %m", func, to, f.driver);
        }
        if (driver[0]) {
                r = sysfs_write_deadline("bus/pci/drivers_probe", func, deadline);
                if (r < 0)
                        return log_error_errno(r, "moving %s to %s: drivers_probe failed: %m", func, to);
        }
        if (named) {
                usec_t start = now_usec();
                r = wait_until(deadline, is_bound, &(struct bound_wait) { func, driver });
                timing_add(TIME_SYSFS, start);
                if (r < 0) {
                        host_read_func(func, &f);
                        return log_error_errno(r, "moving %s to %s: the driver did not bind (%s): %m", func, to,
                                               f.driver[0] ? f.driver : "unbound");
                }
        }
        if (strcmp(final_override, named ? driver : "") != 0) {
                r = write_attr(func, "driver_override", final_override[0] ? final_override : "\n");
                if (r < 0)
                        return log_error_errno(r, "moving %s to %s: resetting driver_override failed: %m", func, to);
        }
        return 0;
}

/* A driver named by the config or found through module aliases may be a module's name (bochs,
 * vfio_pci), and driver_override and the driver link want the driver's (bochs-drm, vfio-pci):
 * resolved, loading the module if need be, before the first write. */
static int resolve(const char *func, char *driver, size_t size) {
        char resolved[NAME_LEN];
        int r;

        if (strcmp(driver, ANY_DRIVER) == 0)
                (void) host_load_default_driver(func);
        if (!driver[0] || strcmp(driver, ANY_DRIVER) == 0)
                return 0;
        r = host_pci_driver(driver, true, resolved, sizeof(resolved));
        if (r < 0)
                return log_error_errno(r, "moving %s to %s: no such PCI driver: %m", func, driver);
        if (strcmp(resolved, driver) != 0)
                log_info("%s: module %s registers the PCI driver %s", func, driver, resolved);
        return strscpy(driver, resolved, size);
}

/* A display function that lands on a display driver is only of use to the desktop started next
 * once its DRM card exists (and udev has processed it): both ways, the secondary GPU going to
 * its display driver and the GPU coming back to amdgpu. */
static int wait_display(struct run_ctx *c, const char *func) {
        struct pci_func f;
        int r;

        r = host_read_func(func, &f);
        if (r < 0 || (f.class >> 16) != 0x03 || !f.driver[0] || strcmp(f.driver, "vfio-pci") == 0 ||
            strcmp(f.driver, "pci-stub") == 0)
                return r;
        usec_t start = now_usec();
        r = wait_until(start + c->timeout, has_card, (void *) func);
        timing_add(TIME_UDEV, start);
        if (r < 0)
                return log_error_errno(r, "%s is bound to %s but has no DRM card: %m", func, f.driver);
        return 0;
}

static int pci_apply(struct run_ctx *c, struct step *s) {
        int r;

        r = resolve(s->target, s->to, sizeof(s->to));
        if (r < 0)
                return r;
        /* The override stays while handed over: it is what marks the GPU as ours. Holders once
         * more right before the unbind: for the GPU the plan's holders step has just waited (this
         * finds nobody, unless a process opened a node since); the secondary GPU leaving its
         * parking driver may be another VM's (/dev/vfio/GROUP). */
        r = move(c, s->target, s->to, s->to, true);
        return r < 0 ? r : wait_display(c, s->target);
}

static int pci_undo(struct run_ctx *c, struct step *s) {
        /* Journals of 0.1.0 kept it in the note: one written before an upgrade while the VM ran. */
        const char *override = s->data.pci.override[0] || strncmp(s->note, "override=", 9) != 0 ?
                               s->data.pci.override : s->note + 9;
        char driver[STEP_FIELD_LEN];
        int r;

        strscpy(driver, s->from, sizeof(driver));
        r = resolve(s->target, driver, sizeof(driver));
        if (r < 0)
                return r;
        /* Back to the parking driver, the secondary GPU may still be held by the desktop that was
         * just stopped. */
        r = move(c, s->target, driver, override, true);
        return r < 0 ? r : wait_display(c, s->target);
}

static void pci_describe(const struct step *s, bool undo, char *buf, size_t size) {
        const char *from = undo ? s->to : s->from, *to = undo ? s->from : s->to;

        if (strcmp(to, ANY_DRIVER) == 0)
                to = "its default driver";
        snprintf(buf, size, "move %s from %s to %s", s->target, from[0] ? from : "no driver", to[0] ? to : "no driver");
}

static const struct step_field pci_fields[] = {
        { "override", offsetof(struct step, data.pci.override) },
        {},
};

const struct step_kind step_pci_driver = {
        .name = "pci-driver", .apply = pci_apply, .undo = pci_undo, .describe = pci_describe,
        .fields = pci_fields, .device_ordered = true,
};
