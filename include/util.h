/* Small helpers shared by every module: cleanup attributes, PCI addresses, time. */
#pragma once
#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void freep(void *p) { free(*(void **)p); }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void closedirp(DIR **d) { if (*d) closedir(*d); }
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_close_ _cleanup_(closep)

/* A PCI function address, "DDDD:BB:SS.F" as sysfs names it. */
struct pci_addr {
        unsigned domain, bus, slot, func;
};
#define PCI_ADDR_LEN sizeof("0000:00:00.0")

int pci_addr_parse(const char *s, struct pci_addr *ret);
char *pci_addr_format(const struct pci_addr *a, char buf[static PCI_ADDR_LEN]);
bool pci_addr_same_slot(const struct pci_addr *a, const struct pci_addr *b);
bool pci_addr_equal(const struct pci_addr *a, const struct pci_addr *b);

typedef uint64_t usec_t;
#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL
usec_t now_usec(void);

/* Polls check(data) every few milliseconds until it returns > 0 (done) or < 0 (an error, returned
 * as is), or the deadline passes (-ETIMEDOUT). Every wait of the hand-over goes through here: a
 * condition and a deadline, never a fixed sleep. */
int wait_until(usec_t deadline, int (*check)(void *data), void *data);

/* Waits for the process behind pidfd to exit, until the deadline: 0, or -ETIMEDOUT (or another
 * negative errno of poll). */
int pidfd_wait(int pidfd, usec_t deadline);

/* strdup that aborts on out-of-memory: a hook that cannot allocate 20 bytes cannot act safely. */
char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
/* Copies src into dst of size n; returns -ENAMETOOLONG if it does not fit. */
int strscpy(char *dst, const char *src, size_t n);

/* s as systemd escapes a string for a unit name (unit_name_escape): -ENAMETOOLONG when it does not
 * fit size. */
int unit_name_escape(const char *s, char *buf, size_t size);

/* s as a JSON string, quoted: the bytes JSON forbids raw escaped, the rest (UTF-8) as is. */
void json_string(FILE *f, const char *s);
