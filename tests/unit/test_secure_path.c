/* secure-path.c: the walk reaches what the kernel would reach (links, "..", ".", slashes), stops
 * where it would stop (ELOOP at the kernel's limit), says nothing of a path that does not exist,
 * and refuses what is not root's, naming it. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "stderr-capture.h"

#include "secure-path.h"

/* Created by tests/run-units.sh in the tmpfs it mounts on /run (mode 0755, root's). */
#define PRIVATE_RUN_MARKER "/run/.qemu-hook-unit-tests"

static char dir[] = "/tmp/test_secure_path.XXXXXX";
static char messages[4096];     /* what the last walk wrote to stderr */

static int walk(int dir_fd, const char *dir_real, const char *path, bool check_owner, struct secure_path *sp) {
        struct capture cap = capture_start();
        int r;

        r = secure_path_open(dir_fd, dir_real, path, "test", check_owner, sp);
        capture_end(&cap, messages, sizeof(messages));
        return r;
}

static void sh(const char *fmt, ...) {
        char cmd[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        assert_int_equal(system(cmd), 0);
}

/* path (relative to dir) reaches what the kernel reaches, and says where that really is. */
static void assert_reaches(const char *path) {
        char full[PATH_MAX], real[PATH_MAX];
        struct secure_path sp;
        struct stat st;

        snprintf(full, sizeof(full), "%s/%s", dir, path);
        assert_non_null(realpath(full, real));
        assert_int_equal(stat(full, &st), 0);
        assert_int_equal(walk(AT_FDCWD, NULL, full, false, &sp), 0);
        assert_string_equal(messages, "");
        assert_string_equal(sp.real, real);
        assert_int_equal(sp.st.st_ino, st.st_ino);
        assert_int_equal(sp.st.st_dev, st.st_dev);
        assert_true(sp.fd >= 0);
        if (sp.dir_fd >= 0) {
                /* the directory it is in, by its real path */
                struct stat parent, want;
                *strrchr(real, '/') = '\0';
                assert_int_equal(fstat(sp.dir_fd, &parent), 0);
                assert_int_equal(stat(*real ? real : "/", &want), 0);
                assert_int_equal(parent.st_ino, want.st_ino);
                assert_string_equal(secure_path_name(&sp), strrchr(sp.real, '/') + 1);
        }
        secure_path_close(&sp);
        assert_int_equal(sp.fd, -1);
}

static void test_reaches_what_the_kernel_reaches(void **state) {
        struct secure_path sp, from;
        char cwd[PATH_MAX];

        sh("mkdir -p %s/a/b && echo x > %s/a/b/file", dir, dir);
        sh("ln -s a/b %s/rel && ln -s ../a/b/file %s/a/up && ln -s %s/a %s/abs && ln -s rel %s/chain",
           dir, dir, dir, dir, dir);
        assert_reaches("a/b/file");
        assert_reaches("rel/file");
        assert_reaches("a/up");
        assert_reaches("abs/b/./file");
        assert_reaches(".//a/b/../b//file");
        assert_reaches("chain/file");
        assert_reaches("rel/..");               /* the link's target's parent: a, not dir */
        assert_reaches("a/b/");
        assert_reaches("abs");
        assert_reaches("../../../../../..");    /* "/" */

        /* relative to the working directory: walked from "/" all the same */
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        assert_int_equal(chdir(dir), 0);
        assert_int_equal(walk(AT_FDCWD, NULL, "rel/file", false, &sp), 0);
        assert_int_equal(chdir(cwd), 0);
        assert_non_null(strstr(sp.real, "/a/b/file"));
        assert_true(sp.real[0] == '/');
        secure_path_close(&sp);

        /* relative to a directory already walked */
        assert_int_equal(walk(AT_FDCWD, NULL, dir, false, &from), 0);
        assert_int_equal(walk(from.fd, from.real, "chain/../b/file", false, &sp), 0);
        assert_int_equal(strncmp(sp.real, from.real, strlen(from.real)), 0);
        assert_string_equal(sp.real + strlen(from.real), "/a/b/file");
        secure_path_close(&sp);
        secure_path_close(&from);
}

static void test_missing_is_silent(void **state) {
        struct secure_path sp;
        char p[PATH_MAX];

        sh("mkdir -p %s/m && echo x > %s/m/file && ln -sfn nowhere %s/m/dangling", dir, dir, dir);
        snprintf(p, sizeof(p), "%s/m/nope/x", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), -ENOENT);
        assert_string_equal(messages, "");
        assert_int_equal(sp.fd, -1);
        snprintf(p, sizeof(p), "%s/m/file/x", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), -ENOTDIR);
        assert_string_equal(messages, "");
        snprintf(p, sizeof(p), "%s/m/dangling", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), -ENOENT);
        assert_string_equal(messages, "");
}

static void test_links_limit(void **state) {
        struct secure_path sp;
        char p[PATH_MAX], want[PATH_MAX + 64];

        /* l0 -> file, lN -> l(N-1): l39 takes 40 links, l40 one more than the kernel follows */
        sh("mkdir -p %s/loop && cd %s/loop && echo x > file && ln -s file l0 && "
           "i=1; while [ $i -le 40 ]; do ln -s l$((i - 1)) l$i; i=$((i + 1)); done && ln -s self self", dir, dir);
        snprintf(p, sizeof(p), "%s/loop/l39", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), 0);
        assert_true(S_ISREG(sp.st.st_mode));
        secure_path_close(&sp);
        snprintf(p, sizeof(p), "%s/loop/l40", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), -ELOOP);
        assert_non_null(strstr(messages, "Too many levels of symbolic links"));
        snprintf(p, sizeof(p), "%s/loop/self", dir);
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), -ELOOP);
        snprintf(want, sizeof(want), "qemu-hook: test: %s: Too many levels of symbolic links\n", p);
        assert_string_equal(messages, want);
}

static void test_owner(void **state) {
        char safe[] = "/run/test_secure_path.XXXXXX", p[PATH_MAX], want[PATH_MAX * 3];
        struct secure_path sp;

        if (geteuid() != 0 || access(PRIVATE_RUN_MARKER, F_OK) < 0)
                skip();         /* needs root, and a path of root's to make files in */
        assert_non_null(mkdtemp(safe));
        assert_int_equal(chmod(safe, 0755), 0);
        sh("cd %s && mkdir -m 0755 ok open && chmod 0775 open && echo x > ok/file && echo x > open/file && "
           "chmod 0664 ok/file && ln -s ok/file link && ln -s ok/file theirs && chown -h 65534 theirs && "
           "mkdir -m 0755 ok/sub && chown 65534 ok/sub", safe);

        /* every directory on the way... */
        snprintf(p, sizeof(p), "%s/open/file", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), -EPERM);
        snprintf(want, sizeof(want), "qemu-hook: test: refusing it, %s/open is writable by group or others "
                 "(mode 0775; chmod go-w %s/open)\n", safe, safe);
        assert_string_equal(messages, want);
        assert_int_equal(sp.fd, -1);
        /* ...but only on the way to something: an unsafe directory on the way to nothing is silent */
        snprintf(p, sizeof(p), "%s/open/missing", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), -ENOENT);
        assert_string_equal(messages, "");
        snprintf(p, sizeof(p), "%s/ok/sub/missing", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), -ENOENT);
        snprintf(p, sizeof(p), "%s/ok/sub/..", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), -EPERM);
        snprintf(want, sizeof(want), "qemu-hook: test: refusing it, %s/ok/sub is owned by uid 65534, not root "
                 "(chown root %s/ok/sub)\n", safe, safe);
        assert_string_equal(messages, want);

        /* a link root made is followed; one someone else made is not */
        snprintf(p, sizeof(p), "%s/link", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), 0);
        /* the object itself is the caller's to check */
        assert_int_equal(secure_path_check(&sp, "test", false), 0);
        assert_int_equal(secure_path_check(&sp, "test", true), -EPERM);
        secure_path_close(&sp);
        snprintf(p, sizeof(p), "%s/theirs", safe);
        assert_int_equal(walk(AT_FDCWD, NULL, p, true, &sp), -EPERM);
        snprintf(want, sizeof(want), "qemu-hook: test: refusing it, the symbolic link %s is owned by uid 65534, "
                 "not root (chown -h root %s)\n", p, p);
        assert_string_equal(messages, want);
        /* without the check, nothing of it matters */
        assert_int_equal(walk(AT_FDCWD, NULL, p, false, &sp), 0);
        secure_path_close(&sp);

        sh("rm -rf %s", safe);
}

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[PATH_MAX + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reaches_what_the_kernel_reaches),
                cmocka_unit_test(test_missing_is_silent),
                cmocka_unit_test(test_links_limit),
                cmocka_unit_test(test_owner),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
