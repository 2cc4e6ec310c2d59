/* Nobody may hold the GPU when its driver is unbound: the kernel would wait for the last user, and
 * amdgpu in particular can hang the machine. Waits for the processes stopped before to exit. */
#include <errno.h>
#include <stdio.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "timing.h"

static int holders_apply(struct run_ctx *c, struct step *s) {
        char holders[512];
        int r;

        usec_t start = now_usec();
        r = host_wait_unused(s->target, start + c->timeout, holders, sizeof(holders));
        timing_add(TIME_HOLDERS, start);
        if (r == -ETIMEDOUT)
                return log_error_errno(EBUSY, "%s (%s) is still in use by %s after %.1f s; stop them first",
                                       s->target, s->from, holders, (double) c->timeout / USEC_PER_SEC);
        if (r < 0)
                return log_error_errno(r, "checking who holds %s failed: %m", s->target);
        return 0;
}

static int holders_undo(struct run_ctx *c, struct step *s) {
        return 0;
}

static void holders_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "wait until no process holds %s (%s)", s->target, s->from);
}

const struct step_kind step_holders = {
        .name = "holders", .apply = holders_apply, .undo = holders_undo, .describe = holders_describe,
};
