/* qemu-hook --check [VM]: a readiness report, read only. */
#pragma once
#include <stdbool.h>
#include <stdio.h>
#include "step.h"

struct check_args {
        const char *config;
        bool explicit_config;   /* --config given: its absence is an error, not "no config" */
        const char *hooks_dir;  /* where the hook (qemu) is */
        const char *vm;         /* NULL: every VM libvirt knows */
        const char *self;       /* argv[0]: the front end that ran us, when it holds a '/' */
        bool json, verbose;
};

/* Prints the findings to f, grouped, as text or as one JSON object. Returns 0 when a hand-over
 * would go through, 1 when something would make it fail. */
int check_run(struct run_ctx *c, const struct check_args *a, FILE *f);
