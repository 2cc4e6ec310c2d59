#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "journal.h"
#include "log.h"

static int make_dir(void) {
        struct stat st;

        if (mkdir(JOURNAL_DIR, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "creating the journal directory " JOURNAL_DIR ": %m");
        /* The journal decides what a root process undoes: nobody else may write it. */
        if (lstat(JOURNAL_DIR, &st) < 0)
                return log_error_errno(errno, "checking the journal directory " JOURNAL_DIR ": %m");
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077))
                return log_error_errno(EPERM, JOURNAL_DIR " is not a directory of ours with mode 0700");
        return 0;
}

/* A decimal number from 1 to max and nothing else, or 0: sscanf's %u and %d also take a sign,
 * blanks and text after the number, and a number too large for them is undefined behaviour. */
static unsigned long number(const char *s, unsigned long max) {
        unsigned long v;
        char *end;

        if (!isdigit((unsigned char) *s))
                return 0;
        errno = 0;
        v = strtoul(s, &end, 10);
        return errno != 0 || *end != '\0' || v > max ? 0 : v;
}

int journal_lock_until(int fd, usec_t until) {
        char line[64];
        int n = snprintf(line, sizeof(line), "%d %" PRIu64 "\n", (int) getpid(), (uint64_t) until);

        ssize_t k = pwrite(fd, line, (size_t) n, 0);

        if (k != n || ftruncate(fd, n) < 0)
                return log_error_errno(k >= 0 && k != n ? EIO : errno, "writing the lock file " JOURNAL_DIR "/lock: %m");
        return 0;
}

/* What the lock's holder says: its PID, and until when it may hold the lock (0, 0: nothing). */
static void holder_says(int fd, int *pid, uint64_t *until) {
        char line[64] = "", *space, *end;

        *pid = 0;
        *until = 0;
        /* "PID UNTIL\n", read whole or not at all: a line read while it is being written is
         * cut, and nothing is taken from it. */
        if (pread(fd, line, sizeof(line) - 1, 0) <= 0 || !(end = strchr(line, '\n')) || !(space = strchr(line, ' ')))
                return;
        *space = *end = '\0';
        *pid = (int) number(line, INT_MAX);
        *until = *pid ? number(space + 1, ULONG_MAX) : 0;
}

int journal_lock(usec_t deadline, usec_t until) {
        const struct timespec interval = { .tv_nsec = 5 * 1000 * 1000 };
        int fd, r;

        r = make_dir();
        if (r < 0)
                return r;
        fd = open(JOURNAL_DIR "/lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "opening the lock file " JOURNAL_DIR "/lock: %m");
        /* Another call's hand-over or hand-back may be running: wait for it, as long as it says it
         * may take (each of its waits has a deadline, so that is bounded too), but not forever. */
        while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int pid;
                uint64_t holder_until;

                r = errno;
                holder_says(fd, &pid, &holder_until);
                if (r != EWOULDBLOCK || now_usec() >= MAX(deadline, holder_until)) {
                        close(fd);
                        if (r != EWOULDBLOCK)
                                return log_error_errno(r, "taking the GPU lock " JOURNAL_DIR "/lock: %m");
                        return log_error_errno(ETIMEDOUT, "taking the GPU lock " JOURNAL_DIR "/lock: another hand-over "
                                               "or hand-back (PID %d) still holds it past its own deadline", pid);
                }
                nanosleep(&interval, NULL);
        }
        r = journal_lock_until(fd, until);
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

/* inih takes a ';' or '#' after a blank as a comment, trims blanks at both ends, and a newline
 * ends a value: those bytes, and the escape character itself, are written as \xNN. */
/* inih reads lines of at most INI_MAX_LINE - 1 bytes, the newline included: a longer one would be
 * a journal that cannot be read back. */
#define JOURNAL_LINE_MAX (INI_MAX_LINE - 1)

/* "key = value", escaped. A value too long to be read back once escaped is cut where cut allows
 * it (a note, for people only; never inside an escape), else -ENAMETOOLONG and nothing written. */
static int put_value(FILE *f, const char *key, const char *value, bool cut) {
        size_t len = strlen(value), room = JOURNAL_LINE_MAX - strlen(key) - strlen(" = \n"), n = 0;
        char esc[4 * 256 + 1];

        for (size_t i = 0; i < len && n + 4 < sizeof(esc); i++) {
                unsigned char c = (unsigned char) value[i];
                bool edge_blank = (i == 0 || i == len - 1) && (c == ' ' || c == '\t');
                size_t k = c < 0x20 || c == 0x7f || strchr(";#\\", c) || edge_blank ?
                           (size_t) snprintf(esc + n, 5, "\\x%02x", c) : (esc[n] = (char) c, 1);

                if (n + k > room) {
                        if (!cut)
                                return -ENAMETOOLONG;
                        break;
                }
                n += k;
        }
        esc[n] = '\0';
        fprintf(f, "%s = %s\n", key, esc);
        return 0;
}

static int get_value(const char *value, char *buf, size_t size) {
        size_t n = 0;

        for (const char *p = value; *p; p++) {
                unsigned c = (unsigned char) *p;

                /* Only what put_value writes is an escape: checked before sscanf, whose %2x also
                 * takes "\x 5" or "\x-1", and which sets c even for a backslash that stays one. */
                if (p[0] == '\\' && p[1] == 'x' && isxdigit((unsigned char) p[2]) &&
                    isxdigit((unsigned char) p[3]) && sscanf(p + 2, "%2x", &c) == 1)
                        p += 3;
                if (n + 1 >= size)
                        return -ENAMETOOLONG;
                buf[n++] = (char) c;
        }
        buf[n] = '\0';
        return 0;
}

int journal_save(const struct plan *p) {
        char path[PATH_MAX], tmp[PATH_MAX + 8];
        _cleanup_fclose_ FILE *f = NULL;
        int fd, r;

        r = journal_path(p->vm, path);
        if (r < 0)
                return log_error_errno(r, "naming the journal of %s: %m", p->vm);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || !(f = fdopen(fd, "w"))) {
                r = errno;
                if (fd >= 0)
                        close(fd);
                return log_error_errno(r, "writing the journal %s: %m", tmp);
        }
        fprintf(f, "# qemu-hook hand-over journal: what was done, to be undone in reverse.\n[hand-over]\n"
                "version = 1\n");
        /* For the reader (and journal_owner); the loader takes the name it was asked for: a name
         * too long for a line is left out. */
        (void) put_value(f, "vm", p->vm, false);
        r = 0;
        if (p->user[0])
                r = put_value(f, "user", p->user, false);
        if (r == 0 && p->user_bus[0])
                r = put_value(f, "user_bus", p->user_bus, false);
        for (size_t i = 0; r == 0 && i < p->n_steps; i++) {
                const struct step *s = &p->steps[i];

                fprintf(f, "\n[step %zu]\n", i + 1);
                r = put_value(f, "kind", s->kind->name, false) ?: put_value(f, "target", s->target, false) ?:
                    put_value(f, "from", s->from, false) ?: put_value(f, "to", s->to, false) ?:
                    put_value(f, "note", s->note, true);
                for (const struct step_field *field = s->kind->fields; r == 0 && field && field->key; field++)
                        if (((const char *) s)[field->offset])
                                r = put_value(f, field->key, (const char *) s + field->offset, false);
                if (r == 0)
                        r = put_value(f, "state", step_state_to_string(s->state), false);
                if (r == 0 && s->writer > 0)
                        fprintf(f, "writer = %d\n", s->writer);
                if (r < 0)
                        log_error_errno(r, "writing the journal %s: step %zu (%s %s) has a value too long to be read "
                                        "back", path, i + 1, s->kind->name, s->target);
        }
        if (r < 0) {
                unlink(tmp);
                return r;
        }
        /* fsync before rename: after a crash the journal is the old or the new one, whole. */
        if (fflush(f) != 0 || fsync(fileno(f)) < 0 || rename(tmp, path) < 0) {
                r = errno;
                unlink(tmp);
                return log_error_errno(r, "writing the journal %s: %m", path);
        }
        return 0;
}

struct load_state {
        struct plan *plan;
        bool header;            /* [hand-over] seen */
        char error[256];
};

static int load_key(void *user, const char *section, const char *key, const char *value) {
        struct load_state *ls = user;
        struct plan *p = ls->plan;
        unsigned long index;
        struct step *s;

        if (strcmp(section, "hand-over") == 0) {
                ls->header = true;
                if (strcmp(key, "user") == 0)
                        return get_value(value, p->user, sizeof(p->user)) == 0;
                if (strcmp(key, "user_bus") == 0)
                        return get_value(value, p->user_bus, sizeof(p->user_bus)) == 0;
                /* The VM's name: the caller's, or, read for another VM's, the file's (for names
                 * under 100 characters: longer ones are not written). */
                if (strcmp(key, "vm") == 0)
                        return p->vm[0] || get_value(value, p->vm, sizeof(p->vm)) == 0;
                return strcmp(key, "version") == 0;
        }
        index = strncmp(section, "step ", 5) == 0 ? number(section + 5, ULONG_MAX) : 0;
        if (index == 0 || index > p->n_steps + 1) {
                snprintf(ls->error, sizeof(ls->error), "unexpected section [%s]", section);
                return 0;
        }
        if (index == p->n_steps + 1)
                /* Kind and state must follow; _STEP_STATE_MAX marks "not read yet". */
                plan_add(p, NULL, "", "", "")->state = _STEP_STATE_MAX;
        s = &p->steps[index - 1];
        if (strcmp(key, "kind") == 0) {
                s->kind = step_kind_by_name(value);
                if (!s->kind)
                        snprintf(ls->error, sizeof(ls->error), "[%s]: unknown step kind \"%s\"", section, value);
                return s->kind != NULL;
        }
        if (strcmp(key, "state") == 0) {
                int st = step_state_from_string(value);
                if (st < 0)
                        snprintf(ls->error, sizeof(ls->error), "[%s]: unknown state \"%s\"", section, value);
                s->state = st < 0 ? _STEP_STATE_MAX : (enum step_state) st;
                return st >= 0;
        }
        if (strcmp(key, "writer") == 0)
                return (s->writer = (int) number(value, INT_MAX)) > 0;
        char *field = strcmp(key, "target") == 0 ? s->target : strcmp(key, "from") == 0 ? s->from :
                      strcmp(key, "to") == 0 ? s->to : strcmp(key, "note") == 0 ? s->note : NULL;
        /* The kind's own keys: known once its kind is (written first). */
        for (const struct step_field *f = s->kind ? s->kind->fields : NULL; !field && f && f->key; f++)
                if (strcmp(key, f->key) == 0)
                        field = (char *) s + f->offset;
        if (!field)
                snprintf(ls->error, sizeof(ls->error), "[%s]: unknown key \"%s\"%s", section, key,
                         s->kind ? "" : " (before the step's kind)");
        return field && get_value(value, field, STEP_FIELD_LEN) == 0;
}

int journal_read(FILE *f, const char *name, const char *vm, struct plan *ret) {
        struct load_state ls = {};
        int r;

        *ret = (struct plan) {};
        strscpy(ret->vm, vm, sizeof(ret->vm));
        ls.plan = ret;
        r = ini_parse_file(f, load_key, &ls);
        /* An undo trusts every step it reads: a step without its kind or state is a broken file. */
        for (size_t i = 0; r == 0 && !ls.error[0] && i < ret->n_steps; i++)
                if (!ret->steps[i].kind || ret->steps[i].state == _STEP_STATE_MAX)
                        snprintf(ls.error, sizeof(ls.error), "[step %zu] lacks its kind or state", i + 1);
        if (r == 0 && !ls.error[0] && !ls.header)
                snprintf(ls.error, sizeof(ls.error), "no [hand-over] section");
        if (r != 0 || ls.error[0]) {
                if (r > 0)
                        log_error("%s:%d: %s", name, r, ls.error[0] ? ls.error : "malformed journal");
                else
                        log_error("%s: %s", name, ls.error[0] ? ls.error : "not a readable journal file");
                plan_free(ret);
                return -EBADMSG;
        }
        return 0;
}

int journal_load(const char *vm, struct plan *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char path[PATH_MAX];
        struct stat st;
        int r;

        r = journal_path(vm, path);
        if (r < 0)
                return r;
        f = fopen(path, "re");
        if (!f)
                return -errno;
        if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
                *ret = (struct plan) {};
                log_error("%s: not a readable journal file", path);
                return -EBADMSG;
        }
        return journal_read(f, path, vm, ret);
}

int journal_remove(const char *vm) {
        char path[PATH_MAX];
        int r = journal_path(vm, path);

        if (r < 0)
                return r;
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

bool journal_any(void) {
        DIR *d = opendir(JOURNAL_DIR);
        struct dirent *de;
        bool found = false;

        while (d && !found && (de = readdir(d)))
                found = strlen(de->d_name) > 6 && strcmp(de->d_name + strlen(de->d_name) - 6, ".state") == 0;
        if (d)
                closedir(d);
        return found;
}

int journal_foreach(int (*fn)(struct plan *p, const char *path, void *data), void *data) {
        _cleanup_(closedirp) DIR *d = opendir(JOURNAL_DIR);
        char path[PATH_MAX];
        struct dirent *de;

        /* No directory: nothing was ever handed over since boot. Any other error (EACCES: the
         * directory is root's, 0700, and --status may run as a user) is not "nothing". */
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                _cleanup_fclose_ FILE *f = NULL;
                size_t len = strlen(de->d_name);
                struct plan p;
                int r;

                if (len <= 6 || strcmp(de->d_name + len - 6, ".state") != 0)
                        continue;
                snprintf(path, sizeof(path), JOURNAL_DIR "/%s", de->d_name);
                if (!(f = fopen(path, "re")) || journal_read(f, path, "", &p) < 0)
                        continue;       /* gone meanwhile, or broken (said by journal_read) */
                if (!p.vm[0])           /* a long name, not written: the file's */
                        strscpy(p.vm, de->d_name, sizeof(p.vm));
                r = fn(&p, path, data);
                plan_free(&p);
                if (r != 0)
                        return r;
        }
        return 0;
}

struct owner_search {
        const char *own, *target;
        struct plan *ret;
        char *path;
};

static int owns(struct plan *p, const char *path, void *data) {
        struct owner_search *o = data;

        if (strcmp(path, o->own) == 0)
                return 0;
        for (size_t i = 0; i < p->n_steps; i++)
                if ((p->steps[i].state == STEP_DONE || p->steps[i].state == STEP_STARTED) &&
                    strcmp(p->steps[i].target, o->target) == 0) {
                        *o->ret = *p;           /* handed to the caller, not freed here */
                        *p = (struct plan) {};
                        strscpy(o->path, path, PATH_MAX);
                        return 1;
                }
        return 0;
}

int journal_owner(const char *vm, const char *target, struct plan *ret, char path[static PATH_MAX]) {
        char own[PATH_MAX];
        int r = journal_path(vm, own);

        if (r < 0)
                return r;
        return journal_foreach(owns, &(struct owner_search) { own, target, ret, path });
}
