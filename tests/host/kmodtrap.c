/* kmodtrap: runs CMD with the kernel's module syscalls trapped, so that no test can ever load or
 * unload a module of this machine's kernel; inside an emulated /sys they act on the emulation.
 *
 *     kmodtrap CMD ARGS...
 *
 * The child installs a seccomp filter that hands init_module, finit_module and delete_module to
 * us (SECCOMP_RET_USER_NOTIF, man seccomp_unotify), allows every other syscall and kills a
 * process calling with any ABI but x86_64 (an i386 or x32 call would bypass the numbers
 * checked); then it execs CMD, whose whole process tree inherits the filter. We answer each
 * trapped call, and never let it reach the kernel:
 *   - EPERM unless the caller's mount namespace has fakesys over /sys
 *     (/proc/PID/root/sys/.fakesys/marker exists);
 *   - delete_module(name, flags): "unload NAME" written to /proc/PID/root/sys/.fakesys/module;
 *   - finit_module(fd, ...): "load NAME", NAME the base name of the file behind fd less .ko
 *     (and .xz, .zst, .gz), '-' read as '_', as the kernel names modules;
 *   - init_module (an image in memory): ENOSYS, nothing here loads one.
 * The errno of that write is the syscall's (0: it returns 0), as fakesys gives the kernel's.
 * We serve until CMD exits and exit with its status (128+N for signal N). Should we die first,
 * the kernel answers the trapped calls ENOSYS: still nothing reaches it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define X32_SYSCALL_BIT 0x40000000

static int install_filter(void) {
        struct sock_filter code[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_init_module, 3, 0),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_finit_module, 2, 0),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_delete_module, 1, 0),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        };
        struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
        int fd = (int) syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (fd < 0 && errno == EACCES) {
                /* without CAP_SYS_ADMIN the kernel wants no_new_privs first */
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                        return -1;
                fd = (int) syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        }
        return fd;
}

static int send_fd(int sock, int fd) {
        char data = 0, ctl[CMSG_SPACE(sizeof(int))] = { 0 };
        struct iovec iov = { .iov_base = &data, .iov_len = 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock) {
        char data, ctl[CMSG_SPACE(sizeof(int))];
        struct iovec iov = { .iov_base = &data, .iov_len = 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
        int fd;
        if (recvmsg(sock, &msg, 0) != 1)
                return -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        if (!c || c->cmsg_type != SCM_RIGHTS)
                return -1;
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        return fd;
}

/* The child: trapped from here on, then CMD. */
static void run_child(int sock, char **argv) {
        int fd = install_filter();
        if (fd < 0 && errno == EBUSY) {
                /* one listener per filter chain: the trap we are under is not known to be ours */
                fprintf(stderr, "kmodtrap: already under a seccomp listener (another kmodtrap?): not running %s\n",
                        argv[0]);
                _exit(127);
        }
        if (fd < 0) {
                perror("kmodtrap: seccomp");
                _exit(127);
        }
        if (send_fd(sock, fd) < 0) {
                perror("kmodtrap: sending the listener");
                _exit(127);
        }
        close(fd);
        close(sock);
        execvp(argv[0], argv);
        fprintf(stderr, "kmodtrap: %s: %m\n", argv[0]);
        _exit(127);
}

/* The module name the kernel would give the file FILE (a path). */
static void name_of_file(const char *file, char *out, size_t size) {
        static const char *const tails[] = { ".ko.xz", ".ko.zst", ".ko.gz", ".ko" };
        const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
        size_t n = strlen(base);
        for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
                size_t t = strlen(tails[i]);
                if (n > t && !strcmp(base + n - t, tails[i])) {
                        n -= t;
                        break;
                }
        }
        snprintf(out, size, "%.*s", (int) n, base);
        for (char *c = out; *c; c++)
                if (*c == '-')
                        *c = '_';
}

/* The request's verb and module name ("unload", "load"); the errno to answer on failure. */
static int request(const struct seccomp_notif *req, char *line, size_t size) {
        char p[PATH_MAX], name[PATH_MAX];
        int pid = (int) req->pid;
        if (req->data.nr == __NR_init_module)
                return ENOSYS;
        if (req->data.nr == __NR_delete_module) {
                /* MODULE_NAME_LEN is 56: a longer name is cut, as strncpy_from_user does */
                char buf[65] = "";
                snprintf(p, sizeof(p), "/proc/%d/mem", pid);
                int fd = open(p, O_RDONLY | O_CLOEXEC);
                ssize_t n = fd < 0 ? -1 : pread(fd, buf, 64, (off_t) req->data.args[0]);
                if (fd >= 0)
                        close(fd);
                if (n <= 0)
                        return EFAULT;
                buf[n < 56 ? n : 55] = '\0';
                snprintf(line, size, "unload %s", buf);
                return 0;
        }
        snprintf(p, sizeof(p), "/proc/%d/fd/%d", pid, (int) req->data.args[0]);
        ssize_t n = readlink(p, name, sizeof(name) - 1);
        if (n < 0)
                return EBADF;
        name[n] = '\0';
        char mod[256];
        name_of_file(name, mod, sizeof(mod));
        snprintf(line, size, "load %s", mod);
        return 0;
}

/* fakesys's answer to LINE in the caller's namespace: its write's errno. */
static int forward(int pid, const char *line) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "/proc/%d/root/sys/.fakesys/module", pid);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return errno;
        int err = write(fd, line, strlen(line)) < 0 ? errno : 0;
        close(fd);
        return err;
}

static void serve(int listener) {
        struct seccomp_notif req;
        struct seccomp_notif_resp resp;
        char line[PATH_MAX + 16], p[PATH_MAX];

        memset(&req, 0, sizeof(req));
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
                return;         /* the caller went away meanwhile (ENOENT), or EINTR */
        memset(&resp, 0, sizeof(resp));
        resp.id = req.id;
        snprintf(p, sizeof(p), "/proc/%d/root/sys/.fakesys/marker", (int) req.pid);
        int err = access(p, F_OK) == 0 ? request(&req, line, sizeof(line)) : EPERM;
        /* the pid may have died and been reused while we read its memory or fds */
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) < 0)
                return;
        if (!err)
                err = forward((int) req.pid, line);
        resp.error = -err;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
}

int main(int argc, char **argv) {
        int sv[2], status;
        if (argc < 2) {
                fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
                return 2;
        }
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                perror("kmodtrap: socketpair");
                return 1;
        }
        pid_t child = fork();
        if (child < 0) {
                perror("kmodtrap: fork");
                return 1;
        }
        if (child == 0) {
                close(sv[0]);
                run_child(sv[1], argv + 1);
        }
        close(sv[1]);
        int listener = recv_fd(sv[0]);
        close(sv[0]);
        int pidfd = (int) syscall(SYS_pidfd_open, child, 0);
        if (listener < 0 || pidfd < 0) {
                fprintf(stderr, "kmodtrap: no listener from the child\n");
                waitpid(child, &status, 0);
                return 127;
        }
        for (;;) {
                struct pollfd fds[2] = { { .fd = listener, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
                if (poll(fds, 2, -1) < 0 && errno != EINTR)
                        break;
                if (fds[0].revents & POLLIN)
                        serve(listener);
                if (fds[1].revents & POLLIN)
                        break;
        }
        if (waitpid(child, &status, 0) < 0)
                return 1;
        return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
