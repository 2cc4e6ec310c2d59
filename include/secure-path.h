/* Opening a path root can trust: what runs or is read as root (the hook scripts, kvm.conf) must be
 * root's all the way down, or whoever can write one directory on the way can swap it. The path is
 * walked one component at a time, each opened with O_PATH|O_NOFOLLOW from the directory fd before
 * it, and checked on that fd; symbolic links are read and followed by the walk itself. What the
 * caller gets is the fd of what was checked: it runs or reads that fd, never the path again, so
 * nothing can be swapped between the check and the use. */
#pragma once
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>

/* As many links as the kernel follows before ELOOP. */
#define SECURE_PATH_LINKS_MAX 40

struct secure_path {
        int fd;                 /* O_PATH|O_CLOEXEC of the object itself */
        int dir_fd;             /* O_PATH|O_CLOEXEC of the directory it was found in; -1 when the
                                 * path ended in "/", "." or ".." */
        char real[PATH_MAX];    /* where it is, links resolved: for messages */
        struct stat st;         /* of fd */
};

/* Walks path (absolute, or relative to the directory dir_fd whose real path is dir_real, or to the
 * working directory when dir_fd is AT_FDCWD) into *ret. With check_owner, every directory passed
 * through and every link followed must be owned by root and (directories) not writable by group
 * or others; the object itself is not checked here (see secure_path_check), so that a caller can
 * first skip what it would not use anyway. A link owned by anyone but root is refused even in a
 * safe directory, as the kernel's protected_symlinks would refuse it in a sticky one.
 * Returns 0, or -ENOENT / -ENOTDIR silently when the path does not exist (an unsafe directory on
 * the way to nothing is no error: nothing there would be used), or another negative errno logged
 * as "WHAT: ..." (-EPERM: refused, naming the component, its owner or mode, and the fix). */
int secure_path_open(int dir_fd, const char *dir_real, const char *path, const char *what, bool check_owner,
                     struct secure_path *ret);

/* With check_owner, refuses (-EPERM, logged as secure_path_open does) the object itself when it
 * is not owned by root or is writable by group or others. */
int secure_path_check(const struct secure_path *p, const char *what, bool check_owner);

/* The last component of p->real: its name in p->dir_fd. */
const char *secure_path_name(const struct secure_path *p);

void secure_path_close(struct secure_path *p);
