/* fbcon's vtconsole: fbcon keeps the GPU's framebuffer in use until its console is unbound.
 *
 * The console is found by its name when the step runs, not by the number the plan saw: fbcon's
 * vtcon disappears with the last framebuffer, and comes back (bound, whatever was written before)
 * when a DRM driver registers the next one; its number depends on the firmware (vtcon1 under
 * OVMF, vtcon0 under SeaBIOS). The kernel ignores a bind it cannot do, without an error: the file
 * is read back. Binding is best effort (a console the kernel will not give back costs the text
 * console, never the desktop). An unbind the kernel ignores fails a hand-over, since fbcon would
 * keep the GPU's framebuffer; in an undo (the hand-back, a rollback) it is best effort too: the
 * kernel takes fbcon off a framebuffer whose driver goes, and stopping there would leave the
 * host without its GPU for the sake of a text console. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "sysfs.h"

static int vtcon_set(struct step *s, bool bind, bool undo) {
        char vtcon[32], path[96], now[8];
        bool bound;
        int r;

        r = host_find_fbcon(vtcon, sizeof(vtcon), &bound);
        if (r < 0 && (bind || undo)) {
                log_warning_errno(r, "finding fbcon's vtconsole failed: %m; going on without it");
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "finding fbcon's vtconsole failed: %m");
        if (r == 0) {
                /* No framebuffer left (unbind), or none registered yet (bind): either way fbcon has
                 * no console, and the kernel binds one by itself with the next framebuffer. */
                snprintf(s->note, sizeof(s->note), "fbcon had no vtconsole");
                log_info("fbcon has no vtconsole now (no framebuffer): nothing to %s", bind ? "bind" : "unbind");
                return 0;
        }
        if (strcmp(vtcon, s->target) != 0)
                log_info("fbcon's vtconsole is %s now (was %s)", vtcon, s->target);
        if (bound == bind)
                return 0;
        snprintf(path, sizeof(path), "class/vtconsole/%s/bind", vtcon);
        r = sysfs_write(path, bind ? "1" : "0");
        if (r >= 0)
                r = sysfs_read(path, now, sizeof(now));
        if (r >= 0 && strcmp(now, bind ? "1" : "0") != 0)
                r = -EBUSY;
        if (r >= 0)
                return 0;
        if (bind) {
                log_warning_errno(r, "binding fbcon to %s failed: %m; the text console stays off until the "
                                  "next framebuffer registers (the desktop is not affected)", vtcon);
                return 0;
        }
        if (undo) {
                log_warning_errno(r, "unbinding fbcon from %s failed: %m; going on, the kernel lets fbcon go "
                                  "with its framebuffer's driver", vtcon);
                return 0;
        }
        return log_error_errno(r, "unbinding fbcon from %s failed: %m", vtcon);
}

static int vtcon_apply(struct run_ctx *c, struct step *s) {
        return vtcon_set(s, strcmp(s->to, "1") == 0, false);
}

static int vtcon_undo(struct run_ctx *c, struct step *s) {
        return vtcon_set(s, strcmp(s->from, "1") == 0, true);
}

static void vtcon_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "%s fbcon (%s)", strcmp(undo ? s->from : s->to, "1") == 0 ? "bind" : "unbind", s->target);
}

const struct step_kind step_vtcon = {
        .name = "vtcon", .apply = vtcon_apply, .undo = vtcon_undo, .describe = vtcon_describe,
};
