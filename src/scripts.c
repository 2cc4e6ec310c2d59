#define _GNU_SOURCE 1    /* memfd_create, sigabbrev_np, F_ADD_SEALS, O_PATH, pipe2 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "scripts.h"
#include "secure-path.h"

extern char **environ;

/* A name libvirt could not have made into a path of its own: "", ".", "..", or one with '/'. */
static bool name_ok(const char *s) {
        return *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/');
}

/* Whether it could run; when not, says why it is skipped (before any owner check: a README
 * someone left there is no reason to refuse the scripts beside it). */
static bool runnable(const char *path, const struct stat *st) {
        if (S_ISREG(st->st_mode) && (st->st_mode & 0111))
                return true;
        log_warning("hook script %s: skipped, %s", path,
                    S_ISREG(st->st_mode) ? "not executable (chmod +x to run it)" : "not a file");
        return false;
}

/* The script sp (at path, its literal path, for messages; rel under qemu.d/VM), found by the
 * checked walk: added with its fd when it can run and is root's. */
static int add(struct scripts *s, struct secure_path *sp, const char *path, const char *rel, bool check_owner) {
        char what[PATH_MAX + 32];
        int r;

        if (!runnable(path, &sp->st))
                return 0;
        snprintf(what, sizeof(what), "hook script %s", path);
        r = secure_path_check(sp, what, check_owner);
        if (r < 0)
                return r;
        s->paths = xreallocarray(s->paths, s->n + 1, sizeof(*s->paths));
        s->fds = xreallocarray(s->fds, s->n + 1, sizeof(*s->fds));
        s->paths[s->n] = xstrdup(rel);
        s->fds[s->n++] = sp->fd;
        sp->fd = -1;
        return 0;
}

/* The entry name of the directory dir, at path (literal). */
static int add_entry(struct scripts *s, const struct secure_path *dir, const char *name, const char *path,
                     const char *rel, bool check_owner) {
        struct secure_path sp;
        char what[PATH_MAX + 32];
        int r;

        snprintf(what, sizeof(what), "hook script %s", path);
        r = secure_path_open(dir->fd, dir->real, name, what, check_owner, &sp);
        if (r == -ENOENT || r == -ENOTDIR)
                /* listed a moment ago, or a dangling link: the user meant something to run */
                return log_error_errno(r, "%s: %m", what);
        if (r < 0)
                return r;
        r = add(s, &sp, path, rel, check_owner);
        secure_path_close(&sp);
        return r;
}

static int by_name(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static void names_free(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

/* The executables of a SUB-OPERATION directory (dir, checked and open), in strcmp order (what
 * `LC_ALL=C ls` shows). Dot files are skipped as a shell glob would; a file without an x bit is
 * reported and skipped: the user most likely forgot chmod +x, and running it through a shell is
 * not ours to do. Each entry is opened from the directory's fd, never by its path again. */
static int find_in_dir(const struct secure_path *dir, const char *path, const char *rel, bool check_owner,
                       struct scripts *s) {
        _cleanup_(closedirp) DIR *d = NULL;
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        int fd, r = 0;

        /* An O_PATH fd cannot be read: the directory it holds, opened again through it. */
        fd = openat(dir->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || !(d = fdopendir(fd))) {
                r = log_error_errno(errno, "hook scripts %s: %m", path);
                if (fd >= 0)
                        close(fd);
                return r;
        }
        while ((errno = 0, e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                names = xreallocarray(names, n + 1, sizeof(*names));
                names[n++] = xstrdup(e->d_name);
        }
        if (errno)
                r = log_error_errno(errno, "hook scripts %s: %m", path);
        qsort(names, n, sizeof(*names), by_name);
        for (size_t i = 0; i < n && r >= 0; i++) {
                char full[PATH_MAX], sub[PATH_MAX];
                if (snprintf(full, sizeof(full), "%s/%s", path, names[i]) >= (int) sizeof(full) ||
                    snprintf(sub, sizeof(sub), "%s/%s", rel, names[i]) >= (int) sizeof(sub))
                        r = log_error_errno(ENAMETOOLONG, "hook script %s/%s: %m", path, names[i]);
                else
                        r = add_entry(s, dir, names[i], full, sub, check_owner);
        }
        names_free(names, n);
        return r;
}

int scripts_find(const char *qemu_d, const char *vm, const char *op, const char *sub, bool check_owner,
                 struct scripts *ret) {
        const char *parts[] = { vm, op, sub };
        char path[PATH_MAX], rel[PATH_MAX], what[PATH_MAX + 32];
        struct secure_path sp;
        int r;

        *ret = (struct scripts) {};
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (!name_ok(parts[i]))
                        return 0;
        if (snprintf(rel, sizeof(rel), "%s/%s", op, sub) >= (int) sizeof(rel) ||
            snprintf(path, sizeof(path), "%s/%s/%s", qemu_d, vm, rel) >= (int) sizeof(path))
                return 0;       /* no such path can exist */
        snprintf(what, sizeof(what), "hook scripts %s", path);
        /* The common case, no script for this call, costs a walk that ends at a missing name. */
        r = secure_path_open(AT_FDCWD, NULL, path, what, check_owner, &sp);
        if (r == -ENOENT || r == -ENOTDIR)
                return 0;
        if (r < 0)
                return r;
        if (S_ISDIR(sp.st.st_mode)) {
                r = secure_path_check(&sp, what, check_owner);
                if (r >= 0)
                        r = find_in_dir(&sp, path, rel, check_owner, ret);
        } else
                r = add(ret, &sp, path, rel, check_owner);
        secure_path_close(&sp);
        if (r < 0)
                scripts_free(ret);
        return r;
}

void scripts_free(struct scripts *s) {
        for (size_t i = 0; i < s->n; i++) {
                free(s->paths[i]);
                if (s->fds[i] >= 0)
                        close(s->fds[i]);
        }
        free(s->paths);
        free(s->fds);
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

/* from onto to, without close-on-exec (dup2 of an fd onto itself would leave the flag). */
static int move_fd(int from, int to) {
        return from == to ? fcntl(to, F_SETFD, 0) : dup2(from, to);
}

/* The child's side: from fork to the script. Only async-signal-safe calls; a failure is written
 * to report (close-on-exec: the parent reads nothing when the exec succeeded). */
static _Noreturn void child(int fd, char *const argv[], int in_fd, int out_fd, int report) {
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        sigset_t none;
        int exe, err;

        /* A process group of its own, so the deadline reaches whatever the script started. */
        (void) setpgid(0, 0);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        /* Ignored by the hook, kept ignored across exec: scripts get it back at its default. */
        (void) sigaction(SIGPIPE, &dfl, NULL);
        if (move_fd(in_fd, STDIN_FILENO) < 0 || (out_fd >= 0 && move_fd(out_fd, STDOUT_FILENO) < 0))
                goto fail;
        /* The kernel runs a #! script's interpreter on /dev/fd/N, which must still be open after
         * the exec: with close-on-exec set the exec fails (ENOENT). So a copy without it, which
         * the script inherits; every other fd of the hook is close-on-exec. */
        exe = fcntl(fd, F_DUPFD, 3);
        if (exe < 0)
                goto fail;
        /* execveat(exe, "", argv, environ, AT_EMPTY_PATH): the file checked, not its path */
        fexecve(exe, argv, environ);
fail:
        err = errno;
        (void) !write(report, &err, sizeof(err));
        _exit(127);
}

int script_run(int fd, const char *path, char *const args[4], int in_fd, int out_fd, usec_t timeout) {
        char *argv[] = { (char *) path, args[0], args[1], args[2], args[3], NULL };
        _cleanup_close_ int pidfd = -1, report_r = -1;
        siginfo_t si = {};
        const char *killed = NULL;
        int report[2], exec_errno = 0;
        pid_t pid;
        int r;

        if (lseek(in_fd, 0, SEEK_SET) < 0)
                return log_error_errno(errno, "hook script %s: rewinding its input: %m", path);
        /* posix_spawn can only run a path: fork, and exec the fd in the child. */
        if (pipe2(report, O_CLOEXEC) < 0)
                return log_error_errno(errno, "hook script %s: cannot run it: %m", path);
        report_r = report[0];
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(report[1]);
                return log_error_errno(r, "hook script %s: cannot run it: %m", path);
        }
        if (pid == 0)
                child(fd, argv, in_fd, out_fd, report[1]);
        close(report[1]);
        /* Also here, so that the group exists before any kill of it, whoever runs first. */
        (void) setpgid(pid, pid);
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
        /* The child has exited: its end of the pipe is closed, the read does not block. */
        if (read(report_r, &exec_errno, sizeof(exec_errno)) == (ssize_t) sizeof(exec_errno))
                return log_error_errno(exec_errno, "hook script %s: cannot run it: %m%s", path,
                                       exec_errno == ENOEXEC ? " (does it start with #!?)" : "");
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
