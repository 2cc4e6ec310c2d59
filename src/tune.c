/* What a VM asks of the host besides the GPU, read only: the pool of huge pages of its size and
 * the frequency governor of every CPU. The planner decides from this; step-hugepages.c and
 * step-governor.c act. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "sysfs.h"

bool host_word_in(const char *list, const char *word) {
        size_t n = strlen(word);

        for (const char *w = list; *w;) {
                w += strspn(w, " \t");
                size_t len = strcspn(w, " \t");
                if (len == n && strncmp(w, word, n) == 0)
                        return true;
                w += len;
        }
        return false;
}

/* No such directory: the kernel (or the CPU: 1G pages need pdpe1gb) has no pages of that size.
 * The four counts of mm/hugetlb.c as its sysfs shows them: nr_hugepages is every page of the
 * pool, surplus ones included; free_hugepages includes the reserved ones. */
static int read_pool(unsigned long page_kb, struct huge_pool *ret) {
        static const struct {
                const char *file;
                size_t offset;
        } counts[] = {
                { "nr_hugepages", offsetof(struct huge_pool, nr) },
                { "free_hugepages", offsetof(struct huge_pool, free) },
                { "surplus_hugepages", offsetof(struct huge_pool, surplus) },
                { "resv_hugepages", offsetof(struct huge_pool, resv) },
        };
        char path[128];
        int r;

        *ret = (struct huge_pool) { .asked_kb = page_kb };
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
                snprintf(path, sizeof(path), "kernel/mm/hugepages/hugepages-%lukB/%s", page_kb, counts[i].file);
                r = sysfs_read_count(path, (long *) ((char *) ret + counts[i].offset));
                if (r == -ENOENT && i == 0)
                        return 0;
                if (r < 0)
                        return log_error_errno(r, "reading the %lu kB huge pages (" SYSFS_ROOT "/%s): %m", page_kb,
                                               path);
        }
        ret->page_kb = page_kb;
        return 0;
}

static int cmp_cpu(const void *a, const void *b) {
        const struct cpu_freq *x = a, *y = b;
        return (x->cpu > y->cpu) - (x->cpu < y->cpu);
}

/* An offline CPU's policy is inactive: the kernel answers its cpufreq files with EBUSY (show and
 * store in drivers/cpufreq/cpufreq.c); it keeps the governor it has for when it comes back. */
static int read_cpu(unsigned cpu, struct cpu_freq *ret) {
        char path[128], buf[8];
        int r;

        *ret = (struct cpu_freq) { .cpu = cpu, .online = true };
        /* cpu0 has no online file where it cannot be taken offline */
        snprintf(path, sizeof(path), "devices/system/cpu/cpu%u/online", cpu);
        if (sysfs_read(path, buf, sizeof(buf)) == 0)
                ret->online = strcmp(buf, "0") != 0;
        snprintf(path, sizeof(path), "devices/system/cpu/cpu%u/cpufreq", cpu);
        ret->cpufreq = sysfs_exists(path);
        if (!ret->cpufreq || !ret->online)
                return 0;
        snprintf(path, sizeof(path), "devices/system/cpu/cpu%u/cpufreq/scaling_governor", cpu);
        r = sysfs_read(path, ret->governor, sizeof(ret->governor));
        if (r >= 0) {
                snprintf(path, sizeof(path), "devices/system/cpu/cpu%u/cpufreq/scaling_available_governors", cpu);
                r = sysfs_read(path, ret->available, sizeof(ret->available));
        }
        if (r < 0)
                return log_error_errno(r, "reading the frequency governor of CPU %u (" SYSFS_ROOT "/%s): %m", cpu, path);
        return 0;
}

static int read_cpus(struct host *h) {
        _cleanup_(closedirp) DIR *d = opendir(SYSFS_ROOT "/devices/system/cpu");
        struct dirent *de;
        int r;

        if (!d)
                return log_error_errno(errno, "reading the CPUs (" SYSFS_ROOT "/devices/system/cpu): %m");
        while ((de = readdir(d))) {
                const char *n = de->d_name + 3;
                char *end;

                if (strncmp(de->d_name, "cpu", 3) != 0 || !isdigit((unsigned char) *n))
                        continue;
                unsigned long cpu = strtoul(n, &end, 10);
                if (*end || cpu > 65535)
                        continue;
                h->cpus = xreallocarray(h->cpus, h->n_cpus + 1, sizeof(*h->cpus));
                r = read_cpu((unsigned) cpu, &h->cpus[h->n_cpus]);
                if (r < 0)
                        return r;
                h->n_cpus++;
        }
        qsort(h->cpus, h->n_cpus, sizeof(*h->cpus), cmp_cpu);
        return 0;
}

int host_tuning(const struct config *cfg, const char *vm, struct host *h) {
        const struct vm_config *v = config_vm(cfg, vm);
        int r;

        if (v && v->hugepages_kb) {
                r = read_pool(v->hugepage_kb ?: CONFIG_HUGEPAGE_DEFAULT_KB, &h->huge);
                if (r < 0)
                        return r;
        }
        if (v && v->cpu_governor)
                return read_cpus(h);
        return 0;
}
