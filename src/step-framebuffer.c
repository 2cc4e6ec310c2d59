/* The firmware's boot framebuffer (efi-framebuffer, simple-framebuffer) on the GPU: it keeps the
 * GPU's memory claimed until unbound from its platform driver.
 *
 * On current kernels there is rarely anything to do: a DRM driver's probe (and vfio-pci's, on a
 * VGA device) removes the platform device for good (aperture hand-over), so after boot it is
 * usually gone, and it can never be bound again. Both ways this is the expected outcome, not an
 * error. Rebinding is best effort and never done over a GPU a driver owns again: the firmware's
 * framebuffer would write into memory that driver manages. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "sysfs.h"

#define LEGACY_ON "on="        /* 0.1.0's journals kept the function in the note */

/* The PCI function the framebuffer sits on, "" when not recorded. */
static const char *fb_on(const struct step *s) {
        return s->data.fb.on[0] || strncmp(s->note, LEGACY_ON, strlen(LEGACY_ON)) != 0 ? s->data.fb.on :
               s->note + strlen(LEGACY_ON);
}

struct fb_wait {
        const char *link;
        bool bound;
};

static int fb_settled(void *data) {
        struct fb_wait *w = data;
        char driver[64];
        int r = sysfs_link_name(w->link, driver, sizeof(driver));

        return w->bound ? r == 0 : r == -ENOENT;
}

/* Whether a driver other than a stub owns the PCI function the framebuffer sits on; when that
 * cannot be told (no record of the function), it is taken as owned: never rebind over a driver.
 * Only the driver link is read, which needs no device lock (a write of an earlier step may still
 * hold it). */
static bool gpu_owned(const struct step *s, char *driver, size_t size) {
        char link[STEP_FIELD_LEN + 32];
        int r;

        if (!fb_on(s)[0]) {
                strscpy(driver, "an unknown driver", size);
                return true;
        }
        snprintf(link, sizeof(link), "bus/pci/devices/%s/driver", fb_on(s));
        r = sysfs_link_name(link, driver, size);
        return r != -ENOENT && (r < 0 || (strcmp(driver, "vfio-pci") != 0 && strcmp(driver, "pci-stub") != 0));
}

static int fb_bind(struct run_ctx *c, struct step *s, bool bind) {
        char path[256], link[256], driver[64];
        int r;

        snprintf(path, sizeof(path), "bus/platform/devices/%s", s->target);
        if (!sysfs_exists(path)) {
                log_info("%s is gone (removed by a driver that took the GPU over): nothing to %s", s->target,
                         bind ? "rebind" : "unbind");
                return 0;
        }
        if (bind && gpu_owned(s, driver, sizeof(driver))) {
                log_info("%s: not rebinding it, %s owns its GPU %s", s->target, driver,
                         fb_on(s)[0] ? fb_on(s) : "(not recorded)");
                return 0;
        }
        snprintf(link, sizeof(link), "bus/platform/devices/%s/driver", s->target);
        r = sysfs_link_name(link, driver, sizeof(driver));
        if (bind ? r == 0 : r == -ENOENT)
                return 0;       /* already as wanted */
        snprintf(path, sizeof(path), "bus/platform/drivers/%s/%s", s->from, bind ? "bind" : "unbind");
        r = sysfs_write_deadline(path, s->target, now_usec() + c->timeout);
        /* The write may return before the probe or the release is done. */
        if (r >= 0)
                r = wait_until(now_usec() + c->timeout, fb_settled, &(struct fb_wait) { link, bind });
        if (r >= 0)
                return 0;
        if (bind) {
                log_warning_errno(r, "rebinding %s to %s failed: %m; the firmware framebuffer stays off "
                                  "(the GPU's own driver provides the console)", s->target, s->from);
                return 0;
        }
        return log_error_errno(r, "unbinding %s from %s failed: %m", s->target, s->from);
}

static int fb_apply(struct run_ctx *c, struct step *s) {
        return fb_bind(c, s, false);
}

static int fb_undo(struct run_ctx *c, struct step *s) {
        return fb_bind(c, s, true);
}

static void fb_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "%s boot framebuffer %s %s %s", undo ? "bind" : "unbind", s->target,
                 undo ? "to" : "from", s->from);
}

static const struct step_field fb_fields[] = {
        { "on", offsetof(struct step, data.fb.on) },
        {},
};

const struct step_kind step_framebuffer = {
        .name = "framebuffer", .apply = fb_apply, .undo = fb_undo, .describe = fb_describe,
        .fields = fb_fields,
};
