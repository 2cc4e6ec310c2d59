/* The engine on plans of fake steps that record what was done to them: the order of a rollback,
 * the undo of steps left started, an undo that fails, a journal that cannot be written, and the
 * lock held for every step but those that run without it. The journal is real: these run only in
 * the private /run of tests/run-units.sh (private-run.h), and skip elsewhere. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "engine.h"
#include "journal.h"
#include "log.h"
#include "private-run.h"

/* What happened, in order: "+A" applied A, "-A" undid A, "!A" apply of A failed. A step fails
 * its apply when its `to` is "fail", its undo when its `from` is "fail". */
static char events[256];
/* Whether the GPU lock was free, seen from another open file, during each apply. */
static char lock_seen[64];

static bool lock_free(void) {
        int fd = open(JOURNAL_DIR "/lock", O_RDWR | O_CLOEXEC);
        bool free_ = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;

        if (fd >= 0)
                close(fd);
        return free_;
}

static void record(const char *what, const struct step *s) {
        size_t len = strlen(events);
        snprintf(events + len, sizeof(events) - len, "%s%s%s", len ? " " : "", what, s->target);
}

static int fake_apply(struct run_ctx *c, struct step *s) {
        size_t len = strlen(lock_seen);
        snprintf(lock_seen + len, sizeof(lock_seen) - len, "%s", lock_free() ? "f" : "h");
        if (strcmp(s->to, "fail") == 0) {
                record("!", s);
                return -EIO;
        }
        if (strcmp(s->to, "rmdir") == 0) {
                /* The journal can no longer be written after this step. */
                (void) unlink(JOURNAL_DIR "/test.state");
                assert_int_equal(rename(JOURNAL_DIR, JOURNAL_DIR ".gone"), 0);
        }
        record("+", s);
        return 0;
}

static int fake_undo(struct run_ctx *c, struct step *s) {
        if (strcmp(s->from, "fail") == 0) {
                record("!-", s);
                return -EBUSY;
        }
        record("-", s);
        return 0;
}

static void fake_describe(const struct step *s, bool undo, char *buf, size_t size) {
        snprintf(buf, size, "%s %s", undo ? "undo" : "do", s->target);
}

static const struct step_kind fake = {
        .name = "unit", .apply = fake_apply, .undo = fake_undo, .describe = fake_describe,
};
static const struct step_kind fake_unlocked = {
        .name = "script", .apply = fake_apply, .undo = fake_undo, .describe = fake_describe, .unlocked = true,
};

static struct run_ctx ctx(void) {
        return (struct run_ctx) { .vm = "test", .timeout = USEC_PER_SEC, .lock = -1, .xml_fd = -1 };
}

static struct plan plan(const char *spec) {
        struct plan p = { .vm = "test" };
        char target[2] = "";

        /* One step per letter; a lower-case letter is skipped, '*' after a letter: its apply fails. */
        for (const char *c = spec; *c; c++) {
                if (*c == '*' || *c == '~')
                        continue;
                target[0] = *c;
                struct step *s = plan_add(&p, &fake, target, c[1] == '~' ? "fail" : "", c[1] == '*' ? "fail" : "x");
                if (*c >= 'a' && *c <= 'z')
                        s->state = STEP_SKIPPED;
        }
        return p;
}

static int fresh(void **state) {
        events[0] = lock_seen[0] = '\0';
        if (private_run) {
                (void) rename(JOURNAL_DIR ".gone", JOURNAL_DIR);
                (void) journal_remove("test");
        }
        return 0;
}

static void test_apply_in_order(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("AbC");

        REQUIRE_PRIVATE_RUN();
        assert_int_equal(engine_apply(&c, &p), 0);
        assert_string_equal(events, "+A +C");
        assert_int_equal(p.steps[0].state, STEP_DONE);
        assert_int_equal(p.steps[1].state, STEP_SKIPPED);
        engine_lock(&c, false);
        plan_free(&p);
}

/* The failed step first (it may have done part of its work), then the others in reverse; the
 * skipped one never. */
static void test_rollback_order(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("AbCD*E"), loaded;

        REQUIRE_PRIVATE_RUN();
        assert_int_equal(engine_apply(&c, &p), -EIO);
        assert_string_equal(events, "+A +C !D -D -C -A");
        assert_int_equal(p.steps[3].state, STEP_UNDONE);
        assert_int_equal(p.steps[4].state, STEP_PLANNED);
        /* The journal says so too: nothing left in place for a release to undo. */
        assert_int_equal(journal_load("test", &loaded), 0);
        assert_true(plan_settled(&loaded));
        assert_int_equal(loaded.steps[3].state, STEP_UNDONE);
        plan_free(&loaded);
        engine_lock(&c, false);
        plan_free(&p);
}

/* A hook killed inside a step leaves it started: the next release undoes it with the rest. */
static void test_undo_of_started_steps(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("ABC");

        REQUIRE_PRIVATE_RUN();
        p.steps[0].state = STEP_DONE;
        p.steps[1].state = STEP_STARTED;
        assert_int_equal(engine_undo(&c, &p), 0);
        assert_string_equal(events, "-B -A");
        assert_int_equal(p.steps[1].state, STEP_UNDONE);
        assert_int_equal(p.steps[2].state, STEP_PLANNED);
        engine_lock(&c, false);
        plan_free(&p);
}

/* An undo that fails does not stop the others; the first failure is returned, and the step stays
 * done, in the journal, for --recover. */
static void test_undo_goes_on_past_a_failure(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("AB~C"), loaded;

        REQUIRE_PRIVATE_RUN();
        for (size_t i = 0; i < p.n_steps; i++)
                p.steps[i].state = STEP_DONE;
        assert_int_equal(engine_undo(&c, &p), -EBUSY);
        assert_string_equal(events, "-C !-B -A");
        assert_int_equal(p.steps[1].state, STEP_DONE);
        assert_int_equal(journal_load("test", &loaded), 0);
        assert_int_equal(loaded.n_steps, 3);
        assert_int_equal(loaded.steps[0].state, STEP_UNDONE);
        assert_int_equal(loaded.steps[1].state, STEP_DONE);
        assert_int_equal(loaded.steps[2].state, STEP_UNDONE);
        plan_free(&loaded);
        engine_lock(&c, false);
        plan_free(&p);
}

/* The intent of a step is recorded before it is applied: when the journal cannot be written, the
 * step is not applied at all, and what was done is rolled back. */
static void test_journal_write_failure_stops_before_the_step(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("ABC");

        REQUIRE_PRIVATE_RUN();
        strscpy(p.steps[0].to, "rmdir", STEP_FIELD_LEN);
        assert_true(engine_apply(&c, &p) < 0);
        assert_string_equal(events, "+A -A");
        assert_int_equal(p.steps[1].state, STEP_PLANNED);
        engine_lock(&c, false);
        assert_int_equal(rename(JOURNAL_DIR ".gone", JOURNAL_DIR), 0);
        plan_free(&p);
}

/* The lock held elsewhere past its holder's word: nothing is undone, not some steps around
 * others, and the journal keeps it all. */
static void test_undo_without_the_lock_undoes_nothing(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("ABC");
        int other;

        REQUIRE_PRIVATE_RUN();
        for (size_t i = 0; i < p.n_steps; i++)
                p.steps[i].state = STEP_DONE;
        other = journal_lock(now_usec(), now_usec());
        assert_true(other >= 0);
        c.timeout = 50 * USEC_PER_MSEC;
        assert_int_equal(engine_undo(&c, &p), -ETIMEDOUT);
        assert_string_equal(events, "");
        for (size_t i = 0; i < p.n_steps; i++)
                assert_int_equal(p.steps[i].state, STEP_DONE);
        close(other);
        plan_free(&p);
}

/* Every step under the lock but a kind that says otherwise (the hook scripts). */
static void test_unlocked_steps_run_without_the_lock(void **state) {
        struct run_ctx c = ctx();
        struct plan p = plan("ABC");

        REQUIRE_PRIVATE_RUN();
        p.steps[1].kind = &fake_unlocked;
        assert_int_equal(engine_apply(&c, &p), 0);
        assert_string_equal(lock_seen, "hfh");
        engine_lock(&c, false);
        assert_true(lock_free());
        plan_free(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_apply_in_order, fresh),
                cmocka_unit_test_setup(test_rollback_order, fresh),
                cmocka_unit_test_setup(test_undo_of_started_steps, fresh),
                cmocka_unit_test_setup(test_undo_goes_on_past_a_failure, fresh),
                cmocka_unit_test_setup(test_journal_write_failure_stops_before_the_step, fresh),
                cmocka_unit_test_setup(test_undo_without_the_lock_undoes_nothing, fresh),
                cmocka_unit_test_setup(test_unlocked_steps_run_without_the_lock, fresh),
        };

        log_setup("test", -1, NULL);
        return cmocka_run_group_tests(tests, check_private_run, NULL);
}
