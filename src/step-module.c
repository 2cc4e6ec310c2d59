/* A module of the GPU's host driver unloaded while a VM has the GPU ([gpu] unload_driver), and
 * loaded again at the hand-back before the GPU's functions go back to its driver. One step per
 * module, in the order the kernel allows (the modules using one go first: nvidia_drm,
 * nvidia_modeset, nvidia_uvm, then nvidia); undone in reverse, each loads after what it uses.
 * modules.c says what the kernel does and refuses. */
#include <stdio.h>

#include "modules.h"
#include "step.h"

static int module_apply(struct run_ctx *c, struct step *s) {
        return module_unload(s->target, now_usec() + c->timeout);
}

static int module_undo(struct run_ctx *c, struct step *s) {
        return module_load(s->target);
}

static void module_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "load module %s again", s->target);
        else if (s->state != STEP_SKIPPED && s->note[0])
                snprintf(buf, size, "unload module %s (%s)", s->target, s->note);
        else
                snprintf(buf, size, "unload module %s", s->target);
}

/* The kernel's own time, like a sysfs write's: the module's exit or init (its probes). */
const struct step_kind step_module = {
        .name = "module", .apply = module_apply, .undo = module_undo, .describe = module_describe,
        .time_whole = true, .time_account = TIME_SYSFS,
};
