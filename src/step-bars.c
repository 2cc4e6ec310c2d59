/* The GPU's resizable BARs while a VM has it ([vm NAME] bar_sizes), put back after.
 *
 * The kernel (drivers/pci/pci-sysfs.c, resourceN_resize, only for a BAR with the Resizable BAR
 * capability): reading gives the sizes the BAR supports as a hex bitmask, bit n = 1 MB << n;
 * writing n sets the size 1 MB << n. The store refuses (-EBUSY) while a driver is bound, turns
 * memory decoding off, releases the device's BARs of the same type, resizes and assigns them
 * again (-EINVAL for a size not in the mask, -ENOSPC and the like when the bridge's window has no
 * room; then the old size stays). The size now is the BAR's line in `resource`. So the plan
 * unbinds the function, resizes, then binds vfio-pci; back, the reverse (plan.c). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "step.h"
#include "sysfs.h"

void bar_size_format(unsigned order, char *buf, size_t size) {
        static const char units[] = "MGTPE";

        snprintf(buf, size, "%llu%c", 1ULL << (order % 10), units[order / 10 < 5 ? order / 10 : 4]);
}

/* "0:256M 2:2M" (bar_size_format's) into indexes and orders; how many, or -EINVAL. */
static int parse(const char *list, unsigned index[PCI_BARS], unsigned order[PCI_BARS]) {
        static const char units[] = "MGTPE";
        int n = 0;

        for (const char *p = list; *p;) {
                unsigned long long size;
                char *end;
                const char *u;

                if (n == PCI_BARS)
                        return -EINVAL;
                index[n] = (unsigned) strtoul(p, &end, 10);
                if (*end != ':')
                        return -EINVAL;
                size = strtoull(end + 1, &end, 10);
                if (!*end || !(u = strchr(units, *end)) || !size || (size & (size - 1)) || index[n] >= PCI_BARS)
                        return -EINVAL;
                order[n] = (unsigned) ((u - units) * 10 + __builtin_ctzll(size));
                /* A journal edited by hand must not shift past 64 bits: the kernel's largest is 43. */
                if (order[n++] > 43)
                        return -EINVAL;
                p = end + 1 + strspn(end + 1, " ");
        }
        return n;
}

static int bars_set(struct run_ctx *c, const struct step *s, const char *sizes) {
        unsigned index[PCI_BARS], order[PCI_BARS];
        int n = parse(sizes, index, order), r;

        if (n < 0)
                return log_error_errno(n, "resizing the BARs of %s: \"%s\" is not a list of BAR sizes", s->target, sizes);
        for (int i = 0; i < n; i++) {
                char path[PATH_MAX], value[16], want[16], was[32];
                uint64_t bytes;

                bar_size_format(order[i], want, sizeof(want));
                r = host_bar_bytes(s->target, index[i], &bytes);
                if (r < 0)
                        return log_error_errno(r, "resizing BAR %u of %s to %s: reading its size failed: %m",
                                               index[i], s->target, want);
                if (bytes == (1ULL << 20) << order[i])
                        continue;
                snprintf(was, sizeof(was), "%llu MB", (unsigned long long) (bytes >> 20));
                snprintf(path, sizeof(path), "bus/pci/devices/%s/resource%u_resize", s->target, index[i]);
                snprintf(value, sizeof(value), "%u", order[i]);
                /* The store takes the device's lock, which a write left blocked in the kernel may
                 * hold: with a deadline, never forever. */
                r = sysfs_write_deadline(path, value, now_usec() + c->timeout);
                if (r == -EBUSY)
                        return log_error_errno(r, "resizing BAR %u of %s from %s to %s: %m (the kernel resizes the "
                                               "BARs of a function bound to no driver only)", index[i], s->target,
                                               was, want);
                if (r < 0)
                        return log_error_errno(r, "resizing BAR %u of %s from %s to %s failed: %m%s", index[i],
                                               s->target, was, want, r == -ENOSPC || r == -ENOMEM ?
                                               " (no room in the bridge's window: see dmesg)" : "");
                r = host_bar_bytes(s->target, index[i], &bytes);
                if (r < 0)
                        return log_error_errno(r, "resizing BAR %u of %s to %s: reading its size back failed: %m",
                                               index[i], s->target, want);
                if (bytes != (1ULL << 20) << order[i])
                        return log_error_errno(EIO, "resizing BAR %u of %s to %s: the kernel shows %llu MB",
                                               index[i], s->target, want, (unsigned long long) (bytes >> 20));
        }
        return 0;
}

static int bars_apply(struct run_ctx *c, struct step *s) {
        return bars_set(c, s, s->to);
}

static int bars_undo(struct run_ctx *c, struct step *s) {
        return bars_set(c, s, s->from);
}

static void bars_describe(const struct step *s, bool undo, char *buf, size_t size) {
        if (undo)
                snprintf(buf, size, "resize the BARs of %s back to %s", s->target, s->from);
        else
                snprintf(buf, size, "resize the BARs of %s from %s to %s (supported: %s)", s->target, s->from,
                         s->to, s->data.bar.supported);
}

static const struct step_field bars_fields[] = {
        { "supported", offsetof(struct step, data.bar.supported) },
        {},
};

const struct step_kind step_bar_sizes = {
        .name = "pci-bar-sizes", .apply = bars_apply, .undo = bars_undo, .describe = bars_describe,
        .fields = bars_fields, .device_ordered = true,
};
