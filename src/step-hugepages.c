/* Huge pages for a VM that asks for them ([vm] hugepages): the pool of its size raised before
 * anything else changes, so that what the VM needs is free when it starts, and lowered back to
 * the persistent count found at the hand-back. Kernel facts (mm/hugetlb.c): nr_hugepages reads
 * every page of the pool, surplus ones (overcommitted, freed when let go) included, and a write
 * of it sets the persistent count (nr_hugepages less surplus_hugepages): raising it first makes
 * surplus pages persistent, then allocates as many pages as it can and succeeds, what it got is
 * read back; lowering it frees free pages down to those in use or reserved, and the rest in use
 * becomes surplus (set_max_huge_pages). free_hugepages counts the reserved pages too
 * (resv_hugepages), promised to a mapping already. Memory compacted first (vm/compact_memory)
 * leaves more contiguous blocks to allocate from. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "step.h"
#include "sysfs.h"

static unsigned long page_kb(const struct step *s) {
        unsigned long kb = 0;

        sscanf(s->target, "hugepages-%lukB", &kb);
        return kb;
}

static long number(const char *s) {
        return strtol(s, NULL, 10);
}

/* "64 MiB", "2 GiB", "512 kB": sizes as a person reads them. */
static const char *size_text(unsigned long kb, char buf[static 32]) {
        if (kb && kb % (1024 * 1024) == 0)
                snprintf(buf, 32, "%lu GiB", kb / (1024 * 1024));
        else if (kb && kb % 1024 == 0)
                snprintf(buf, 32, "%lu MiB", kb / 1024);
        else
                snprintf(buf, 32, "%lu kB", kb);
        return buf;
}

/* DOING ("raising the 2 MiB huge pages to 32") names what the read is for in its error. */
static int read_pool(const struct step *s, const char *doing, const char *file, long *ret) {
        char path[STEP_FIELD_LEN + 64];
        int r;

        snprintf(path, sizeof(path), "kernel/mm/hugepages/%s/%s", s->target, file);
        r = sysfs_read_count(path, ret);
        if (r < 0)
                return log_error_errno(r, "%s: reading " SYSFS_ROOT "/%s back failed: %m", doing, path);
        return 0;
}

/* The persistent count, nr_hugepages less surplus_hugepages: two files, read while pages may be
 * let go (a surplus page freed lowers both); nr_hugepages read again after, until it held. */
static int read_persistent(const struct step *s, const char *doing, long *nr, long *surplus) {
        long again;
        int r;

        for (int i = 0; i < 3; i++) {
                r = read_pool(s, doing, "nr_hugepages", nr);
                if (r >= 0)
                        r = read_pool(s, doing, "surplus_hugepages", surplus);
                if (r >= 0)
                        r = read_pool(s, doing, "nr_hugepages", &again);
                if (r < 0 || again == *nr)
                        return r;
        }
        return 0;
}

static int write_count(struct run_ctx *c, const struct step *s, const char *count) {
        char path[STEP_FIELD_LEN + 64];

        snprintf(path, sizeof(path), "kernel/mm/hugepages/%s/nr_hugepages", s->target);
        return sysfs_write_deadline(path, count, now_usec() + c->timeout);
}

static int hugepages_apply(struct run_ctx *c, struct step *s) {
        unsigned long kb = page_kb(s);
        long nr, surplus, free_now, resv, want = number(s->data.huge.want);
        char size[32], asked[32], got[32], doing[STEP_FIELD_LEN + 96];
        int r;

        size_text(kb, size);
        size_text(kb * (unsigned long) want, asked);
        /* Best effort: a kernel without CONFIG_COMPACTION has no such file, and the pool may
         * still grow from memory free as it is. */
        r = sysctl_write_deadline("vm/compact_memory", "1", now_usec() + c->timeout);
        if (r < 0) {
                (void) sysfs_take_blocked_writer();
                log_warning_errno(r, "compacting memory (" SYSCTL_ROOT "/vm/compact_memory) before raising the %s "
                                  "huge pages failed: %m; going on", size);
        }
        r = write_count(c, s, s->to);
        if (r == -EINPROGRESS)
                return log_error_errno(r, "raising the %s huge pages to %s: the write of nr_hugepages did not "
                                       "return in time", size, s->to);
        /* Allocating gigabytes under memory pressure can outlast the deadline: the writer, killed
         * then, stops allocating (set_max_huge_pages bails on a pending signal), and what it got
         * is read back like any short count. */
        bool stopped = r == -ETIMEDOUT;
        if (r < 0 && !stopped)
                return log_error_errno(r, "raising the %s huge pages to %s (" SYSFS_ROOT "/kernel/mm/hugepages/%s/"
                                       "nr_hugepages) failed: %m", size, s->to, s->target);
        /* The pool reached what was written when its persistent pages (nr_hugepages counts the
         * surplus ones too) did; what the VM can have is free_hugepages less the pages reserved
         * already (resv_hugepages, counted in free_hugepages). */
        snprintf(doing, sizeof(doing), "raising the %s huge pages to %s", size, s->to);
        r = read_persistent(s, doing, &nr, &surplus);
        if (r >= 0)
                r = read_pool(s, doing, "free_hugepages", &free_now);
        if (r >= 0)
                r = read_pool(s, doing, "resv_hugepages", &resv);
        if (r < 0)
                return r;
        long persistent = nr - surplus, usable = free_now - resv;
        if (persistent < number(s->to) || usable < want)
                return log_error_errno(ENOMEM, "making %s free as %s huge pages: only %s reached (%ld of the %ld "
                                       "pages free: free_hugepages %ld less resv_hugepages %ld; %ld persistent of "
                                       "the %s asked: nr_hugepages %ld less surplus_hugepages %ld): %s; "
                                       "nr_hugepages goes back to %s", asked, size,
                                       size_text(kb * (unsigned long) (usable < 0 ? 0 : usable < want ? usable : want),
                                                 got), usable, want, free_now, resv, persistent, s->to, nr, surplus,
                                       stopped ? "the kernel was still allocating at the deadline ([host] timeout)" :
                                       "not enough memory free, or too fragmented", s->from);
        return 0;
}

static int hugepages_undo(struct run_ctx *c, struct step *s) {
        char size[32], doing[STEP_FIELD_LEN + 96];
        long nr, surplus;
        int r;

        size_text(page_kb(s), size);
        r = write_count(c, s, s->from);
        if (r == -EINPROGRESS)
                return log_error_errno(r, "restoring the %s huge pages to %s: the write of nr_hugepages did not "
                                       "return in time", size, s->from);
        if (r < 0)
                return log_error_errno(r, "restoring the %s huge pages to %s (" SYSFS_ROOT "/kernel/mm/hugepages/%s/"
                                       "nr_hugepages) failed: %m", size, s->from, s->target);
        /* Pages still in use (a VM not gone yet) become surplus, freed by the kernel when let go:
         * nr_hugepages still counts them, the persistent count (less surplus_hugepages) is what
         * was written. */
        snprintf(doing, sizeof(doing), "restoring the %s huge pages to %s", size, s->from);
        r = read_persistent(s, doing, &nr, &surplus);
        if (r < 0)
                return r;
        if (nr - surplus != number(s->from))
                return log_error_errno(EIO, "%s: the pool keeps %ld persistent pages (nr_hugepages %ld, "
                                       "surplus_hugepages %ld)", doing, nr - surplus, nr, surplus);
        return 0;
}

static void hugepages_describe(const struct step *s, bool undo, char *buf, size_t size) {
        unsigned long kb = page_kb(s);
        char page[32], want[32], free_now[32];

        size_text(kb, page);
        if (undo)
                snprintf(buf, size, "give back the %s huge pages: nr_hugepages to %s", page, s->from);
        else
                snprintf(buf, size, "make %s free as %s huge pages: %snr_hugepages %s -> %s (free now %s)",
                         size_text(kb * (unsigned long) number(s->data.huge.want), want), page,
                         s->state == STEP_SKIPPED ? "" : "compact memory, ", s->from, s->to,
                         size_text(kb * (unsigned long) number(s->data.huge.free), free_now));
}

static const struct step_field hugepages_fields[] = {
        { "want", offsetof(struct step, data.huge.want) },
        { "free", offsetof(struct step, data.huge.free) },
        {},
};

const struct step_kind step_hugepages = {
        .name = "hugepages", .apply = hugepages_apply, .undo = hugepages_undo, .describe = hugepages_describe,
        .fields = hugepages_fields,
};
