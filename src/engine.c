#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "journal.h"
#include "log.h"
#include "sysfs.h"
#include "timing.h"

static void log_step_done(const struct plan *p, const struct step *s, size_t index, bool undo) {
        char what[256];

        step_describe(s, undo, what, sizeof(what));
        log_info("%s %zu/%zu %s (%.1f ms)", undo ? "undone" : "done", index + 1, p->n_steps, what,
                 (double) s->duration / USEC_PER_MSEC);
}

/* The longest a step may take, waits and all (holders, writes, a probe, a DRM card, a job): for
 * the lock's holder to say how long a call waiting for it may have to wait. */
#define STEP_WAITS 4

/* Before a plan is known: the host's snapshot and the desktop's state, whose D-Bus calls have
 * sd-bus's own timeout (25 s) besides ours. */
#define PLANNING_USEC(c) (STEP_WAITS * (c)->timeout + 60 * USEC_PER_SEC)

/* How long the lock may be held from now on for what is left of p: each step still to apply, and
 * its undo in a rollback; each step in place, its undo; nothing for the rest. Unlocked steps do
 * not count. */
static usec_t lock_bound(const struct run_ctx *c, const struct plan *p) {
        usec_t bound = c->timeout;

        for (size_t i = 0; i < p->n_steps; i++) {
                const struct step *s = &p->steps[i];
                unsigned times = s->state == STEP_PLANNED ? 2 : s->state == STEP_DONE || s->state == STEP_STARTED;

                if (!s->kind->unlocked)
                        bound += times * (s->kind->script_deadline ? MAX(STEP_WAITS * c->timeout,
                                          c->script_timeout + 2 * c->timeout) : STEP_WAITS * c->timeout);
        }
        return bound;
}

int engine_lock(struct run_ctx *c, bool want) {
        if (c->dry_run || want == (c->lock >= 0))
                return 0;
        if (!want) {
                close(c->lock);
                c->lock = -1;
                return 0;
        }
        /* Until the plan says better (lock_for). */
        c->lock = journal_lock(now_usec() + c->timeout, now_usec() + PLANNING_USEC(c));
        return c->lock < 0 ? c->lock : 0;
}

/* The lock taken (want) or not, saying for how long the rest of p may hold it. */
static int lock_for(struct run_ctx *c, const struct plan *p, bool want) {
        int r = engine_lock(c, want);

        return r < 0 || c->lock < 0 ? r : journal_lock_until(c->lock, now_usec() + lock_bound(c, p));
}

int engine_apply(struct run_ctx *c, struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++) {
                struct step *s = &p->steps[i];
                char what[256];
                usec_t start;
                int r;

                if (s->state != STEP_PLANNED)
                        continue;
                log_set_step(s->kind->name);
                r = lock_for(c, p, !s->kind->unlocked);
                if (r < 0) {
                        engine_undo(c, p);
                        return r;
                }
                /* Intent first: if the hook dies inside apply, the next release undoes this step too
                 * (every undo works from any state in between). */
                s->state = STEP_STARTED;
                r = journal_save(p);
                if (r >= 0) {
                        start = now_usec();
                        r = s->kind->apply(c, s);
                        s->duration = now_usec() - start;
                        if (s->kind->time_whole)
                                timing_add(s->kind->time_account, start);
                }
                if (r < 0) {
                        step_describe(s, false, what, sizeof(what));
                        /* A write of this step still pending in the kernel: recorded before the
                         * rollback, which leaves the step to the next release or --recover. */
                        s->writer = r == -EINPROGRESS ? sysfs_take_blocked_writer() : 0;
                        if (s->writer)
                                journal_save(p);
                        char left[1024];
                        engine_undo(c, p);
                        log_set_step(s->kind->name);
                        if (plan_left(p, left, sizeof(left)) == 0)
                                log_error_errno(r, "hand-over of %s failed at step %zu/%zu (%s): %m; the host "
                                                "was restored", p->vm, i + 1, p->n_steps, what);
                        else
                                log_error_errno(r, "hand-over of %s failed at step %zu/%zu (%s): %m; rolling back "
                                                "was incomplete, left to undo: %s; the journal in " JOURNAL_DIR
                                                " keeps it for `qemu-hook --recover %s` (or the VM's release)",
                                                p->vm, i + 1, p->n_steps, what, left, p->vm);
                        return r;
                }
                s->state = STEP_DONE;
                log_step_done(p, s, i, false);
                r = journal_save(p);
                if (r < 0) {
                        engine_undo(c, p);
                        return r;
                }
        }
        log_set_step(NULL);
        return 0;
}

int engine_check_writers(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++) {
                const struct step *s = &p->steps[i];
                char what[256], wchan[64];

                if (s->writer <= 0 || !sysfs_writer_blocked(s->writer, wchan, sizeof(wchan)))
                        continue;
                /* Touching the device now would block this call too (the kernel holds the device's
                 * lock for the pending write), and libvirtd with it. */
                step_describe(s, false, what, sizeof(what));
                log_set_step(s->kind->name);
                return log_error_errno(EINPROGRESS, "%s: step %zu (%s) has a write still blocked in the kernel, PID %d "
                                       "(in %s); nothing done: once it has returned, `qemu-hook --recover %s` (or the "
                                       "VM's next release) finishes the hand-back", p->vm, i + 1, what, s->writer,
                                       wchan, p->vm);
        }
        return 0;
}

/* Whether an undo after steps[i] (later in the plan, undone earlier) on the same device failed or
 * was left blocked: then steps[i] must wait (step_kind.device_ordered). */
static bool device_undo_failed(const struct plan *p, size_t i) {
        const struct step *s = &p->steps[i];

        for (size_t j = i + 1; s->kind->device_ordered && j < p->n_steps; j++) {
                const struct step *t = &p->steps[j];
                if (t->kind->device_ordered && strcmp(t->target, s->target) == 0 &&
                    (t->state == STEP_DONE || t->state == STEP_STARTED))
                        return true;
        }
        return false;
}

int engine_undo(struct run_ctx *c, struct plan *p) {
        int first;

        /* Every undo under the lock, taken once: without it nothing is undone and the journal
         * keeps it all, rather than some steps undone out of order around one left. */
        first = lock_for(c, p, true);
        if (first < 0)
                return first;

        for (size_t i = p->n_steps; i-- > 0;) {
                struct step *s = &p->steps[i];
                usec_t start;
                int r;

                if (s->state != STEP_DONE && s->state != STEP_STARTED)
                        continue;
                log_set_step(s->kind->name);
                if (c->lock >= 0)
                        journal_lock_until(c->lock, now_usec() + lock_bound(c, p));
                /* Its device is locked by a write still pending in the kernel (sysfs_write_deadline):
                 * touching it would block this call too. Left for when the write has returned. */
                if (s->writer && sysfs_writer_blocked(s->writer, (char[64]) {}, 64)) {
                        first = first ?: -EINPROGRESS;
                        continue;
                }
                /* A later step on its device still in place: undoing this one first would undo
                 * out of order (a BAR resized with a driver bound, a move back from a driver the
                 * device is not on). */
                if (device_undo_failed(p, i)) {
                        first = first ?: -EBUSY;
                        continue;
                }
                start = now_usec();
                r = s->kind->undo(c, s);
                s->duration = now_usec() - start;
                if (s->kind->time_whole)
                        timing_add(s->kind->time_account, start);
                if (r < 0) {
                        /* Keep going: every step undone is one less thing wrong with the host. A
                         * write of the undo left pending is recorded like the hand-over's. */
                        first = first ?: r;
                        s->writer = r == -EINPROGRESS ? sysfs_take_blocked_writer() : 0;
                        journal_save(p);
                        continue;
                }
                s->writer = 0;
                s->state = STEP_UNDONE;
                log_step_done(p, s, i, true);
                journal_save(p);
        }
        log_set_step(NULL);
        return first;
}
