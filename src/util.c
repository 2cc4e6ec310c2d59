#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util.h"

int pci_addr_parse(const char *s, struct pci_addr *ret) {
        struct pci_addr a;
        int n = 0;

        if (!s || sscanf(s, "%4x:%2x:%2x.%1x%n", &a.domain, &a.bus, &a.slot, &a.func, &n) != 4 ||
            s[n] != '\0' || n != (int) PCI_ADDR_LEN - 1 || a.slot > 0x1f || a.func > 7)
                return -EINVAL;
        *ret = a;
        return 0;
}

char *pci_addr_format(const struct pci_addr *a, char buf[static PCI_ADDR_LEN]) {
        snprintf(buf, PCI_ADDR_LEN, "%04x:%02x:%02x.%x", a->domain & 0xffff, a->bus & 0xff,
                 a->slot & 0x1f, a->func & 7);
        return buf;
}

bool pci_addr_same_slot(const struct pci_addr *a, const struct pci_addr *b) {
        return a->domain == b->domain && a->bus == b->bus && a->slot == b->slot;
}

bool pci_addr_equal(const struct pci_addr *a, const struct pci_addr *b) {
        return pci_addr_same_slot(a, b) && a->func == b->func;
}

usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

int wait_until(usec_t deadline, int (*check)(void *data), void *data) {
        /* 2 ms: sysfs reads are cheap, and a probe or a unit stop takes tens of milliseconds at
         * least, so this adds at most a few percent to any wait. */
        const struct timespec interval = { .tv_nsec = 2 * 1000 * 1000 };

        for (;;) {
                int r = check(data);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (now_usec() >= deadline)
                        return -ETIMEDOUT;
                nanosleep(&interval, NULL);
        }
}

int pidfd_wait(int pidfd, usec_t deadline) {
        for (;;) {
                usec_t now = now_usec();
                struct pollfd p = { .fd = pidfd, .events = POLLIN };

                if (now >= deadline)
                        return -ETIMEDOUT;
                int k = poll(&p, 1, (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                if (k > 0)
                        return 0;
                if (k < 0 && errno != EINTR)
                        return -errno;
        }
}

static void *oom(void *p) {
        if (!p) {
                fputs("qemu-hook: out of memory\n", stderr);
                abort();
        }
        return p;
}

char *xstrdup(const char *s) {
        return oom(strdup(s));
}

void *xcalloc(size_t n, size_t size) {
        return oom(calloc(n ? n : 1, size ? size : 1));
}

void *xreallocarray(void *p, size_t n, size_t size) {
        return oom(reallocarray(p, n ? n : 1, size ? size : 1));
}

int strscpy(char *dst, const char *src, size_t n) {
        size_t len = strlen(src);

        if (len >= n)
                return -ENAMETOOLONG;
        memcpy(dst, src, len + 1);
        return 0;
}

/* A JSON string: the bytes JSON forbids raw escaped, the rest as is (UTF-8 passes through). */
void json_string(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

/* systemd's unit_name_escape(): [A-Za-z0-9:_.] stay (but a leading '.'), '/' becomes '-',
 * anything else \xNN. libsystemd has no public function for it. */
int unit_name_escape(const char *s, char *buf, size_t size) {
        size_t n = 0;

        for (const char *c = s; *c; c++) {
                unsigned char ch = (unsigned char) *c;
                char piece[5];

                if (ch == '/')
                        strcpy(piece, "-");
                else if ((ch < 128 && (isalnum(ch) || ch == ':' || ch == '_' || ch == '.')) && !(c == s && ch == '.'))
                        piece[0] = (char) ch, piece[1] = '\0';
                else
                        snprintf(piece, sizeof(piece), "\\x%02x", ch);
                size_t k = strlen(piece);
                if (n + k >= size)
                        return -ENAMETOOLONG;
                memcpy(buf + n, piece, k);
                n += k;
        }
        if (size == 0)
                return -ENAMETOOLONG;
        buf[n] = '\0';
        return 0;
}
