/* A command of [desktop] before_stop or after_start, run as the desktop user in their own systemd:
 * a transient oneshot service on the user's bus (no shell, the words as arguments), waited for with
 * the script deadline, its exit status read from the unit.
 *
 * The steps come in pairs of groups, so that an undo is exact: the group before the display
 * manager stops (target "before_stop") applies before_stop commands and its undo runs the
 * after_start ones; the group after the display manager is back ("after_start") applies after_start
 * and its undo runs before_stop. A hand-back undoing in reverse thus runs before_stop before the
 * display manager stops again and after_start after it is back. Only a before_stop command of a
 * hand-over may fail it: the others run with the desktop back or going, and are logged. Like every
 * step, one that failed (or was killed) is undone too: a before_stop that failed half way (a
 * session half saved) gets its after_start in the rollback. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "log.h"
#include "step.h"
#include "timing.h"

#define MAX_WORDS 64

static int run_command(struct run_ctx *c, const struct step *s, const char *command, const char *role,
                       bool must_succeed) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        static unsigned serial;
        char words[STEP_FIELD_LEN], *argv[MAX_WORDS + 1], *save = NULL, unit[96], description[STEP_FIELD_LEN + 64];
        const char *user = c->cfg->user ? c->cfg->user : "?";
        usec_t allowance = c->script_timeout ? c->script_timeout : c->timeout;
        size_t n = 0;
        sd_bus *bus;
        int r;

        (void) s;
        if (!command[0])
                return 0;
        strscpy(words, command, sizeof(words));
        for (char *w = strtok_r(words, " \t", &save); w && n < MAX_WORDS; w = strtok_r(NULL, " \t", &save))
                argv[n++] = w;
        argv[n] = NULL;
        /* Our PID and a counter: a unit left by a killed run never has this name. */
        snprintf(unit, sizeof(unit), "qemu-hook-command-%d-%u.service", (int) getpid(), ++serial);
        snprintf(description, sizeof(description), "qemu-hook %s: %s", role, command);
        struct transient_service t = { .description = description, .type = "oneshot", .argv = argv,
                                       .timeout = allowance, .keep_failed = true };

        r = bus_user(c, &bus);
        if (r < 0) {
                log_full(must_succeed ? LOG_ERR : LOG_WARNING, r, "%s `%s` as user %s: cannot connect to "
                               "the user's bus: %m", role, command, user);
                return must_succeed ? r : 0;
        }
        /* systemd stops it at its TimeoutStartUSec; ours is a little later, for that stop to be seen
         * as the job's result; then we stop it ourselves. */
        r = bus_start_transient(bus, unit, &t, now_usec() + allowance + MIN(c->timeout, 5 * USEC_PER_SEC), &error);
        if (r == -EIO) {
                char result[64] = "?";
                int status = 0;

                sd_bus_error_free(&error);
                if (bus_service_result(bus, unit, result, sizeof(result), &status, &error) >= 0)
                        sd_bus_error_setf(&error, "org.freedesktop.systemd1.JobFailed", "%s (exit status %d)",
                                          strcmp(result, "exit-code") == 0 ? "it failed" : result, status);
                (void) bus_reset_failed(bus, unit, NULL);
        } else if (r == -ETIMEDOUT) {
                _cleanup_(sd_bus_error_free) sd_bus_error stop_error = SD_BUS_ERROR_NULL;
                (void) bus_unit_job(bus, "StopUnit", unit, now_usec() + c->timeout, &stop_error);
                (void) bus_reset_failed(bus, unit, NULL);
        }
        if (r < 0) {
                log_full(must_succeed ? LOG_ERR : LOG_WARNING, r, "%s `%s` as user %s (%s): %s%s", role,
                               command, user, unit, bus_error_text(&error, r), must_succeed ? "" : "; going on");
                return must_succeed ? r : 0;
        }
        log_info("%s `%s` as user %s: done", role, command, user);
        return 0;
}

static int command_apply(struct run_ctx *c, struct step *s) {
        bool before = strcmp(s->target, "before_stop") == 0;
        return run_command(c, s, s->to, s->target, before);
}

static int command_undo(struct run_ctx *c, struct step *s) {
        bool before = strcmp(s->target, "before_stop") == 0;
        return run_command(c, s, s->from, before ? "after_start" : "before_stop", false);
}

static void command_describe(const struct step *s, bool undo, char *buf, size_t size) {
        bool before = strcmp(s->target, "before_stop") == 0;
        const char *cmd = undo ? s->from : s->to;
        const char *role = undo ? (before ? "after_start" : "before_stop") : s->target;

        if (cmd[0])
                snprintf(buf, size, "run %s command as the desktop user: %s", role, cmd);
        else
                snprintf(buf, size, "(no %s command here)", role);
}

const struct step_kind step_command = {
        .name = "user-command", .apply = command_apply, .undo = command_undo, .describe = command_describe,
        .time_whole = true, .time_account = TIME_SYSTEMD, .script_deadline = true,
};
