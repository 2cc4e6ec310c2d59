/* The CPUs the host's own work may use while a VM runs: AllowedCPUs of user.slice, system.slice
 * and init.scope, set at runtime through systemd so that it survives no reboot. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "step.h"
#include "timing.h"

static const char *shown(const char *list) {
        return list[0] ? list : "all";
}

static int cpus_set(struct run_ctx *c, const struct step *s, const char *list) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        uint8_t want[1024], got[1024];
        size_t want_len, got_len;
        char now[STEP_FIELD_LEN];
        sd_bus *bus;
        int r;

        r = bus_system(c, &bus);
        if (r < 0)
                return log_error_errno(r, "setting the CPUs of %s to %s: cannot connect to the system bus: %m",
                                       s->target, shown(list));
        r = bus_set_allowed_cpus(bus, s->target, list, &error);
        if (r < 0)
                return log_error_errno(r, "setting the CPUs of %s to %s: %s", s->target, shown(list),
                                       bus_error_text(&error, r));
        /* Read back: a manager that ignores the property (no cpuset controller) answers the same. */
        r = bus_get_allowed_cpus(bus, s->target, now, sizeof(now), &error);
        if (r < 0)
                return log_error_errno(r, "setting the CPUs of %s to %s: reading them back: %s", s->target,
                                       shown(list), bus_error_text(&error, r));
        if (cpu_list_to_mask(list, want, sizeof(want), &want_len) < 0 ||
            cpu_list_to_mask(now, got, sizeof(got), &got_len) < 0 ||
            want_len != got_len || memcmp(want, got, want_len) != 0)
                return log_error_errno(EIO, "setting the CPUs of %s to %s: systemd reports %s", s->target,
                                       shown(list), shown(now));
        return 0;
}

static int cpus_apply(struct run_ctx *c, struct step *s) {
        return cpus_set(c, s, s->to);
}

static int cpus_undo(struct run_ctx *c, struct step *s) {
        return cpus_set(c, s, s->from);
}

static void cpus_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "restore %s to %s%s", s->target, s->from[0] ? "CPUs " : "all CPUs", s->from);
        else
                snprintf(buf, size, "restrict %s to CPUs %s (was %s)", s->target, shown(s->to), shown(s->from));
}

const struct step_kind step_cpus = {
        .name = "cpus", .apply = cpus_apply, .undo = cpus_undo, .describe = cpus_describe,
        .time_whole = true, .time_account = TIME_SYSTEMD,
};
