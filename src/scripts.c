#define _GNU_SOURCE 1    /* memfd_create, sigabbrev_np, F_ADD_SEALS */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "scripts.h"

extern char **environ;

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

/* A name libvirt could not have made into a path of its own: "", ".", "..", or one with '/'. */
static bool name_ok(const char *s) {
        return *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/');
}

/* What runs as root must be root's all the way down: the file and every directory on its real
 * path (symbolic links resolved) owned by root and not writable by group or others, or whoever
 * can write one of them can swap the script. */
static int check_secure(const char *script, bool check_owner) {
        char real[PATH_MAX];
        struct stat st;

        if (!check_owner)
                return 0;
        if (!realpath(script, real))
                return log_error_errno(errno, "hook script %s: %m", script);
        for (size_t i = 0, len = strlen(real); i <= len; i++) {
                if (i < len && real[i] != '/')
                        continue;
                char c = real[i];
                real[i] = '\0';
                const char *p = i == 0 ? "/" : real;    /* "/", then "/etc", ... the script */
                if (stat(p, &st) < 0)
                        return log_error_errno(errno, "hook script %s: %s: %m", script, p);
                if (st.st_uid != 0)
                        return log_error_errno(EPERM, "hook script %s: refusing it, %s is owned by uid %u, not "
                                               "root (chown root %s)", script, p, (unsigned) st.st_uid, p);
                if (st.st_mode & 022)
                        return log_error_errno(EPERM, "hook script %s: refusing it, %s is writable by group or "
                                               "others (mode %04o; chmod go-w %s)", script, p,
                                               (unsigned) (st.st_mode & 07777), p);
                real[i] = c;
        }
        return 0;
}

/* Whether stat says a script could run; when not, says why it is skipped. */
static bool runnable(const char *path, const struct stat *st) {
        if (S_ISREG(st->st_mode) && (st->st_mode & 0111))
                return true;
        log_warning("hook script %s: skipped, %s", path,
                    S_ISREG(st->st_mode) ? "not executable (chmod +x to run it)" : "not a file");
        return false;
}

static void add(struct scripts *s, const char *rel) {
        s->paths = xreallocarray(s->paths, s->n + 1, sizeof(*s->paths));
        s->paths[s->n++] = xstrdup(rel);
}

static int by_name(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The executables of a SUB-OPERATION directory, in strcmp order (what `LC_ALL=C ls` shows).
 * Dot files are skipped as a shell glob would; a file without an x bit is reported and skipped:
 * the user most likely forgot chmod +x, and running it through a shell is not ours to do. */
static int find_in_dir(const char *dir, const char *rel, bool check_owner, struct scripts *s) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        char path[PATH_MAX], sub[PATH_MAX];
        size_t first = s->n;
        struct dirent *e;
        struct stat st;
        int r;

        if (!d)
                return log_error_errno(errno, "hook scripts %s: %m", dir);
        while ((errno = 0, e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int) sizeof(path) ||
                    snprintf(sub, sizeof(sub), "%s/%s", rel, e->d_name) >= (int) sizeof(sub))
                        return log_error_errno(ENAMETOOLONG, "hook script %s/%s: %m", dir, e->d_name);
                if (stat(path, &st) < 0)
                        return log_error_errno(errno, "hook script %s: %m", path);
                if (!runnable(path, &st))
                        continue;
                r = check_secure(path, check_owner);
                if (r < 0)
                        return r;
                add(s, sub);
        }
        if (errno)
                return log_error_errno(errno, "hook scripts %s: %m", dir);
        qsort(s->paths + first, s->n - first, sizeof(*s->paths), by_name);
        return 0;
}

int scripts_find(const char *qemu_d, const char *vm, const char *op, const char *sub, bool check_owner,
                 struct scripts *ret) {
        const char *parts[] = { vm, op, sub };
        char path[PATH_MAX], rel[PATH_MAX];
        struct stat st;
        int r;

        *ret = (struct scripts) {};
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (!name_ok(parts[i]))
                        return 0;
        if (snprintf(rel, sizeof(rel), "%s/%s", op, sub) >= (int) sizeof(rel) ||
            snprintf(path, sizeof(path), "%s/%s/%s", qemu_d, vm, rel) >= (int) sizeof(path))
                return 0;       /* no such path can exist */
        /* The common case, no script for this call, costs this one stat(). */
        if (stat(path, &st) < 0)
                return errno == ENOENT || errno == ENOTDIR ? 0 : log_error_errno(errno, "hook scripts %s: %m", path);
        if (S_ISDIR(st.st_mode)) {
                r = find_in_dir(path, rel, check_owner, ret);
                if (r < 0)
                        scripts_free(ret);
                return r;
        }
        if (!runnable(path, &st))
                return 0;
        r = check_secure(path, check_owner);
        if (r >= 0)
                add(ret, rel);
        return r;
}

void scripts_free(struct scripts *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->paths[i]);
        free(s->paths);
        *s = (struct scripts) {};
}

int memfd_with(const char *name, const char *data, size_t len) {
        int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

        if (fd < 0)
                return -errno;
        for (size_t done = 0; done < len;) {
                ssize_t k = write(fd, data + done, len - done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                done += (size_t) k;
        }
        /* Every script reads the same XML: none may change it for the next. */
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static int spawn(const char *path, char *const argv[], int in_fd, int out_fd, pid_t *pid) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, pipe;
        int r;

        sigemptyset(&none);
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        /* A process group of its own, so the deadline reaches whatever the script started. */
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &pipe);
        posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
        if (out_fd >= 0)
                posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
        /* glibc reports a failed exec here (ENOEXEC: a script without #!, which a shell would
         * have run; we do not). */
        r = -posix_spawn(pid, path, &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        return r;
}

int script_run(const char *path, char *const args[4], int in_fd, int out_fd, usec_t timeout) {
        char *argv[] = { (char *) path, args[0], args[1], args[2], args[3], NULL };
        _cleanup_close_ int pidfd = -1;
        siginfo_t si = {};
        const char *killed = NULL;
        pid_t pid;
        int r;

        if (lseek(in_fd, 0, SEEK_SET) < 0)
                return log_error_errno(errno, "hook script %s: rewinding its input: %m", path);
        r = spawn(path, argv, in_fd, out_fd, &pid);
        if (r < 0)
                return log_error_errno(r, "hook script %s: cannot run it: %m%s", path,
                                       r == -ENOEXEC ? " (does it start with #!?)" : "");
        /* glibc has pidfd_open() only since 2.36 */
        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        r = pidfd < 0 ? -errno : pidfd_wait(pidfd, now_usec() + timeout);
        if (r == -ETIMEDOUT) {
                /* The group, and the script itself by its pidfd in case it left the group
                 * (setsid); the group is killed even when the script is gone by then, since it
                 * is not reaped yet its group cannot be reused. */
                killed = "SIGTERM";
                (void) kill(-pid, SIGTERM);
                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0);
                if (pidfd_wait(pidfd, now_usec() + MIN(timeout, SCRIPT_TERM_GRACE_USEC)) == -ETIMEDOUT)
                        killed = "SIGKILL";
                (void) kill(-pid, SIGKILL);
                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        } else if (r < 0)
                log_warning_errno(r, "hook script %s: waiting without a deadline: %m", path);
        while (waitid(P_PID, (id_t) pid, &si, WEXITED) < 0)
                if (errno != EINTR)
                        return log_error_errno(errno, "hook script %s: waiting for it: %m", path);
        if (killed)
                return log_error_errno(ETIME, "hook script %s: still running at its deadline; it was stopped "
                                       "with %s, what it started with SIGKILL (the deadline is [host] "
                                       "script_timeout)", path, killed);
        if (si.si_code == CLD_EXITED && si.si_status == 0)
                return 0;
        if (si.si_code == CLD_EXITED)
                return log_error_errno(ECANCELED, "hook script %s exited with status %d", path, si.si_status);
        return log_error_errno(ECANCELED, "hook script %s was killed by signal %s", path, sigabbrev_np(si.si_status) ?: "?");
}
