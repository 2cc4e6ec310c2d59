/* A systemd unit started or stopped, on the system bus ("unit": the display manager) or on the
 * desktop user's bus ("user-unit": pipewire and friends, which hold the GPU's HDMI audio). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "step.h"
#include "timing.h"

static int unit_set(struct run_ctx *c, const struct step *s, const char *state) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        bool user = s->kind == &step_user_unit;
        bool start = strcmp(state, "active") == 0;
        const char *verb = start ? "starting" : "stopping";
        char who[STEP_FIELD_LEN] = "";
        bool active;
        sd_bus *bus;
        int r;

        if (user)
                snprintf(who, sizeof(who), " (user %s)", c->cfg->user ? c->cfg->user : "?");
        r = user ? bus_user(c, &bus) : bus_system(c, &bus);
        if (r < 0)
                return log_error_errno(r, "%s %s%s: cannot connect to the %s bus: %m", verb, s->target, who,
                                       user ? "user's" : "system");
        if (start) {
                /* A unit that failed before (the display manager when the GPU left under it) may be
                 * held back by its start rate limit. */
                r = bus_reset_failed(bus, s->target, &error);
                if (r < 0)
                        return log_error_errno(r, "%s %s%s: resetting its failed state: %s", verb, s->target,
                                               who, bus_error_text(&error, r));
        }
        r = bus_unit_job(bus, start ? "StartUnit" : "StopUnit", s->target, now_usec() + c->timeout, &error);
        if (r < 0)
                return log_error_errno(r, "%s %s%s: %s", verb, s->target, who, bus_error_text(&error, r));

        r = bus_unit_state(bus, s->target, NULL, 0, &active, &error);
        if (r < 0)
                return log_error_errno(r, "%s %s%s: reading its state afterwards: %s", verb, s->target, who,
                                       bus_error_text(&error, r));
        if (active != start)
                /* A stopped service comes straight back when its socket or another unit still wants
                 * it; a started one may have died at once. */
                return log_error_errno(EIO, "%s %s%s: the job is done but the unit is %s%s", verb, s->target,
                                       who, active ? "active again" : "not active",
                                       active ? " (still wanted by a socket or another unit?)" : "");
        return 0;
}

static int unit_apply(struct run_ctx *c, struct step *s) {
        return unit_set(c, s, s->to);
}

static int unit_undo(struct run_ctx *c, struct step *s) {
        return unit_set(c, s, s->from);
}

static void unit_describe(const struct step *s, bool undo, char *buf, size_t size) {
        const char *state = undo ? s->from : s->to;

        snprintf(buf, size, "%s %s%s", strcmp(state, "active") == 0 ? "start" : "stop",
                 s->kind == &step_user_unit ? "user unit " : "", s->target);
}

const struct step_kind step_unit = {
        .name = "unit", .apply = unit_apply, .undo = unit_undo, .describe = unit_describe,
        .time_whole = true, .time_account = TIME_SYSTEMD,
};

const struct step_kind step_user_unit = {
        .name = "user-unit", .apply = unit_apply, .undo = unit_undo, .describe = unit_describe,
        .time_whole = true, .time_account = TIME_SYSTEMD,
};
