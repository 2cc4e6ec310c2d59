/* A hook script of qemu.d run as a step of the hand-over (prepare/begin): after the GPU moved, so
 * the script finds it on vfio-pci, and a failing script fails the start, which rolls the hand-over
 * back. A script cannot be undone; the steps before it can. It runs without the GPU lock: it may
 * start another VM, whose hook would wait for the lock until its deadline. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "scripts.h"
#include "step.h"
#include "timing.h"

static int script_apply(struct run_ctx *c, struct step *s) {
        char path[PATH_MAX];

        if (snprintf(path, sizeof(path), "%s/%s/%s", c->qemu_d, c->vm, s->target) >= (int) sizeof(path))
                return log_error_errno(ENAMETOOLONG, "hook script %s/%s/%s: %m", c->qemu_d, c->vm, s->target);
        /* The fd scripts_find checked, never the path again. */
        for (size_t i = 0; c->scripts && i < c->scripts->n; i++)
                if (strcmp(c->scripts->paths[i], s->target) == 0)
                        return script_run(c->scripts->fds[i], path, c->hook_args, c->xml_fd, STDERR_FILENO,
                                          c->script_timeout);
        return log_error_errno(ENOENT, "hook script %s: not among the scripts found and checked for this call", path);
}

static int script_undo(struct run_ctx *c, struct step *s) {
        return 0;
}

static void script_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "%s hook script qemu.d/VM/%s", undo ? "(nothing to undo for)" : "run", s->target);
}

const struct step_kind step_script = {
        .name = "script", .apply = script_apply, .undo = script_undo, .describe = script_describe,
        .time_whole = true, .time_account = TIME_SCRIPTS, .unlocked = true,
};
