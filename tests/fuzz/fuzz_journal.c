/* libFuzzer target: a hand-over journal (/run/qemu-hook/VM.state) as journal_load reads it,
 * through journal_read on an in-memory FILE: nothing under /run is touched. A journal it accepts
 * is one an undo may trust: every step has a kind and a state, every field fits; anything else
 * aborts. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_setup(NULL, -1, NULL);
        return 0;
}

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "journal invariant broken: %s\n", #x); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct plan p = { .n_steps = 99 };
        FILE *f;
        int r;

        /* fmemopen refuses an empty buffer; an empty file reads the same as /dev/null. */
        f = size ? fmemopen((void *) data, size, "r") : fopen("/dev/null", "re");
        if (!f) {
                perror("fmemopen");
                abort();
        }
        r = journal_read(f, "fuzz.state", "fuzz", &p);
        fclose(f);
        if (r < 0) {
                CHECK(r == -EBADMSG && !p.steps && p.n_steps == 0);
                return 0;
        }
        CHECK(strcmp(p.vm, "fuzz") == 0);
        CHECK(strnlen(p.user, sizeof(p.user)) < sizeof(p.user));
        CHECK(strnlen(p.user_bus, sizeof(p.user_bus)) < sizeof(p.user_bus));
        for (size_t i = 0; i < p.n_steps; i++) {
                const struct step *s = &p.steps[i];

                CHECK(s->kind && step_kind_by_name(s->kind->name) == s->kind);
                CHECK(s->state < _STEP_STATE_MAX);
                CHECK(s->writer >= 0);
                CHECK(strnlen(s->target, STEP_FIELD_LEN) < STEP_FIELD_LEN);
                CHECK(strnlen(s->from, STEP_FIELD_LEN) < STEP_FIELD_LEN);
                CHECK(strnlen(s->to, STEP_FIELD_LEN) < STEP_FIELD_LEN);
                CHECK(strnlen(s->note, STEP_FIELD_LEN) < STEP_FIELD_LEN);
        }
        plan_free(&p);
        return 0;
}
