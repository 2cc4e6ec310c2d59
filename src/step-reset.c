/* The reset methods of a GPU function while a VM has it ([gpu] reset_method), put back after.
 *
 * The kernel (drivers/pci/pci.c, reset_method_store and _show): reading gives the enabled methods
 * in the order they are tried, separated by spaces (nothing at all once every one is disabled);
 * writing a list probes each method and takes the list only if every one is supported, else
 * -EINVAL and nothing changes; "" disables them all and "default" brings back what the kernel
 * probes now. The attribute exists only when the kernel found a method when it added the device.
 * vfio-pci resets the function with them when a VM starts and stops: device_specific is how
 * vendor-reset's resets of older AMD GPUs are reached. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "step.h"
#include "sysfs.h"

static int reset_set(const struct step *s, const char *methods) {
        char path[PATH_MAX], now[STEP_FIELD_LEN];
        int r;

        snprintf(path, sizeof(path), "bus/pci/devices/%s/reset_method", s->target);
        /* A newline alone is the kernel's empty list: a write of no bytes never reaches it. */
        r = sysfs_write(path, methods[0] ? methods : "\n");
        if (r == -EINVAL)
                return log_error_errno(r, "setting the reset method of %s to %s: the kernel refuses it (a method "
                                       "the device lacks; device_specific needs vendor-reset loaded): %m",
                                       s->target, methods[0] ? methods : "none");
        if (r < 0)
                return log_error_errno(r, "setting the reset method of %s to %s failed: %m", s->target,
                                       methods[0] ? methods : "none");
        if (strcmp(methods, "default") == 0)
                return 0;
        r = sysfs_read(path, now, sizeof(now));
        if (r < 0)
                return log_error_errno(r, "setting the reset method of %s to %s: reading it back failed: %m",
                                       s->target, methods);
        if (strcmp(now, methods) != 0)
                return log_error_errno(EIO, "setting the reset method of %s to %s: the kernel shows \"%s\"",
                                       s->target, methods, now);
        return 0;
}

static int reset_apply(struct run_ctx *c, struct step *s) {
        return reset_set(s, s->to);
}

static int reset_undo(struct run_ctx *c, struct step *s) {
        return reset_set(s, s->from);
}

static void reset_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "restore the reset method of %s to %s", s->target, s->from[0] ? s->from :
                         "none (all disabled)");
        else
                snprintf(buf, size, "set the reset method of %s to %s (now: %s)", s->target, s->to,
                         s->from[0] ? s->from : "none enabled");
}

const struct step_kind step_reset_method = {
        .name = "pci-reset-method", .apply = reset_apply, .undo = reset_undo, .describe = reset_describe,
};
