/* Nobody may hold the GPU when its driver is unbound: the kernel would wait for the last user, and
 * amdgpu in particular can hang the machine. Waits for the processes stopped before to exit.
 *
 * The hand-back has no step of its own for this: each move waits for its function's nodes right
 * before its unbind (step-pci.c). What it has is a check before anything is undone: a function on
 * vfio-pci still held (/dev/vfio/GROUP) is a VM still running with the GPU, and then nothing of
 * the desktop may move either. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "sysfs.h"
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

static bool is_vfio(const char *driver) {
        return strcmp(driver, "vfio-pci") == 0 || strcmp(driver, "vfio_pci") == 0;
}

int holders_check_hand_back(struct run_ctx *c, const struct step *steps, size_t n_steps) {
        usec_t deadline = now_usec() + c->timeout;
        int r = 0;

        for (size_t i = 0; i < n_steps && r >= 0; i++) {
                const struct step *s = &steps[i];
                char link[STEP_FIELD_LEN + 32], driver[NAME_LEN], holders[512];

                /* The moves the undo makes off vfio-pci: the GPU's functions, back to their drivers.
                 * Only the driver link is read: it needs no device lock. */
                if (s->kind != &step_pci_driver || (s->state != STEP_DONE && s->state != STEP_STARTED) ||
                    is_vfio(s->from))
                        continue;
                snprintf(link, sizeof(link), "bus/pci/devices/%s/driver", s->target);
                if (sysfs_link_name(link, driver, sizeof(driver)) < 0 || !is_vfio(driver))
                        continue;
                /* libvirt calls release once qemu is dead; a qemu still exiting has until the
                 * deadline. One still running (--recover by hand, a release called early) keeps
                 * its GPU, and the desktop stays where it is. */
                r = host_wait_unused(s->target, deadline, holders, sizeof(holders));
                if (r == -ETIMEDOUT)
                        r = log_error_errno(EBUSY, "hand-back of %s refused: %s is still used by %s after %.1f s; "
                                            "a VM still running with the GPU keeps it: nothing was changed (the "
                                            "hand-back runs when the VM stops, or by `qemu-hook --recover %s` once it "
                                            "has)", c->vm, s->target, holders, (double) c->timeout / USEC_PER_SEC, c->vm);
                else if (r < 0)
                        r = log_error_errno(r, "hand-back of %s: checking who holds %s failed: %m", c->vm, s->target);
        }
        return r;
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
