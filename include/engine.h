/* The engine executes a plan: for each step it records the intent in the journal, applies it,
 * records the result; on failure it undoes the steps done so far, in reverse. */
#pragma once
#include "plan.h"

/* Takes (want) or lets go of the GPU lock (c->lock), as the next step needs; taking it waits for
 * another call's hand-over or hand-back (journal_lock). Never taken in a dry run. */
int engine_lock(struct run_ctx *c, bool want);
/* Returns 0, or the failed step's negative errno after rolling back (the message names the step).
 * Each step runs with the GPU lock, or without it (a kind that says so: the scripts). */
int engine_apply(struct run_ctx *c, struct plan *p);
/* -EINPROGRESS (logged, naming the step and the PID) when a write a step left blocked in the
 * kernel has not returned yet: the device must not be touched until it has. */
int engine_check_writers(const struct plan *p);
/* Undoes every started or done step, in reverse; goes on past failures and returns the first. */
int engine_undo(struct run_ctx *c, struct plan *p);
