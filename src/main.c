/* qemu-hook: libvirt's QEMU hook. `prepare begin` hands the GPU over to vfio-pci, `release end`
 * hands it back; everything else is a no-op, because a failing hook on `reconnect` or `started`
 * makes libvirt kill a running VM. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "domain.h"
#include "engine.h"
#include "host.h"
#include "journal.h"
#include "log.h"
#include "plan.h"

#define XML_MAX (16u << 20)

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct args {
        const char *config;
        bool explicit_config;
        bool dry_run;
        bool verbose;
        bool as_hook;           /* called as `qemu`: libvirt's, nothing on stdout, ever */
        const char *vm, *op, *sub;
};

static void help(FILE *f) {
        fprintf(f,
                "Usage: qemu-hook [OPTIONS] VM OPERATION SUB-OPERATION [EXTRA]\n"
                "       qemu-hook [OPTIONS] --recover VM\n\n"
                "libvirt's QEMU hook (/etc/libvirt/hooks/qemu): `prepare begin` hands the GPU of\n"
                "kvm.conf to vfio-pci, `release end` hands it back; other operations do nothing.\n"
                "The domain XML is read from standard input.\n\n"
                "  -n, --dry-run       print the plan for the live system, change nothing\n"
                "  -c, --config FILE   configuration (default " CONFIG_DEFAULT_PATH ")\n"
                "  -r, --recover VM    undo what the journal of VM records (as `release end`)\n"
                "  -v, --verbose       log every step to standard error\n"
                "  -h, --help          this text\n"
                "  -V, --version       the version\n\n"
                "Exit status: 0 done or nothing to do, 1 the hand-over failed (the host was\n"
                "restored), 2 usage or configuration error (nothing was touched).\n");
}

static int parse_args(int argc, char **argv, struct args *a) {
        static const struct option options[] = {
                { "dry-run", no_argument, NULL, 'n' },
                { "config", required_argument, NULL, 'c' },
                { "recover", required_argument, NULL, 'r' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {}
        };
        const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        const char *recover = NULL;
        int c, n;

        *a = (struct args) { .config = CONFIG_DEFAULT_PATH };
        while ((c = getopt_long(argc, argv, "nc:r:vhV", options, NULL)) >= 0)
                switch (c) {
                case 'n': a->dry_run = true; break;
                case 'c': a->config = optarg; a->explicit_config = true; break;
                case 'r': recover = optarg; break;
                case 'v': a->verbose = true; break;
                case 'h': help(stdout); return 0;
                case 'V': puts("qemu-hook " QEMU_HOOK_VERSION); return 0;
                default: return -EINVAL;
                }
        n = argc - optind;
        if (recover && n == 0) {
                *a = (struct args) { .config = a->config, .explicit_config = a->explicit_config,
                                     .dry_run = a->dry_run, .verbose = a->verbose,
                                     .vm = recover, .op = "release", .sub = "end" };
                return 1;
        }
        if (recover || n < 3 || n > 4) {
                fprintf(stderr, "qemu-hook: expected VM OPERATION SUB-OPERATION [EXTRA]; see --help\n");
                return -EINVAL;
        }
        a->as_hook = strcmp(self, "qemu") == 0;
        a->vm = argv[optind];
        a->op = argv[optind + 1];
        a->sub = argv[optind + 2];
        return 1;
}

/* The domain XML from stdin; empty when stdin is a terminal (a run by hand without XML). */
static int read_stdin(char **ret, size_t *len) {
        size_t size = 0, n = 0;
        char *buf = NULL;

        if (isatty(STDIN_FILENO)) {
                *ret = NULL;
                *len = 0;
                return 0;
        }
        for (;;) {
                if (n == size) {
                        if (size >= XML_MAX) {
                                free(buf);
                                return log_error_errno(EFBIG, "domain XML on standard input exceeds %u bytes", XML_MAX);
                        }
                        size = size ? size * 2 : 16384;
                        buf = xreallocarray(buf, size + 1, 1);
                }
                ssize_t k = read(STDIN_FILENO, buf + n, size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        free(buf);
                        return log_error_errno(errno, "reading the domain XML from standard input: %m");
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        *ret = buf;
        *len = n;
        return 0;
}

/* Whether the VM is ours: the config names it, or its XML passes a function of the GPU. */
static int vm_is_ours(const struct config *cfg, const char *vm) {
        const struct vm_config *v = config_vm(cfg, vm);
        _cleanup_free_ struct pci_addr *addrs = NULL;
        _cleanup_free_ char *xml = NULL, *error = NULL;
        size_t len, n;
        int r;

        if (v && v->handle >= 0)
                return v->handle;
        r = read_stdin(&xml, &len);
        if (r < 0)
                return r;
        if (!xml)
                return log_error_errno(EINVAL, "%s: no domain XML on standard input, and the config does not "
                                       "name the VM ([vm %s] handle = yes)", vm, vm);
        r = domain_pci_hostdevs(xml, len, &addrs, &n, &error);
        if (r < 0)
                return log_error_errno(r, "%s: domain XML on standard input: %s", vm, error);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < cfg->n_gpu; j++)
                        if (pci_addr_same_slot(&addrs[i], &cfg->gpu[j]))
                                return 1;
        return 0;
}

/* The host as the planner needs it: a snapshot, the secondary GPU's display driver resolved, and
 * the drivers the plan needs checked. */
static int snapshot(const struct config *cfg, struct host *h) {
        int r;

        r = host_snapshot(cfg->gpu, cfg->n_gpu, cfg->secondary, cfg->n_secondary, h);
        if (r < 0)
                return r;
        if (cfg->secondary_driver)
                strscpy(h->secondary_driver, cfg->secondary_driver, sizeof(h->secondary_driver));
        else
                for (size_t i = 0; i < h->n_secondary && !h->secondary_driver[0]; i++)
                        if ((h->secondary[i].class >> 16) == 0x03)
                                (void) host_default_driver(&h->secondary[i], h->secondary_driver,
                                                           sizeof(h->secondary_driver));
        if (host_pci_driver_available("vfio-pci") < 0)
                return log_error_errno(ENOENT, "vfio-pci is neither loaded nor loadable: is the vfio-pci "
                                       "module installed?");
        if (h->secondary_driver[0] && host_pci_driver_available(h->secondary_driver) < 0)
                return log_error_errno(ENOENT, "the secondary GPU's display driver %s is neither loaded "
                                       "nor loadable", h->secondary_driver);
        return 0;
}

static bool plan_settled(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++)
                if (p->steps[i].state == STEP_DONE || p->steps[i].state == STEP_STARTED)
                        return false;
        return true;
}

static bool plan_complete(const struct plan *p) {
        for (size_t i = 0; i < p->n_steps; i++)
                if (p->steps[i].state != STEP_DONE && p->steps[i].state != STEP_SKIPPED)
                        return false;
        return true;
}

/* Undoes a recorded or derived hand-over; the journal goes once nothing of it is left. */
static int undo(struct run_ctx *c, struct plan *p, bool dry_run, FILE *out) {
        int r;

        if (dry_run) {
                fprintf(out, "hand-back of %s:\n", p->vm);
                plan_print(p, true, out);
                return EXIT_DONE;
        }
        r = engine_undo(c, p);
        if (r < 0) {
                log_error_errno(r, "hand-back of %s is incomplete: %m; the journal in " JOURNAL_DIR
                                " keeps what is left for the next `release end` or --recover", p->vm);
                return EXIT_FAILED;
        }
        journal_remove(p->vm);
        return EXIT_DONE;
}

static int hand_over(struct run_ctx *c, bool dry_run, FILE *out) {
        struct host h = {};
        struct desktop_state d = {};
        struct plan p = {};
        char error[512];
        int r, ret = EXIT_FAILED;

        r = journal_load(c->vm, &p);
        if (r >= 0 && plan_complete(&p)) {
                log_info("%s: handed over already (journal in " JOURNAL_DIR ")", c->vm);
                plan_free(&p);
                return EXIT_DONE;
        }
        if (r >= 0) {
                /* A hook killed half way: put the host back before planning from it. */
                log_notice("%s: a previous hand-over did not finish; undoing what it did", c->vm);
                r = undo(c, &p, dry_run, out);
                plan_free(&p);
                if (r != EXIT_DONE || dry_run)
                        return r;
        } else if (r != -ENOENT)
                return EXIT_FAILED;

        if (snapshot(c->cfg, &h) < 0 || bus_desktop_state(c, &d) < 0)
                goto out;
        r = plan_hand_over(c->cfg, c->vm, &h, &d, &p, error, sizeof(error));
        if (r < 0) {
                log_error_errno(r, "hand-over of %s refused: %s; nothing was changed", c->vm, error);
                goto out;
        }
        if (dry_run) {
                fprintf(out, "hand-over of %s:\n", c->vm);
                plan_print(&p, false, out);
                ret = EXIT_DONE;
                goto out;
        }
        /* Saved even when every step is skipped: the release of this VM then knows it did nothing. */
        if (journal_save(&p) < 0)
                goto out;
        usec_t start = now_usec();
        r = engine_apply(c, &p);
        if (r < 0) {
                if (plan_settled(&p))
                        journal_remove(c->vm);
                goto out;
        }
        log_info("%s: handed over in %.1f ms", c->vm, (double) (now_usec() - start) / USEC_PER_MSEC);
        ret = EXIT_DONE;
out:
        plan_free(&p);
        host_free(&h);
        return ret;
}

static int hand_back(struct run_ctx *c, bool dry_run, FILE *out) {
        struct host h = {};
        struct desktop_state d = {};
        struct plan p = {};
        int r, ret = EXIT_FAILED;

        r = journal_load(c->vm, &p);
        if (r >= 0) {
                ret = undo(c, &p, dry_run, out);
                plan_free(&p);
                return ret;
        }
        if (r != -ENOENT)
                return EXIT_FAILED;
        if (journal_any()) {
                /* Another VM's journal says who has the GPU; this VM did not hand anything over. */
                log_info("%s: no hand-over recorded for this VM; nothing to hand back", c->vm);
                return EXIT_DONE;
        }
        /* No journal at all (installed while the VM ran, /run wiped): derive it from the config. */
        if (snapshot(c->cfg, &h) < 0 || bus_desktop_state(c, &d) < 0)
                goto out;
        plan_derive_hand_back(c->cfg, c->vm, &h, &d, &p);
        if (p.n_steps == 0) {
                log_info("%s: the GPU is not on vfio-pci; nothing to hand back", c->vm);
                ret = EXIT_DONE;
                goto out;
        }
        log_notice("%s: no journal; handing back what the config describes", c->vm);
        ret = undo(c, &p, dry_run, out);
out:
        plan_free(&p);
        host_free(&h);
        return ret;
}

static int run(const struct args *a) {
        _cleanup_close_ int lock = -1;
        struct config cfg;
        bool prepare = strcmp(a->op, "prepare") == 0 && strcmp(a->sub, "begin") == 0;
        bool release = strcmp(a->op, "release") == 0 && strcmp(a->sub, "end") == 0;
        /* libvirt never passes options, and takes stdout of `migrate` and `restore` as a new
         * domain XML: only the plan that --dry-run was asked for goes there, and not even that
         * when running as the installed hook. */
        FILE *out = a->as_hook ? stderr : stdout;
        int r;

        if (!prepare && !release)
                return EXIT_DONE;
        log_setup(a->vm, a->verbose, !a->dry_run);
        r = config_load(a->config, geteuid() == 0, &cfg);
        if (r == -ENOENT && !a->explicit_config)
                return EXIT_DONE;       /* installed, not configured yet: the message said so */
        if (r < 0)
                return EXIT_USAGE;

        struct run_ctx c = { .cfg = &cfg, .vm = a->vm, .dry_run = a->dry_run };
        const struct vm_config *v = config_vm(&cfg, a->vm);
        c.timeout = (v && v->timeout_ms ? v->timeout_ms : cfg.timeout_ms) * USEC_PER_MSEC;

        /* A recorded hand-over is handed back whatever the XML says now; hand_back() reads it,
         * under the lock. */
        r = release && journal_exists(a->vm) ? 1 : vm_is_ours(&cfg, a->vm);
        if (r <= 0) {
                config_free(&cfg);
                return r < 0 ? EXIT_USAGE : EXIT_DONE;
        }
        if (!a->dry_run) {
                lock = journal_lock(now_usec() + c.timeout);
                if (lock < 0) {
                        config_free(&cfg);
                        return EXIT_FAILED;
                }
        }
        r = prepare ? hand_over(&c, a->dry_run, out) : hand_back(&c, a->dry_run, out);
        bus_close(&c);
        config_free(&cfg);
        return r;
}

int main(int argc, char **argv) {
        struct args a;
        int r;

        r = parse_args(argc, argv, &a);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_DONE;
        return run(&a);
}
