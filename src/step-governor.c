/* A CPU's frequency governor while a VM runs ([vm] cpu_governor), the one found put back at the
 * hand-back. The kernel refuses (EINVAL) a governor it does not offer, and answers EBUSY for an
 * offline CPU (its policy is inactive): the planner skips those, and refuses a governor a CPU
 * does not list in scaling_available_governors before anything is done. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "step.h"
#include "sysfs.h"

static int governor_set(const struct step *s, const char *governor) {
        char path[STEP_FIELD_LEN + 64], now[64];
        int r;

        snprintf(path, sizeof(path), "devices/system/cpu/%s/cpufreq/scaling_governor", s->target);
        r = sysfs_write(path, governor);
        if (r < 0)
                return log_error_errno(r, "setting the frequency governor of %s to %s (" SYSFS_ROOT "/%s) failed: %m",
                                       s->target, governor, path);
        r = sysfs_read(path, now, sizeof(now));
        if (r < 0)
                return log_error_errno(r, "setting the frequency governor of %s to %s: reading it back failed: %m",
                                       s->target, governor);
        if (strcmp(now, governor) != 0)
                return log_error_errno(EIO, "setting the frequency governor of %s to %s: it reads %s", s->target,
                                       governor, now);
        return 0;
}

static int governor_apply(struct run_ctx *c, struct step *s) {
        return governor_set(s, s->to);
}

static int governor_undo(struct run_ctx *c, struct step *s) {
        return governor_set(s, s->from);
}

static void governor_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "restore the frequency governor of %s to %s", s->target, s->from);
        else
                snprintf(buf, size, "set the frequency governor of %s to %s (now %s)", s->target, s->to,
                         s->from[0] ? s->from : "unknown");
}

const struct step_kind step_governor = {
        .name = "cpu-governor", .apply = governor_apply, .undo = governor_undo, .describe = governor_describe,
};
