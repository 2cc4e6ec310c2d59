#include <stdio.h>
#include <string.h>

#include "step.h"

static const struct step_kind *const step_kinds[] = {
        &step_unit, &step_user_unit, &step_vtcon, &step_framebuffer,
        &step_holders, &step_pci_driver, &step_cpus, &step_script,
        &step_inhibit, &step_command,
        &step_hugepages, &step_governor,
        &step_reset_method, &step_bar_sizes, &step_module,
};

static const char *const state_names[_STEP_STATE_MAX] = {
        [STEP_PLANNED] = "planned", [STEP_SKIPPED] = "skipped", [STEP_STARTED] = "started",
        [STEP_DONE] = "done",       [STEP_UNDONE] = "undone",   [STEP_FAILED] = "failed",
};

const struct step_kind *step_kind_by_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(step_kinds); i++)
                if (strcmp(step_kinds[i]->name, name) == 0)
                        return step_kinds[i];
        return NULL;
}

const char *step_state_to_string(enum step_state s) {
        return s < _STEP_STATE_MAX ? state_names[s] : "?";
}

int step_state_from_string(const char *s) {
        for (int i = 0; i < _STEP_STATE_MAX; i++)
                if (strcmp(state_names[i], s) == 0)
                        return i;
        return -1;
}

void step_describe(const struct step *s, bool undo, char *buf, size_t size) {
        s->kind->describe(s, undo, buf, size);
}
