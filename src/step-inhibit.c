/* No suspend while a VM has the GPU: a logind inhibitor (what=sleep:idle, who=qemu-hook) held by
 * systemd-inhibit in a transient service of the system manager, started over D-Bus and stopped at
 * the hand-back. A service, not an inhibitor fd of our own: the hook exits as soon as the VM is
 * started, and the inhibitor must outlive it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "step.h"
#include "timing.h"

#define SYSTEMD_INHIBIT "/usr/bin/systemd-inhibit"

static int inhibit_apply(struct run_ctx *c, struct step *s) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char why[300], what[STEP_FIELD_LEN + 16], description[320];
        char *argv[] = { SYSTEMD_INHIBIT, what, "--who=qemu-hook", why, "--mode=block", "/usr/bin/sleep",
                         "infinity", NULL };
        struct transient_service t = { .description = description, .type = "exec", .argv = argv };
        bool active;
        sd_bus *bus;
        int r;

        snprintf(what, sizeof(what), "--what=%s", s->to);
        snprintf(why, sizeof(why), "--why=VM %s has the GPU", c->vm ? c->vm : "?");
        snprintf(description, sizeof(description), "qemu-hook: no sleep while VM %s has the GPU", c->vm ? c->vm : "?");
        r = bus_system(c, &bus);
        if (r < 0)
                return log_error_errno(r, "inhibiting sleep (%s): cannot connect to the system bus: %m", s->target);
        r = bus_start_transient(bus, s->target, &t, now_usec() + c->timeout, &error);
        if (r == -EEXIST) {
                /* A hook killed after its start, whose journal is gone: the unit is ours by its
                 * name. Running, it is the inhibitor this step wants; otherwise clear it and start. */
                sd_bus_error_free(&error);
                r = bus_unit_state(bus, s->target, NULL, 0, &active, &error);
                if (r >= 0 && active) {
                        log_notice("inhibiting sleep: %s is running already (left by an earlier run): kept",
                                   s->target);
                        return 0;
                }
                sd_bus_error_free(&error);
                (void) bus_reset_failed(bus, s->target, &error);
                sd_bus_error_free(&error);
                r = bus_start_transient(bus, s->target, &t, now_usec() + c->timeout, &error);
        }
        if (r < 0)
                return log_error_errno(r, "inhibiting sleep: starting %s (%s): %s", s->target, SYSTEMD_INHIBIT,
                                       bus_error_text(&error, r));
        r = bus_unit_state(bus, s->target, NULL, 0, &active, &error);
        if (r < 0)
                return log_error_errno(r, "inhibiting sleep: reading the state of %s: %s", s->target,
                                       bus_error_text(&error, r));
        if (!active)
                return log_error_errno(EIO, "inhibiting sleep: %s exited at once (is logind running?)", s->target);
        return 0;
}

static int inhibit_undo(struct run_ctx *c, struct step *s) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus;
        int r;

        r = bus_system(c, &bus);
        if (r < 0)
                return log_error_errno(r, "allowing sleep again (stopping %s): cannot connect to the system bus: %m",
                                       s->target);
        r = bus_unit_job(bus, "StopUnit", s->target, now_usec() + c->timeout, &error);
        /* Not loaded: never started (killed before), or gone with its process. */
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "allowing sleep again: stopping %s: %s", s->target,
                                       bus_error_text(&error, r));
        return 0;
}

static void inhibit_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "allow sleep again: stop %s", s->target);
        else
                snprintf(buf, size, "inhibit %s: systemd-inhibit in %s", s->to, s->target);
}

const struct step_kind step_inhibit = {
        .name = "inhibit", .apply = inhibit_apply, .undo = inhibit_undo, .describe = inhibit_describe,
        .time_whole = true, .time_account = TIME_SYSTEMD,
};
