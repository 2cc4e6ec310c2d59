/* The journal: VM names escaped into file names, plans saved and loaded back, corrupt files
 * refused. journal.c writes only to JOURNAL_DIR (/run/qemu-hook), so the tests that touch files
 * run only inside a private mount namespace with its own tmpfs on /run (tests/run-units.sh sets
 * one up) and skip otherwise: they must never touch the journal of a VM running on this host. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "journal.h"
#include "private-run.h"

/* ---- journal_escape: no file system needed ---- */

struct escape_case {
        const char *vm;
        const char *file;
};

static const struct escape_case escape_cases[] = {
        { "win10", "win10" },
        { "Win-10_gaming.v2", "Win-10_gaming.v2" },
        { "a/b", "a\\x2fb" },
        { "..", "\\x2e." },
        { ".", "\\x2e" },
        { ".hidden", "\\x2ehidden" },
        { "a..b", "a..b" },
        { "my vm", "my\\x20vm" },
        { "a\nb", "a\\x0ab" },
        { "tab\there", "tab\\x09here" },
        { "ü", "\\xc3\\xbc" },
        { "ゲーム", "\\xe3\\x82\\xb2\\xe3\\x83\\xbc\\xe3\\x83\\xa0" },
        /* The escape character itself is escaped, or "a\x2fb" would be the file of "a/b". */
        { "a\\x2fb", "a\\x5cx2fb" },
        { "-rf", "-rf" },
        { "~root", "\\x7eroot" },
        { "*", "\\x2a" },
        { "win10 #2; [test]=x", "win10\\x20\\x232\\x3b\\x20\\x5btest\\x5d\\x3dx" },
};

static void test_escape_table(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(escape_cases); i++) {
                char buf[256];

                print_message("case: \"%s\"\n", escape_cases[i].vm);
                memset(buf, 'X', sizeof(buf));
                assert_int_equal(journal_escape(escape_cases[i].vm, buf, sizeof(buf)), 0);
                assert_string_equal(buf, escape_cases[i].file);
        }
}

static void assert_safe_file_name(const char *name) {
        assert_true(name[0] != '\0');
        assert_true(name[0] != '.');                    /* not ".", "..", nor hidden */
        assert_null(strchr(name, '/'));
        for (const char *p = name; *p; p++)
                assert_true(*p > ' ' && *p < 0x7f);     /* printable ASCII only */
}

static void test_escape_safe_and_distinct(void **state) {
        char files[ELEMENTSOF(escape_cases)][256];

        for (size_t i = 0; i < ELEMENTSOF(escape_cases); i++) {
                assert_int_equal(journal_escape(escape_cases[i].vm, files[i], sizeof(files[i])), 0);
                assert_safe_file_name(files[i]);
                for (size_t k = 0; k < i; k++)
                        assert_string_not_equal(files[i], files[k]);
        }
}

/* Every byte value alone, and after a letter: 2 * 255 names, all safe and all distinct. */
static void test_escape_every_byte(void **state) {
        static char files[2][256][8];

        for (unsigned c = 1; c < 256; c++) {
                char one[2] = { (char) c, 0 }, two[3] = { 'a', (char) c, 0 };

                assert_int_equal(journal_escape(one, files[0][c], sizeof(files[0][c])), 0);
                assert_int_equal(journal_escape(two, files[1][c], sizeof(files[1][c])), 0);
                assert_safe_file_name(files[0][c]);
                assert_safe_file_name(files[1][c]);
                for (unsigned k = 1; k < c; k++) {
                        assert_string_not_equal(files[0][c], files[0][k]);
                        assert_string_not_equal(files[1][c], files[1][k]);
                }
        }
}

static void test_escape_errors(void **state) {
        char buf[16];

        /* libvirt has no nameless domains; an empty name must not become the file ".state". */
        assert_int_equal(journal_escape("", buf, sizeof(buf)), -EINVAL);
        /* Exactly fitting (15 chars and the NUL) works, one more does not, in either form. */
        assert_int_equal(journal_escape("abcdefghijklmno", buf, sizeof(buf)), 0);
        assert_string_equal(buf, "abcdefghijklmno");
        assert_int_equal(journal_escape("abcdefghijklmnop", buf, sizeof(buf)), -ENAMETOOLONG);
        assert_int_equal(journal_escape("abcdefghijkl/", buf, sizeof(buf)), -ENAMETOOLONG);
        assert_int_equal(journal_escape("abcdefghijk/", buf, sizeof(buf)), 0);
        assert_string_equal(buf, "abcdefghijk\\x2f");
}

/* ---- journal_read on bytes in memory: no file system needed ---- */

static int read_text(const char *text, struct plan *ret) {
        FILE *f = fmemopen((void *) text, strlen(text), "r");
        int r;

        assert_non_null(f);
        r = journal_read(f, "test.state", "win10", ret);
        fclose(f);
        return r;
}

#define STEP_HEAD "[hand-over]\nvm = win10\n[step 1]\nkind = vtcon\nstate = done\n"

/* Only "\xNN", as put_value writes it, is an escape: anything else near a backslash is text.
 * sscanf's %2x took a blank, a sign or a lone digit, and set the byte even when the backslash
 * stayed one. */
static void test_read_escapes(void **state) {
        static const struct {
                const char *value, *want;
        } cases[] = {
                { "a\\x2fb", "a/b" },
                { "\\x3B\\x23", ";#" },
                { "\\x 5", "\\x 5" },
                { "\\x-1", "\\x-1" },
                { "\\x+41", "\\x+41" },
                { "end\\x5", "end\\x5" },
                { "end\\x", "end\\x" },
                { "end\\", "end\\" },
                { "\\x0x41", "\\x0x41" },
                { "\\xc3\\xbc\xc3\xbc", "\xc3\xbc\xc3\xbc" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char text[256];
                struct plan got = {};

                print_message("value: %s\n", cases[i].value);
                snprintf(text, sizeof(text), STEP_HEAD "target = %s\n", cases[i].value);
                assert_int_equal(read_text(text, &got), 0);
                assert_string_equal(got.steps[0].target, cases[i].want);
                plan_free(&got);
        }
}

/* Step numbers and writer PIDs are plain decimal numbers; sscanf took signs, blanks, text after
 * them, and overflowed (undefined behaviour) on long ones. */
static void test_read_numbers(void **state) {
        static const char *const bad[] = {
                "[hand-over]\nversion = 1\n[step 1x]\nkind = vtcon\nstate = done\n",
                "[hand-over]\nversion = 1\n[step +1]\nkind = vtcon\nstate = done\n",
                "[hand-over]\nversion = 1\n[step  1]\nkind = vtcon\nstate = done\n",
                "[hand-over]\nversion = 1\n[step 4294967297]\nkind = vtcon\nstate = done\n",
                "[hand-over]\nversion = 1\n[step 18446744073709551617]\nkind = vtcon\nstate = done\n",
                STEP_HEAD "writer = 4242x\n",
                STEP_HEAD "writer = -4242\n",
                STEP_HEAD "writer = +4242\n",
                STEP_HEAD "writer = 0\n",
                STEP_HEAD "writer = 2147483648\n",
                STEP_HEAD "writer = 99999999999\n",
        };
        struct plan got = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("case: %s\n", bad[i]);
                assert_int_equal(read_text(bad[i], &got), -EBADMSG);
                assert_null(got.steps);
        }
        assert_int_equal(read_text(STEP_HEAD "writer = 2147483647\n", &got), 0);
        assert_int_equal(got.steps[0].writer, 2147483647);
        plan_free(&got);
        assert_int_equal(read_text("[hand-over]\nversion = 1\n[step 01]\nkind = vtcon\nstate = done\n", &got), 0);
        assert_int_equal(got.n_steps, 1);
        plan_free(&got);
}

/* ---- saving and loading: only in a private /run ---- */

static void rm_journal_dir(void) {
        DIR *d = opendir(JOURNAL_DIR);
        struct dirent *de;

        while (d && (de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        /* A directory is what test_unreadable leaves when it fails half way. */
                        assert_int_equal(unlinkat(dirfd(d), de->d_name, de->d_type == DT_DIR ? AT_REMOVEDIR : 0), 0);
        if (d)
                closedir(d);
        assert_true(rmdir(JOURNAL_DIR) == 0 || errno == ENOENT);
}

/* Each file test starts with the directory as journal_lock makes it, and nothing in it. */
static int fresh_dir(void **state) {
        if (!private_run)
                return 0;
        rm_journal_dir();
        int fd = journal_lock(now_usec() + USEC_PER_SEC, 0);
        assert_true(fd >= 0);
        *state = (void *) (intptr_t) fd;
        return 0;
}

static int close_lock(void **state) {
        if (private_run && *state)
                close((int) (intptr_t) *state);
        return 0;
}


static void write_file(const char *name, const char *text) {
        char path[PATH_MAX];
        FILE *f;

        snprintf(path, sizeof(path), JOURNAL_DIR "/%s", name);
        f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

static size_t dir_entries(char names[][NAME_MAX + 1], size_t max) {
        DIR *d = opendir(JOURNAL_DIR);
        struct dirent *de;
        size_t n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && n < max)
                        strscpy(names[n++], de->d_name, NAME_MAX + 1);
        closedir(d);
        return n;
}

static void test_lock(void **state) {
        struct stat st;
        int fd2;
        usec_t start;

        REQUIRE_PRIVATE_RUN();
        assert_int_equal(lstat(JOURNAL_DIR, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0700);

        /* The setup holds the lock: another taker waits until its deadline, then gives up. */
        start = now_usec();
        fd2 = journal_lock(now_usec() + 50 * USEC_PER_MSEC, 0);
        assert_int_equal(fd2, -ETIMEDOUT);
        assert_true(now_usec() - start >= 50 * USEC_PER_MSEC);

        close((int) (intptr_t) *state);
        *state = NULL;
        fd2 = journal_lock(now_usec(), 0);
        assert_true(fd2 >= 0);
        close(fd2);
}

/* A holder that says it needs the lock longer than the taker's own deadline is waited for: a
 * release end never gives up half way through a hand-over of the same GPU. Until the holder's word
 * runs out, and no longer. */
static void test_lock_waits_as_long_as_the_holder_says(void **state) {
        int fd = (int) (intptr_t) *state, fd2, ready[2];
        char c;
        usec_t start;
        pid_t child;

        REQUIRE_PRIVATE_RUN();
        assert_int_equal(journal_lock_until(fd, now_usec() + 300 * USEC_PER_MSEC), 0);
        start = now_usec();
        assert_int_equal(journal_lock(now_usec() + 20 * USEC_PER_MSEC, 0), -ETIMEDOUT);
        assert_true(now_usec() - start >= 300 * USEC_PER_MSEC);

        /* A holder that says 5 s and lets go after 200 ms: taken then, well past the 20 ms. */
        close(fd);
        *state = NULL;
        assert_int_equal(pipe(ready), 0);
        child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                int held = journal_lock(now_usec() + USEC_PER_SEC, now_usec() + 5 * USEC_PER_SEC);
                (void) !write(ready[1], "x", 1);
                nanosleep(&(struct timespec) { .tv_nsec = 200 * 1000 * 1000 }, NULL);
                _exit(held >= 0 ? 0 : 1);
        }
        assert_int_equal(read(ready[0], &c, 1), 1);
        start = now_usec();
        fd2 = journal_lock(now_usec() + 20 * USEC_PER_MSEC, 0);
        assert_true(fd2 >= 0);
        assert_true(now_usec() - start >= 100 * USEC_PER_MSEC);
        assert_true(now_usec() - start < 3 * USEC_PER_SEC);
        close(fd2);
        assert_int_equal(waitpid(child, &(int) { 0 }, 0), child);
        close(ready[0]);
        close(ready[1]);
}

/* A journal directory somebody else could write decides what root undoes: refused. */
static void test_lock_refuses_open_dir(void **state) {
        REQUIRE_PRIVATE_RUN();
        assert_int_equal(chmod(JOURNAL_DIR, 0755), 0);
        assert_int_equal(journal_lock(now_usec(), 0), -EPERM);
        assert_int_equal(chmod(JOURNAL_DIR, 0700), 0);

        close((int) (intptr_t) *state);
        *state = NULL;
        rm_journal_dir();
        assert_int_equal(symlink("/tmp", JOURNAL_DIR), 0);
        assert_int_equal(journal_lock(now_usec(), 0), -EPERM);
        assert_int_equal(unlink(JOURNAL_DIR), 0);
}

static const char *const tricky[] = {
        "plain",
        "with spaces inside",
        "key=value=more",
        "semi;colon ; after blank",
        "hash#inside # after blank",
        "[bracketed] section-like",
        "= leading equals",
        ": colon: too",
};

/* A plan with every step kind and every state, its fields holding what INI syntax cares about. */
static void make_plan(struct plan *p, const char *vm, bool tricky_fields) {
        const struct step_kind *kinds[] = { &step_unit, &step_user_unit, &step_vtcon, &step_framebuffer,
                                            &step_holders, &step_pci_driver, &step_cpus, &step_script,
                                            &step_hugepages, &step_governor, &step_reset_method,
                                            &step_bar_sizes };
        size_t n = 0;

        *p = (struct plan) {};
        strscpy(p->vm, vm, sizeof(p->vm));
        /* The desktop user and bus, which the hand-back needs when the config is gone. */
        if (tricky_fields) {
                strscpy(p->user, "liss; #x", sizeof(p->user));
                strscpy(p->user_bus, "unix:path=/run/user/1000/bus", sizeof(p->user_bus));
        }
        for (size_t k = 0; k < ELEMENTSOF(kinds); k++)
                for (int st = 0; st < _STEP_STATE_MAX; st++, n++) {
                        char target[STEP_FIELD_LEN], from[STEP_FIELD_LEN], to[STEP_FIELD_LEN];
                        struct step *s;

                        size_t m = tricky_fields ? ELEMENTSOF(tricky) : 1;

                        snprintf(target, sizeof(target), "%s %zu", tricky[n % m], n);
                        snprintf(from, sizeof(from), "%s", tricky[(n + 1) % m]);
                        snprintf(to, sizeof(to), "%s", n % 5 == 0 ? "" : tricky[(n + 2) % m]);
                        s = plan_add(p, kinds[k], target, from, to);
                        s->state = (enum step_state) st;
                        snprintf(s->note, sizeof(s->note), "%s", tricky[(n + 3) % m]);
                }
        /* Real values too: the fields as the planner and the steps fill them. */
        struct step *s = plan_add(p, &step_pci_driver, "0000:0d:00.0", "amdgpu", "vfio-pci");
        s->state = STEP_DONE;
        strscpy(s->data.pci.override, "amdgpu", sizeof(s->data.pci.override));
        s = plan_add(p, &step_framebuffer, "efi-framebuffer.0", "efi-framebuffer", "");
        s->state = STEP_DONE;
        strscpy(s->data.fb.on, "0000:0d:00.0", sizeof(s->data.fb.on));
        /* A move whose unbind was left blocked in the kernel: its writer's PID. */
        s = plan_add(p, &step_pci_driver, "0000:0d:00.1", "snd_hda_intel", "vfio-pci");
        s->state = STEP_STARTED;
        s->writer = 4242;
        s = plan_add(p, &step_cpus, "user.slice", "", "0,1,6-7");
        s->state = STEP_DONE;
        s = plan_add(p, &step_hugepages, "hugepages-2048kB", "40", "62");
        s->state = STEP_DONE;
        strscpy(s->data.huge.want, "32", sizeof(s->data.huge.want));
        strscpy(s->data.huge.free, "10", sizeof(s->data.huge.free));
        s = plan_add(p, &step_governor, "cpu3", "schedutil", "performance");
        s->state = STEP_DONE;
        s = plan_add(p, &step_pci_driver, "0000:0d:00.0", "", "vfio-pci");
        s->state = STEP_DONE;
        s = plan_add(p, &step_bar_sizes, "0000:0d:00.0", "0:256M 2:2M", "0:8G 2:256M");
        s->state = STEP_DONE;
        strscpy(s->data.bar.supported, "BAR 0 256M-8G, BAR 2 2M-256M", sizeof(s->data.bar.supported));
        s = plan_add(p, &step_reset_method, "0000:0d:00.0", "", "device_specific bus");
        s->state = STEP_DONE;
}

static void assert_same_plan(const struct plan *got, const struct plan *want) {
        assert_string_equal(got->vm, want->vm);
        assert_string_equal(got->user, want->user);
        assert_string_equal(got->user_bus, want->user_bus);
        assert_int_equal(got->n_steps, want->n_steps);
        for (size_t i = 0; i < want->n_steps; i++) {
                const struct step *g = &got->steps[i], *w = &want->steps[i];

                print_message("step %zu\n", i + 1);
                assert_ptr_equal(g->kind, w->kind);
                assert_string_equal(g->target, w->target);
                assert_string_equal(g->from, w->from);
                assert_string_equal(g->to, w->to);
                assert_string_equal(g->note, w->note);
                assert_memory_equal(&g->data, &w->data, sizeof(g->data));
                assert_int_equal(g->writer, w->writer);
                assert_string_equal(step_state_to_string(g->state), step_state_to_string(w->state));
        }
}

static void round_trip(const char *vm, bool tricky_fields) {
        struct plan want, got = {};

        make_plan(&want, vm, tricky_fields);
        assert_int_equal(journal_save(&want), 0);
        assert_int_equal(journal_load(vm, &got), 0);
        assert_same_plan(&got, &want);
        plan_free(&got);
        plan_free(&want);
}

static void test_round_trip(void **state) {
        REQUIRE_PRIVATE_RUN();
        round_trip("win10", true);
}

static void test_round_trip_odd_vm_names(void **state) {
        REQUIRE_PRIVATE_RUN();
        for (size_t i = 0; i < ELEMENTSOF(escape_cases); i++) {
                if (strchr(escape_cases[i].vm, '\n'))
                        continue;       /* a newline cannot be a value; see test_newline_in_values */
                print_message("vm \"%s\"\n", escape_cases[i].vm);
                round_trip(escape_cases[i].vm, false);
        }
}

/* libvirt takes long names, and non-ASCII ones (escaped to 4 bytes per byte): their journal
 * must work as well as win10's, or the hand-over fails before its first step, or worse, the
 * hand-back cannot read what the hand-over wrote. */
static void test_round_trip_200_char_vm_name(void **state) {
        char vm[201];

        REQUIRE_PRIVATE_RUN();
        memset(vm, 'w', 200);
        vm[200] = '\0';
        round_trip(vm, false);
}

static void test_round_trip_255_char_vm_name(void **state) {
        char vm[256];

        REQUIRE_PRIVATE_RUN();
        memset(vm, 'w', 255);
        vm[255] = '\0';
        round_trip(vm, false);
}

static void test_round_trip_japanese_vm_name(void **state) {
        REQUIRE_PRIVATE_RUN();
        /* 20 characters, 60 bytes of UTF-8. */
        round_trip("日本語の仮想マシンでゲームをする環境です", false);
}

/* Values cannot hold a newline in INI: the journal escapes it, and nothing of the value leaks
 * into the file's structure. */
static void test_newline_in_values(void **state) {
        struct plan want = {}, got = {};

        REQUIRE_PRIVATE_RUN();
        strscpy(want.vm, "nl", sizeof(want.vm));
        plan_add(&want, &step_unit, "a\nkind = cpus\n[step 7]", "x\r\ny", "")->state = STEP_DONE;
        assert_int_equal(journal_save(&want), 0);
        assert_int_equal(journal_load("nl", &got), 0);
        assert_int_equal(got.n_steps, 1);
        assert_ptr_equal(got.steps[0].kind, &step_unit);
        assert_int_equal(got.steps[0].state, STEP_DONE);
        /* Escaped in the file, so they come back exactly. */
        assert_string_equal(got.steps[0].target, "a\nkind = cpus\n[step 7]");
        assert_string_equal(got.steps[0].from, "x\r\ny");
        plan_free(&got);
        plan_free(&want);
}

/* Every line must be one inih reads back (INI_MAX_LINE): a note (for people) too long once escaped
 * is cut; any other value that long is refused, and the journal saved before stays whole. */
static void test_values_too_long_for_a_line(void **state) {
        struct plan want = {}, got = {};
        char semis[STEP_FIELD_LEN];
        struct step *s;

        REQUIRE_PRIVATE_RUN();
        memset(semis, ';', sizeof(semis) - 1);
        semis[sizeof(semis) - 1] = '\0';
        strscpy(want.vm, "long", sizeof(want.vm));
        s = plan_add(&want, &step_unit, "gdm.service", "active", "inactive");
        s->state = STEP_DONE;
        strscpy(s->note, semis, sizeof(s->note));
        assert_int_equal(journal_save(&want), 0);
        assert_int_equal(journal_load("long", &got), 0);
        assert_int_equal(got.n_steps, 1);
        assert_string_equal(got.steps[0].target, "gdm.service");
        assert_true(strlen(got.steps[0].note) > 30 && strspn(got.steps[0].note, ";") == strlen(got.steps[0].note));
        plan_free(&got);

        strscpy(s->target, semis, sizeof(s->target));
        assert_int_equal(journal_save(&want), -ENAMETOOLONG);
        assert_int_equal(journal_load("long", &got), 0);
        assert_string_equal(got.steps[0].target, "gdm.service");
        plan_free(&got);
        plan_free(&want);
}

static void test_save_replaces_atomically(void **state) {
        struct plan p, got = {};
        char names[8][NAME_MAX + 1];
        size_t n;

        REQUIRE_PRIVATE_RUN();
        make_plan(&p, "win10", false);
        assert_int_equal(journal_save(&p), 0);
        p.steps[0].state = STEP_UNDONE;
        p.n_steps = 1;
        assert_int_equal(journal_save(&p), 0);
        assert_int_equal(journal_load("win10", &got), 0);
        assert_int_equal(got.n_steps, 1);
        assert_int_equal(got.steps[0].state, STEP_UNDONE);
        plan_free(&got);
        plan_free(&p);

        /* The lock and the journal, no temporary file left, and nobody else may read it. */
        n = dir_entries(names, 8);
        assert_int_equal(n, 2);
        assert_true((strcmp(names[0], "lock") == 0 && strcmp(names[1], "win10.state") == 0) ||
                    (strcmp(names[1], "lock") == 0 && strcmp(names[0], "win10.state") == 0));
        struct stat st;
        assert_int_equal(stat(JOURNAL_DIR "/win10.state", &st), 0);
        assert_int_equal(st.st_mode & 0077, 0);
}

static void test_any_remove_missing(void **state) {
        struct plan p = {}, got = {};

        REQUIRE_PRIVATE_RUN();
        assert_false(journal_any());
        assert_int_equal(journal_load("win10", &got), -ENOENT);
        assert_int_equal(journal_remove("win10"), 0);           /* nothing to remove: fine */

        strscpy(p.vm, "a/b", sizeof(p.vm));
        assert_int_equal(journal_save(&p), 0);
        assert_true(journal_any());
        assert_int_equal(access(JOURNAL_DIR "/a\\x2fb.state", F_OK), 0);
        assert_int_equal(journal_load("a/b", &got), 0);
        assert_string_equal(got.vm, "a/b");
        assert_int_equal(got.n_steps, 0);
        plan_free(&got);
        assert_int_equal(journal_load("a\\x2fb", &got), -ENOENT);  /* another VM's name */

        assert_int_equal(journal_remove("a/b"), 0);
        assert_false(journal_any());
        assert_int_equal(journal_load("a/b", &got), -ENOENT);
}

/* Without the directory (the lock was never taken) saving fails cleanly. */
static void test_save_without_dir(void **state) {
        struct plan p = {};

        REQUIRE_PRIVATE_RUN();
        close((int) (intptr_t) *state);
        *state = NULL;
        rm_journal_dir();
        strscpy(p.vm, "win10", sizeof(p.vm));
        assert_int_equal(journal_save(&p), -ENOENT);
}

#define STEP_OK "[step 1]\nkind = pci-driver\ntarget = 0000:0d:00.0\nfrom = amdgpu\nto = vfio-pci\nnote = \nstate = done\n"

struct corrupt_case {
        const char *name;
        const char *text;
};

/* Whatever is in the file, loading gives an error (never a crash, never a half-read plan that an
 * undo would trust). */
static const struct corrupt_case corrupt_cases[] = {
        { "unknown kind", "[hand-over]\nvm = win10\n[step 1]\nkind = format-disk\nstate = done\n" },
        { "unknown state", "[hand-over]\nvm = win10\n[step 1]\nkind = vtcon\nstate = maybe\n" },
        { "step 0", "[hand-over]\nvm = win10\n[step 0]\nkind = vtcon\nstate = done\n" },
        { "gap in steps", "[hand-over]\nvm = win10\n" STEP_OK "[step 3]\nkind = vtcon\nstate = done\n" },
        { "unknown section", "[hand-over]\nvm = win10\n[stuff]\nkey = value\n" },
        { "unknown key", "[hand-over]\nvm = win10\n[step 1]\nkind = vtcon\nstate = done\ncolour = red\n" },
        { "line without =", "[hand-over]\nvm = win10\n" STEP_OK "garbage line\n" },
        { "unterminated section", "[hand-over]\nvm = win10\n[step 1\nkind = vtcon\n" },
        { "value too long", "[hand-over]\nvm = win10\n[step 1]\nkind = vtcon\nstate = done\ntarget = "
          "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123"
          "456789012345678901234567890123456789\n" },
        { "binary", "\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0\x01\0\0\0\xff\xfe\n\x01[\n" },
        /* Cut short by hand (or a disk full under a tool copying it): the last step lacks fields. */
        { "truncated after kind", "[hand-over]\nvm = win10\n" STEP_OK "[step 2]\nkind = pci-driver\ntarget = 0000:08" },
        { "truncated before kind", "[hand-over]\nvm = win10\n" STEP_OK "[step 2]\ntarget = 0000:08:00.0\nstate = done\n" },
        { "no state", "[hand-over]\nvm = win10\n[step 1]\nkind = pci-driver\ntarget = 0000:0d:00.0\nfrom = amdgpu\nto = vfio-pci\n" },
        { "no hand-over section", STEP_OK },
        { "empty file", "" },
};

static void test_corrupt(void **state) {
        char accepted[512] = "";

        REQUIRE_PRIVATE_RUN();
        /* Every case is tried; the failure lists all those loaded as if they were fine. */
        for (size_t i = 0; i < ELEMENTSOF(corrupt_cases); i++) {
                struct plan got = { .n_steps = 99 };
                int r;

                write_file("win10.state", corrupt_cases[i].text);
                r = journal_load("win10", &got);
                if (r == 0) {
                        snprintf(accepted + strlen(accepted), sizeof(accepted) - strlen(accepted), "%s\"%s\" (%zu steps)",
                                 accepted[0] ? ", " : "", corrupt_cases[i].name, got.n_steps);
                        plan_free(&got);
                        continue;
                }
                assert_int_equal(r, -EBADMSG);
                assert_null(got.steps);
                assert_int_equal(got.n_steps, 0);
        }
        if (accepted[0])
                fail_msg("corrupt journals loaded without an error: %s", accepted);
}

/* The good journal the corrupt ones are variations of loads, so the cases above fail for their
 * own reason. */
static void test_hand_written(void **state) {
        struct plan got = {};

        REQUIRE_PRIVATE_RUN();
        write_file("win10.state", "# comment\n[hand-over]\nvm = win10\n\n" STEP_OK);
        assert_int_equal(journal_load("win10", &got), 0);
        assert_string_equal(got.vm, "win10");
        assert_int_equal(got.n_steps, 1);
        assert_ptr_equal(got.steps[0].kind, &step_pci_driver);
        assert_string_equal(got.steps[0].target, "0000:0d:00.0");
        assert_string_equal(got.steps[0].from, "amdgpu");
        assert_string_equal(got.steps[0].to, "vfio-pci");
        assert_string_equal(got.steps[0].note, "");
        assert_int_equal(got.steps[0].state, STEP_DONE);
        plan_free(&got);
}

static void test_unreadable(void **state) {
        struct plan got = {};

        REQUIRE_PRIVATE_RUN();
        /* A directory where the file should be. */
        assert_int_equal(mkdir(JOURNAL_DIR "/win10.state", 0700), 0);
        assert_true(journal_load("win10", &got) < 0);
        assert_null(got.steps);
        assert_int_equal(rmdir(JOURNAL_DIR "/win10.state"), 0);
}

#define FILE_TEST(f) cmocka_unit_test_setup_teardown(f, fresh_dir, close_lock)

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_escape_table),
                cmocka_unit_test(test_escape_safe_and_distinct),
                cmocka_unit_test(test_escape_every_byte),
                cmocka_unit_test(test_escape_errors),
                cmocka_unit_test(test_read_escapes),
                cmocka_unit_test(test_read_numbers),
                FILE_TEST(test_lock),
                FILE_TEST(test_lock_waits_as_long_as_the_holder_says),
                FILE_TEST(test_lock_refuses_open_dir),
                FILE_TEST(test_round_trip),
                FILE_TEST(test_round_trip_odd_vm_names),
                FILE_TEST(test_round_trip_200_char_vm_name),
                FILE_TEST(test_round_trip_255_char_vm_name),
                FILE_TEST(test_round_trip_japanese_vm_name),
                FILE_TEST(test_newline_in_values),
                FILE_TEST(test_values_too_long_for_a_line),
                FILE_TEST(test_save_replaces_atomically),
                FILE_TEST(test_any_remove_missing),
                FILE_TEST(test_save_without_dir),
                FILE_TEST(test_corrupt),
                FILE_TEST(test_hand_written),
                FILE_TEST(test_unreadable),
        };

        return cmocka_run_group_tests(tests, check_private_run, NULL);
}
