#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sysfs.h"
#include "util.h"

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

int sysfs_write(const char *path, const char *value) {
        char full[PATH_MAX];
        _cleanup_close_ int fd = -1;
        size_t len = strlen(value);
        ssize_t n;
        int r;

        r = sysfs_path(path, full);
        if (r < 0)
                return r;
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
