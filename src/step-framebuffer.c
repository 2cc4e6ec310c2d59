/* The firmware's boot framebuffer (efi-framebuffer, simple-framebuffer) on the GPU: it keeps the
 * GPU's memory claimed until unbound from its platform driver. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "step.h"
#include "sysfs.h"

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

static int fb_bind(struct run_ctx *c, struct step *s, bool bind) {
        char path[256], link[256], driver[64];
        int r;

        snprintf(path, sizeof(path), "bus/platform/devices/%s", s->target);
        if (!sysfs_exists(path)) {
                if (!bind)
                        return log_error_errno(ENODEV, "unbinding %s: the device is gone", s->target);
                /* Drivers that take over the hardware unregister the firmware framebuffer for good
                 * (aperture handover): there is nothing left to rebind. */
                log_notice("%s is gone; not rebinding it", s->target);
                return 0;
        }
        snprintf(link, sizeof(link), "bus/platform/devices/%s/driver", s->target);
        r = sysfs_link_name(link, driver, sizeof(driver));
        if (bind ? r == 0 : r == -ENOENT)
                return 0;       /* already as wanted */
        snprintf(path, sizeof(path), "bus/platform/drivers/%s/%s", s->from, bind ? "bind" : "unbind");
        r = sysfs_write(path, s->target);
        if (r < 0)
                return log_error_errno(r, "%s %s %s %s failed: %m", bind ? "binding" : "unbinding",
                                       s->target, bind ? "to" : "from", s->from);
        /* The write may return before the probe or the release is done. */
        r = wait_until(now_usec() + c->timeout, fb_settled, &(struct fb_wait) { link, bind });
        if (r < 0)
                return log_error_errno(r, "%s %s %s %s: the driver link did not follow: %m",
                                       bind ? "binding" : "unbinding", s->target, bind ? "to" : "from", s->from);
        return 0;
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

const struct step_kind step_framebuffer = {
        .name = "framebuffer", .apply = fb_apply, .undo = fb_undo, .describe = fb_describe,
};
