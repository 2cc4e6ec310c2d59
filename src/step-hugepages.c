/* Huge pages for a VM that asks for them ([vm] hugepages): the pool of its size raised before
 * anything else changes, so that what the VM needs is free when it starts, and lowered back to
 * the count found at the hand-back. Kernel facts (mm/hugetlb.c, set_max_huge_pages): a write of
 * nr_hugepages allocates as many pages as it can and succeeds, the count read back is what it
 * got; lowering frees only free pages (pages in use become surplus, freed when let go). Memory
 * compacted first (vm/compact_memory) leaves more contiguous blocks to allocate from. */
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

static int read_count(const struct step *s, const char *file, long *ret) {
        char path[STEP_FIELD_LEN + 64], buf[32], *end;
        int r;

        snprintf(path, sizeof(path), "kernel/mm/hugepages/%s/%s", s->target, file);
        r = sysfs_read(path, buf, sizeof(buf));
        if (r < 0)
                return r;
        *ret = strtol(buf, &end, 10);
        return end == buf || *end ? -EIO : 0;
}

static int write_count(struct run_ctx *c, const struct step *s, const char *count) {
        char path[STEP_FIELD_LEN + 64];

        snprintf(path, sizeof(path), "kernel/mm/hugepages/%s/nr_hugepages", s->target);
        return sysfs_write_deadline(path, count, now_usec() + c->timeout);
}

static int hugepages_apply(struct run_ctx *c, struct step *s) {
        unsigned long kb = page_kb(s);
        long nr, free_now, want = number(s->data.huge.want);
        char size[32], asked[32], got[32];
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
        r = read_count(s, "nr_hugepages", &nr);
        if (r >= 0)
                r = read_count(s, "free_hugepages", &free_now);
        if (r < 0)
                return log_error_errno(r, "raising the %s huge pages to %s: reading them back failed: %m", size, s->to);
        if (nr < number(s->to) || free_now < want)
                return log_error_errno(ENOMEM, "making %s free as %s huge pages: only %s reached (free_hugepages %ld "
                                       "of %ld, nr_hugepages %ld of the %s asked): %s; nr_hugepages goes back to %s",
                                       asked, size, size_text(kb * (unsigned long) (free_now < want ? free_now : want), got),
                                       free_now, want, nr, s->to, stopped ? "the kernel was still allocating at the "
                                       "deadline ([host] timeout)" : "not enough memory free, or too fragmented",
                                       s->from);
        return 0;
}

static int hugepages_undo(struct run_ctx *c, struct step *s) {
        char size[32];
        long nr;
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
         * the persistent count reads what was written all the same. */
        r = read_count(s, "nr_hugepages", &nr);
        if (r < 0)
                return log_error_errno(r, "restoring the %s huge pages to %s: reading them back failed: %m", size,
                                       s->from);
        if (nr != number(s->from))
                return log_error_errno(EIO, "restoring the %s huge pages to %s: nr_hugepages reads %ld", size,
                                       s->from, nr);
        return 0;
}

static void hugepages_describe(const struct step *s, bool undo, char *buf, size_t size) {
        unsigned long kb = page_kb(s);
        char page[32], want[32], free_now[32];

        size_text(kb, page);
        if (undo)
                snprintf(buf, size, "give back the %s huge pages: nr_hugepages to %s", page, s->from);
        else
                snprintf(buf, size, "make %s free as %s huge pages: nr_hugepages %s -> %s (free now %s)",
                         size_text(kb * (unsigned long) number(s->data.huge.want), want), page, s->from, s->to,
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
