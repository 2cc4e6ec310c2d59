/* systemd over D-Bus with sd-bus: the system manager, and the desktop user's own manager on the
 * user's bus, which refuses root and is reached with the user's credentials. */
#pragma once
#include <stdbool.h>
#include <systemd/sd-bus.h>
#include "plan.h"
#include "step.h"

static inline void sd_bus_error_freep(sd_bus_error *e) {
        sd_bus_error_free(e);
}
#define _cleanup_bus_error_ _cleanup_(sd_bus_error_freep)

/* The connections of a run, opened on first use; negative errno when there is no such bus
 * (-ENOENT, -ECONNREFUSED: nobody listens there). */
int bus_system(struct run_ctx *c, sd_bus **ret);
int bus_user(struct run_ctx *c, sd_bus **ret);
void bus_close(struct run_ctx *c);

/* The functions below return a negative errno and, when the bus said why, fill error (which the
 * caller frees with sd_bus_error_free); bus_error_text() gives the words for a message. */
const char *bus_error_text(const sd_bus_error *error, int r);

/* Resolves unit (an alias like display-manager.service included) to its Id, and whether it is
 * active (or activating, reloading). -ENOENT: no such unit. */
int bus_unit_state(sd_bus *bus, const char *unit, char *id, size_t size, bool *active,
                   sd_bus_error *error);
/* StartUnit or StopUnit in "replace" mode, waiting for the job's JobRemoved signal until deadline
 * (-ETIMEDOUT); any result but "done" is an error (-EIO, error says "job failed" and the like). */
int bus_unit_job(sd_bus *bus, const char *method, const char *unit, usec_t deadline,
                 sd_bus_error *error);
/* A transient service started with StartTransientUnit, its job waited for until deadline (-EEXIST:
 * a unit of that name is loaded already). */
struct transient_service {
        const char *description;
        const char *type;               /* "exec", "oneshot" */
        char *const *argv;              /* argv[0] an absolute path; no shell */
        usec_t timeout;                 /* TimeoutStartUSec, 0: systemd's default */
        bool keep_failed;               /* a failed one stays loaded, for bus_service_result */
};
int bus_start_transient(sd_bus *bus, const char *unit, const struct transient_service *t, usec_t deadline,
                        sd_bus_error *error);
/* A service's Result ("success", "exit-code", "timeout", ...) and ExecMainStatus. */
int bus_service_result(sd_bus *bus, const char *unit, char *result, size_t size, int *status,
                       sd_bus_error *error);
/* A unit that failed refuses to start again quickly (start rate limit); clear that first. */
int bus_reset_failed(sd_bus *bus, const char *unit, sd_bus_error *error);
/* AllowedCPUs of a slice or scope as a CPU list ("" for all). Set at runtime only. */
int bus_get_allowed_cpus(sd_bus *bus, const char *unit, char *list, size_t size, sd_bus_error *error);
int bus_set_allowed_cpus(sd_bus *bus, const char *unit, const char *list, sd_bus_error *error);

/* The live state the planner needs: display manager, user units, CPUs, and with h the services of
 * the GPU's drivers (h NULL: none). Errors the user must fix
 * (a configured unit that does not exist, a CPU the host lacks) are logged and returned; a missing
 * bus or a user not logged in only makes the steps skip, with the reason. The reasons point to
 * static storage that lives until the next call. */
int bus_desktop_state(struct run_ctx *c, const struct host *h, struct desktop_state *ret);

/* CPU lists ("0-3,8") to and from bit masks as systemd's AllowedCPUs (ay) holds them: bit n of
 * byte n/8. "" is the empty mask, which systemd reads as "all CPUs". cpu_list_to_mask: -EINVAL on
 * a malformed list, -ERANGE on a CPU beyond size * 8; *len is the bytes used. cpu_mask_to_list
 * returns -ENAMETOOLONG when the list does not fit (list is then truncated, still terminated). */
int cpu_list_to_mask(const char *list, uint8_t *mask, size_t size, size_t *len);
int cpu_mask_to_list(const uint8_t *mask, size_t len, char *list, size_t size);
