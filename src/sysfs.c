#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sysfs.h"
#include "timing.h"

static int sysfs_path(const char *path, char buf[static PATH_MAX]) {
        int n = snprintf(buf, PATH_MAX, "%s/%s", SYSFS_ROOT, path);
        return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

int sysfs_read(const char *path, char *buf, size_t size) {
        char full[PATH_MAX];
        _cleanup_close_ int fd = -1;
        ssize_t n;
        int r;

        r = sysfs_path(path, full);
        if (r < 0)
                return r;
        fd = open(full, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        return 0;
}

int sysfs_read_count(const char *path, long *ret) {
        char buf[64], *end;
        long v;
        int r = sysfs_read(path, buf, sizeof(buf));

        if (r < 0)
                return r;
        errno = 0;
        v = strtol(buf, &end, 10);
        if (end == buf || *end || errno || v < 0)
                return -EIO;
        *ret = v;
        return 0;
}

static int write_full(const char *full, const char *value) {
        _cleanup_close_ int fd = -1;
        size_t len = strlen(value);
        ssize_t n;

        /* No O_TRUNC, no O_CREAT: sysfs attributes exist or the device is gone. */
        fd = open(full, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* One write: a sysfs store sees exactly what one write(2) carries. */
        n = write(fd, value, len);
        if (n < 0)
                return -errno;
        return (size_t) n == len ? 0 : -EIO;
}

int sysfs_write(const char *path, const char *value) {
        char full[PATH_MAX];
        usec_t start = now_usec();
        int r;

        r = sysfs_path(path, full);
        if (r >= 0)
                r = write_full(full, value);
        timing_add(TIME_SYSFS, start);
        return r;
}

/* The child that makes the write: nothing of the hook's open but the attribute, so that a child
 * left blocked keeps no pipe of libvirtd's (our stderr) open and no lock of ours. */
static _Noreturn void writer(const char *full, const char *value) {
        int null = open("/dev/null", O_RDWR);

        if (null >= 0)
                for (int fd = 0; fd < 3; fd++)
                        dup2(null, fd);
        if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)        /* before Linux 5.9 */
                for (int fd = 3; fd < 4096; fd++)
                        close(fd);
        _exit(-write_full(full, value));
}

static pid_t blocked_writer;

int sysfs_take_blocked_writer(void) {
        pid_t pid = blocked_writer;

        blocked_writer = 0;
        return (int) pid;
}

bool sysfs_writer_blocked(int pid, char *wchan, size_t size) {
        char path[64], comm[32] = "", state = 'X';
        _cleanup_fclose_ FILE *f = NULL;

        /* Alive, not a zombie nobody reaped yet, and ours: "PID (COMM) STATE ...", the hook's
         * comm is qemu-hook-act, and its PID is never the hook asking. */
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        if (pid <= 0 || pid == getpid() || !(f = fopen(path, "re")) ||
            fscanf(f, "%*d (%31[^)]) %c", comm, &state) != 2 || strncmp(comm, "qemu-hook", 9) != 0 ||
            state == 'Z' || state == 'X')
                return false;
        fclose(f);
        snprintf(path, sizeof(path), "/proc/%d/wchan", pid);
        if (!(f = fopen(path, "re")) || !fgets(wchan, (int) size, f))
                strscpy(wchan, "?", size);
        return true;
}

static int write_in_child(const char *path, const char *full, const char *value, usec_t deadline) {
        char wchan[64] = "?";
        _cleanup_close_ int pidfd = -1;
        pid_t pid;
        int r, status = 0;

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                writer(full, value);
        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        /* No pidfd (before Linux 5.3): reaped below as before, without a deadline. */
        r = pidfd < 0 ? 0 : pidfd_wait(pidfd, deadline);
        if (r < 0) {
                /* Blocked in the kernel (an unbind waits for the last user of the device): the child
                 * cannot be killed in D state, but the hook goes on and says so. A child the kill
                 * does end was only waiting interruptibly: its write did not happen. */
                sysfs_writer_blocked(pid, wchan, sizeof(wchan));
                kill(pid, SIGKILL);
                if (pidfd_wait(pidfd, now_usec() + 100 * USEC_PER_MSEC) == 0 && waitpid(pid, &status, 0) == pid)
                        return WIFEXITED(status) ? -WEXITSTATUS(status) : -ETIMEDOUT;
                blocked_writer = pid;
                log_warning("writing %s to %s did not return in time; the writer, PID %d, is blocked in the "
                            "kernel (in %s) and is left there: the write may still happen", value, path,
                            (int) pid, wchan);
                return -EINPROGRESS;
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) ? -WEXITSTATUS(status) : -EINTR;
}

int sysfs_link_name(const char *path, char *buf, size_t size) {
        char full[PATH_MAX], target[PATH_MAX];
        ssize_t n;
        int r;

        r = sysfs_path(path, full);
        if (r < 0)
                return r;
        n = readlink(full, target, sizeof(target) - 1);
        if (n < 0)
                return -errno;
        target[n] = '\0';
        const char *base = strrchr(target, '/');
        return strscpy(buf, base ? base + 1 : target, size);
}

bool sysfs_exists(const char *path) {
        char full[PATH_MAX];

        return sysfs_path(path, full) == 0 && access(full, F_OK) == 0;
}

int sysfs_write_deadline(const char *path, const char *value, usec_t deadline) {
        char full[PATH_MAX];
        usec_t start = now_usec();
        int r = sysfs_path(path, full);

        if (r >= 0)
                r = write_in_child(path, full, value, deadline);

        timing_add(TIME_SYSFS, start);
        return r;
}

int sysctl_write_deadline(const char *path, const char *value, usec_t deadline) {
        char full[PATH_MAX];
        usec_t start = now_usec();
        int n = snprintf(full, sizeof(full), "%s/%s", SYSCTL_ROOT, path), r;

        r = n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : write_in_child(full, full, value, deadline);
        timing_add(TIME_SYSFS, start);
        return r;
}
