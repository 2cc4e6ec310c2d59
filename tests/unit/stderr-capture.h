/* What the code under test writes to stderr (log.c: "qemu-hook: MESSAGE"), caught in a file for
 * the duration of one call: capture_start(), the call, capture_end(buf, size). Include after
 * cmocka. */
#pragma once
#include <stdio.h>
#include <unistd.h>

struct capture {
        FILE *tmp;
        int saved;
};

static struct capture capture_start(void) {
        struct capture c = { tmpfile(), dup(STDERR_FILENO) };

        assert_non_null(c.tmp);
        assert_true(c.saved >= 0);
        fflush(stderr);
        assert_true(dup2(fileno(c.tmp), STDERR_FILENO) >= 0);
        return c;
}

static void capture_end(struct capture *c, char *buf, size_t size) {
        size_t n;

        fflush(stderr);
        dup2(c->saved, STDERR_FILENO);
        close(c->saved);
        rewind(c->tmp);
        n = fread(buf, 1, size - 1, c->tmp);
        buf[n] = '\0';
        fclose(c->tmp);
}
