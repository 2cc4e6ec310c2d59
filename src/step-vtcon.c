/* A vtconsole's binding: fbcon keeps the GPU's framebuffer in use until unbound. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "step.h"
#include "sysfs.h"

struct vtcon_wait {
        char path[96];
        const char *value;
        int last;
};

static int try_bind(void *data) {
        struct vtcon_wait *w = data;
        char now[8];

        /* The kernel refuses to unbind a console with EBUSY while it is in graphics mode, until
         * the display manager that set it has let go: retry rather than sleep. */
        w->last = sysfs_write(w->path, w->value);
        if (w->last == -EBUSY)
                return 0;
        if (w->last < 0)
                return w->last;
        return sysfs_read(w->path, now, sizeof(now)) == 0 && strcmp(now, w->value) == 0 ? 1 : 0;
}

static int vtcon_set(struct run_ctx *c, const char *vtcon, const char *value) {
        struct vtcon_wait w = { .value = value };
        int r;

        snprintf(w.path, sizeof(w.path), "class/vtconsole/%s/bind", vtcon);
        r = wait_until(now_usec() + c->timeout, try_bind, &w);
        if (r == -ETIMEDOUT && w.last < 0)
                r = w.last;
        if (r < 0)
                return log_error_errno(r, "%s %s failed: %m", strcmp(value, "0") == 0 ? "unbinding" : "binding", vtcon);
        return 0;
}

static int vtcon_apply(struct run_ctx *c, struct step *s) {
        return vtcon_set(c, s->target, s->to);
}

static int vtcon_undo(struct run_ctx *c, struct step *s) {
        return vtcon_set(c, s->target, s->from);
}

static void vtcon_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "%s %s", strcmp(undo ? s->from : s->to, "1") == 0 ? "bind" : "unbind", s->target);
}

const struct step_kind step_vtcon = {
        .name = "vtcon", .apply = vtcon_apply, .undo = vtcon_undo, .describe = vtcon_describe,
};
