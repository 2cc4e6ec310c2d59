/* systemd over D-Bus with sd-bus: the system manager, and the desktop user's own manager on the
 * user's bus, which refuses root and is reached with the user's credentials. */
#pragma once
#include <stdbool.h>
#include "plan.h"
#include "step.h"

/* The connections of a run, opened on first use; negative errno when there is no such bus. */
int bus_system(struct run_ctx *c, sd_bus **ret);
int bus_user(struct run_ctx *c, sd_bus **ret);
void bus_close(struct run_ctx *c);

/* Resolves unit (an alias like display-manager.service included) to its Id, and whether it is
 * active (or activating). -ENOENT: no such unit. */
int bus_unit_state(sd_bus *bus, const char *unit, char *id, size_t size, bool *active);
/* StartUnit or StopUnit in "replace" mode, waiting for the job's JobRemoved signal until deadline;
 * anything but the result "done" is an error. */
int bus_unit_job(sd_bus *bus, const char *method, const char *unit, usec_t deadline);
int bus_reset_failed(sd_bus *bus, const char *unit);
/* AllowedCPUs of a slice or scope as a CPU list ("" for all). */
int bus_get_allowed_cpus(sd_bus *bus, const char *unit, char *list, size_t size);
int bus_set_allowed_cpus(sd_bus *bus, const char *unit, const char *list);

/* The live state the planner needs: display manager, user units, CPUs. Errors the user must fix
 * (a configured unit that does not exist, a CPU the host lacks) are returned; a missing bus or a
 * user not logged in only makes the steps skip, with the reason. */
int bus_desktop_state(struct run_ctx *c, struct desktop_state *ret);

/* CPU lists ("0-3,8") to and from bit masks as systemd's AllowedCPUs (ay) holds them. */
int cpu_list_to_mask(const char *list, uint8_t *mask, size_t size, size_t *len);
void cpu_mask_to_list(const uint8_t *mask, size_t len, char *list, size_t size);
