#define _GNU_SOURCE 1    /* O_PATH, strchrnul */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "secure-path.h"
#include "util.h"

struct walk {
        const char *what;
        bool check_owner;
        int cur;                        /* O_PATH of the directory reached */
        struct stat cur_st;
        char real[PATH_MAX];            /* cur's path, links resolved */
        unsigned links;
        /* The first unsafe component, reported once the walk reached what it was looking for:
         * a group-writable hooks directory refuses the scripts it holds, not the calls of every
         * VM that has none. */
        bool unsafe;
        char unsafe_path[PATH_MAX];
        struct stat unsafe_st;
};

static bool unsafe(const struct stat *st) {
        /* A link's own mode is always 0777 and means nothing; only root may have made it. */
        return st->st_uid != 0 || (!S_ISLNK(st->st_mode) && (st->st_mode & 022));
}

static int refuse(const char *what, const char *path, const struct stat *st) {
        if (S_ISLNK(st->st_mode))
                return log_error_errno(EPERM, "%s: refusing it, the symbolic link %s is owned by uid %u, not root "
                                       "(chown -h root %s)", what, path, (unsigned) st->st_uid, path);
        if (st->st_uid != 0)
                return log_error_errno(EPERM, "%s: refusing it, %s is owned by uid %u, not root (chown root %s)",
                                       what, path, (unsigned) st->st_uid, path);
        return log_error_errno(EPERM, "%s: refusing it, %s is writable by group or others (mode %04o; chmod go-w %s)",
                               what, path, (unsigned) (st->st_mode & 07777), path);
}

static void note(struct walk *w, const char *path, const struct stat *st) {
        if (!w->check_owner || w->unsafe || !unsafe(st))
                return;
        w->unsafe = true;
        w->unsafe_st = *st;
        strscpy(w->unsafe_path, path, sizeof(w->unsafe_path));
}

/* dir/name into buf; "/" has no slash of its own to add. */
static int join(char buf[static PATH_MAX], const char *dir, const char *name) {
        int n = snprintf(buf, PATH_MAX, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name);
        return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int set_cur(struct walk *w, int fd, const char *real) {
        if (fstat(fd, &w->cur_st) < 0) {
                int r = log_error_errno(errno, "%s: %s: %m", w->what, real);
                close(fd);
                return r;
        }
        if (w->cur >= 0)
                close(w->cur);
        w->cur = fd;
        if (real != w->real)
                strscpy(w->real, real, sizeof(w->real));
        note(w, w->real, &w->cur_st);
        return 0;
}

static int go_root(struct walk *w) {
        int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return log_error_errno(errno, "%s: /: %m", w->what);
        return set_cur(w, fd, "/");
}

static int go_up(struct walk *w) {
        char parent[PATH_MAX];
        int fd;

        if (strcmp(w->real, "/") == 0)
                return 0;       /* "/.." is "/" */
        strscpy(parent, w->real, sizeof(parent));
        *strrchr(parent, '/') = '\0';
        if (!*parent)
                strcpy(parent, "/");
        fd = openat(w->cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "%s: %s: %m", w->what, parent);
        return set_cur(w, fd, parent);
}

/* Reads the link at fd (path: its name, for messages) and makes *todo its target followed by
 * rest; an absolute target starts again from "/". */
static int follow(struct walk *w, int fd, const char *path, const char *rest, char **todo) {
        char target[PATH_MAX];
        ssize_t n;

        if (++w->links > SECURE_PATH_LINKS_MAX)
                return log_error_errno(ELOOP, "%s: %s: %m", w->what, path);
        n = readlinkat(fd, "", target, sizeof(target));
        if (n < 0)
                return log_error_errno(errno, "%s: %s: %m", w->what, path);
        if (n == 0)
                return -ENOENT;
        if ((size_t) n >= sizeof(target))
                return log_error_errno(ENAMETOOLONG, "%s: %s: %m", w->what, path);
        target[n] = '\0';
        char *next;
        if (asprintf(&next, "%s%s", target, rest) < 0)
                return log_error_errno(ENOMEM, "%s: %m", w->what);
        free(*todo);
        *todo = next;
        return target[0] == '/' ? go_root(w) : 0;
}

static int walk(struct walk *w, const char *path, struct secure_path *ret) {
        _cleanup_free_ char *todo = xstrdup(path);
        char name[NAME_MAX + 1], child_path[PATH_MAX];
        struct stat st;
        int r;

        for (char *p = todo;;) {
                p += strspn(p, "/");
                if (!*p) {
                        /* Ended on a directory: "/", ".", "..", or a trailing slash. */
                        ret->fd = w->cur;
                        ret->st = w->cur_st;
                        w->cur = -1;
                        return strscpy(ret->real, w->real, sizeof(ret->real));
                }
                char *end = strchrnul(p, '/');
                size_t len = (size_t) (end - p);
                bool last = end[strspn(end, "/")] == '\0';

                if (len > NAME_MAX)
                        return log_error_errno(ENAMETOOLONG, "%s: %.*s: %m", w->what, (int) len, p);
                memcpy(name, p, len);
                name[len] = '\0';
                p = end;
                if (strcmp(name, ".") == 0)
                        continue;
                if (strcmp(name, "..") == 0) {
                        r = go_up(w);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (join(child_path, w->real, name) < 0)
                        return log_error_errno(ENAMETOOLONG, "%s: %s/%s: %m", w->what, w->real, name);
                _cleanup_close_ int fd = openat(w->cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))
                        return -errno;
                if (fd < 0 || fstat(fd, &st) < 0)
                        return log_error_errno(errno, "%s: %s: %m", w->what, child_path);
                if (S_ISLNK(st.st_mode)) {
                        note(w, child_path, &st);
                        r = follow(w, fd, child_path, p, &todo);
                        if (r < 0)
                                return r;
                        p = todo;
                        continue;
                }
                if (last) {
                        ret->fd = fd;
                        ret->dir_fd = w->cur;
                        ret->st = st;
                        fd = w->cur = -1;
                        return strscpy(ret->real, child_path, sizeof(ret->real));
                }
                if (!S_ISDIR(st.st_mode))
                        return -ENOTDIR;
                r = set_cur(w, fd, child_path);
                fd = -1;        /* set_cur took it */
                if (r < 0)
                        return r;
        }
}

int secure_path_open(int dir_fd, const char *dir_real, const char *path, const char *what, bool check_owner,
                     struct secure_path *ret) {
        struct walk w = { .what = what, .check_owner = check_owner, .cur = -1 };
        _cleanup_free_ char *abs = NULL;
        int r;

        *ret = (struct secure_path) { .fd = -1, .dir_fd = -1 };
        if (path[0] != '/' && dir_fd == AT_FDCWD) {
                /* From "/", so that the directories above the working one are checked too. */
                char cwd[PATH_MAX];
                if (!getcwd(cwd, sizeof(cwd)))
                        return log_error_errno(errno, "%s: the working directory: %m", what);
                if (asprintf(&abs, "%s/%s", cwd, path) < 0)
                        return log_error_errno(ENOMEM, "%s: %m", what);
                path = abs;
        }
        if (path[0] == '/')
                r = go_root(&w);
        else {
                /* The caller's directory was checked by the walk that opened it. */
                int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
                r = fd < 0 ? log_error_errno(errno, "%s: %s: %m", what, dir_real) : 0;
                if (r >= 0 && fstat(fd, &w.cur_st) < 0)
                        r = log_error_errno(errno, "%s: %s: %m", what, dir_real);
                w.cur = fd;
                if (r >= 0)
                        r = strscpy(w.real, dir_real, sizeof(w.real));
        }
        if (r >= 0)
                r = walk(&w, path, ret);
        if (r >= 0 && w.unsafe)
                r = refuse(what, w.unsafe_path, &w.unsafe_st);
        if (w.cur >= 0)
                close(w.cur);
        if (r < 0)
                secure_path_close(ret);
        return r < 0 ? r : 0;
}

int secure_path_check(const struct secure_path *p, const char *what, bool check_owner) {
        return check_owner && unsafe(&p->st) ? refuse(what, p->real, &p->st) : 0;
}

const char *secure_path_name(const struct secure_path *p) {
        const char *slash = strrchr(p->real, '/');

        return slash && slash[1] ? slash + 1 : p->real;
}

void secure_path_close(struct secure_path *p) {
        if (p->fd >= 0)
                close(p->fd);
        if (p->dir_fd >= 0)
                close(p->dir_fd);
        p->fd = p->dir_fd = -1;
}
