#define _GNU_SOURCE 1    /* memrchr */
/* qemu-hook, the front end: libvirt runs it for every call of every VM, so it links only inih and
 * libxml2 (loading libsystemd, libudev and libkmod alone takes milliseconds) and exits 0 at once
 * when there is provably nothing to do: no script for the call, and not a hand-over or hand-back
 * of ours. Everything else, and every run with options, goes to qemu-hook-act beside it, which
 * decides again from scratch and does the work; this file never decides that something must be
 * done, only that nothing must. It reports nothing itself: qemu-hook-act does. (scripts.c is
 * linked for memfd_with only.) */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "domain.h"
#include "journal.h"
#include "log.h"
#include "scripts.h"

/* Execs qemu-hook-act from our own directory with our arguments; the domain XML we read, if any,
 * becomes its stdin again. Returns only on failure. */
static int act(char **argv, const char *xml, size_t len) {
        char path[PATH_MAX];
        const size_t room = sizeof(path) - sizeof("/qemu-hook-act");
        ssize_t n = readlink("/proc/self/exe", path, room);
        char *slash;

        if (n <= 0 || (size_t) n >= room || !(slash = memrchr(path, '/', (size_t) n))) {
                fprintf(stderr, "qemu-hook: cannot find where it is installed (/proc/self/exe): %s\n",
                        n < 0 ? strerror(errno) : "not a usable path");
                return -1;
        }
        strcpy(slash, "/qemu-hook-act");
        if (xml) {
                int fd = memfd_with("domain-xml", xml, len);
                if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, STDIN_FILENO) < 0) {
                        fprintf(stderr, "qemu-hook: passing the domain XML on: %s\n", strerror(fd < 0 ? -fd : errno));
                        return -1;
                }
                close(fd);
        }
        execv(path, argv);
        fprintf(stderr, "qemu-hook: cannot run %s: %m\n", path);
        return -1;
}

/* Set by anything config.c or domain.c would say: a warning too must reach the journal. */
static bool said;

static void note(int prio, int err, const char *msg, const char *vm, const char *step) {
        said = said || prio <= LOG_WARNING;
}

/* Whether a prepare/release call of vm provably concerns no GPU of ours, silently: with anything
 * to say (a config warning), qemu-hook-act says it. */
static bool not_ours(const char *vm, bool release, char **xml, size_t *len) {
        _cleanup_free_ struct pci_addr *addrs = NULL;
        _cleanup_free_ char *error = NULL;
        struct config cfg;
        size_t n;
        bool ours = false;

        if (release && journal_exists(vm))
                return false;
        if (access(HOOKS_DIR_DEFAULT "/kvm.conf", F_OK) < 0)
                return errno == ENOENT;         /* not configured: only scripts would run */
        if (config_load(HOOKS_DIR_DEFAULT "/kvm.conf", geteuid() == 0, &cfg) < 0)
                return false;                   /* qemu-hook-act reports it */
        if (said) {
                config_free(&cfg);
                return false;
        }
        const struct vm_config *v = config_vm(&cfg, vm);
        if (v && v->handle >= 0) {
                ours = v->handle;
                config_free(&cfg);
                return !ours;
        }
        /* On a read error what was read goes on too, so qemu-hook-act meets the same error. */
        if (domain_read_stdin(xml, len) < 0 || !*xml ||
            domain_pci_hostdevs(*xml, *len, &addrs, &n, &error) < 0) {
                config_free(&cfg);
                return false;
        }
        for (size_t i = 0; i < n && !ours; i++)
                ours = config_is_gpu(&cfg, &addrs[i]);
        config_free(&cfg);
        return !ours;
}

int main(int argc, char **argv) {
        _cleanup_free_ char *xml = NULL;
        char scripts[PATH_MAX];
        size_t len = 0;
        const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        bool simple = argc == 4 || argc == 5;

        /* As in qemu-hook-act, which inherits it: a stderr whose reader is gone must not kill us. */
        signal(SIGPIPE, SIG_IGN);
        /* libvirt's call has no options ("-" is its EXTRA when there is none); as its hook (`qemu`)
         * nothing is an option, even a VM named "-x" (qemu-hook-act reads it the same way). */
        for (int i = 1; simple && strcmp(self, "qemu") != 0 && i < argc; i++)
                simple = argv[i][0] != '-' || strcmp(argv[i], "-") == 0;
        if (simple) {
                const char *vm = argv[1], *op = argv[2], *sub = argv[3];
                bool prepare = strcmp(op, "prepare") == 0 && strcmp(sub, "begin") == 0;
                bool release = strcmp(op, "release") == 0 && strcmp(sub, "end") == 0;

                log_setup(vm, -1, note);
                /* Anything there, runnable or not (qemu-hook-act warns about those), is its. */
                snprintf(scripts, sizeof(scripts), HOOKS_DIR_DEFAULT "/qemu.d/%s/%s/%s", vm, op, sub);
                bool none = access(scripts, F_OK) < 0 && (errno == ENOENT || errno == ENOTDIR);
                if (none && ((!prepare && !release) || not_ours(vm, release, &xml, &len)))
                        return 0;
        }
        act(argv, xml, len);
        /* A broken installation: fail what a failure only stops, never kill a running VM. */
        return argc > 2 && (strcmp(argv[2], "started") == 0 || strcmp(argv[2], "reconnect") == 0) ? 0 : 2;
}
