/* Where a VM's journal is: the part of journal.h the front end needs too (no inih, no plans). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"

int journal_escape(const char *vm, char *buf, size_t size) {
        size_t n = 0;

        if (!vm[0])
                return -EINVAL;
        for (const unsigned char *p = (const unsigned char *) vm; *p; p++) {
                bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                             (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
                             (*p == '.' && p != (const unsigned char *) vm);
                int w = plain ? snprintf(buf + n, size - n, "%c", *p)
                              : snprintf(buf + n, size - n, "\\x%02x", *p);
                if (w < 0 || (size_t) w >= size - n)
                        return -ENAMETOOLONG;
                n += (size_t) w;
        }
        return 0;
}

/* A file name of at most NAME_MAX bytes for any VM name libvirt takes (escaping may quadruple
 * it): long ones keep a readable prefix and end in a hash of the whole name. */
int journal_path(const char *vm, char buf[static PATH_MAX]) {
        char name[4 * 256 + 1];
        uint64_t hash = 14695981039346656037ULL;        /* FNV-1a */
        int r = journal_escape(vm, name, sizeof(name));

        if (r < 0)
                return r;
        if (strlen(name) > 200) {
                for (const unsigned char *p = (const unsigned char *) vm; *p; p++)
                        hash = (hash ^ *p) * 1099511628211ULL;
                snprintf(name + 160, sizeof(name) - 160, "~%016" PRIx64, hash);
        }
        snprintf(buf, PATH_MAX, JOURNAL_DIR "/%s.state", name);
        return 0;
}

bool journal_exists(const char *vm) {
        char path[PATH_MAX];

        return journal_path(vm, path) == 0 && access(path, F_OK) == 0;
}
