/* qemu-hook --status: what is handed over now, and the state of what a hand-over touches. */
#pragma once
#include <stdbool.h>
#include <stdio.h>
#include "step.h"

/* Prints it to f, as text or as one JSON object; c->cfg may be NULL (no config). Read only. */
int status_print(struct run_ctx *c, bool json, FILE *f);
