/* qemu-hook: libvirt's QEMU hook. `prepare begin` hands the GPU over to vfio-pci, `release end`
 * hands it back, and every call runs the scripts of qemu.d/VM/OPERATION/SUB-OPERATION; a failure
 * on `reconnect` or `started` is only logged, because a failing hook there makes libvirt kill a
 * running VM. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "check.h"
#include "config.h"
#include "decide.h"
#include "domain.h"
#include "engine.h"
#include "host.h"
#include "journal.h"
#include "log.h"
#include "modules.h"
#include "plan.h"
#include "scripts.h"
#include "status.h"
#include "timing.h"
#include "virt.h"

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct args {
        const char *config;
        bool explicit_config;
        const char *hooks_dir;  /* kvm.conf and qemu.d */
        char config_buf[PATH_MAX];
        bool dry_run;
        bool verbose;
        const char *vm, *op, *sub, *extra;
        bool recover;
        bool status;
        bool check;
        bool json;
        const char *self;       /* argv[0] */
};

struct input {
        bool read;
        char *xml;
        size_t len;
};

static void help(FILE *f) {
        fprintf(f,
                "Usage: qemu-hook [OPTIONS] VM OPERATION SUB-OPERATION [EXTRA]\n"
                "       qemu-hook [OPTIONS] --recover VM\n"
                "       qemu-hook [OPTIONS] --status [--json]\n"
                "       qemu-hook [OPTIONS] --check [--json] [VM]\n\n"
                "libvirt's QEMU hook (/etc/libvirt/hooks/qemu): `prepare begin` hands the GPU of\n"
                "kvm.conf to vfio-pci, `release end` hands it back, and every call runs the\n"
                "scripts in qemu.d/VM/OPERATION/SUB-OPERATION. The domain XML is read from\n"
                "standard input.\n\n"
                "  -n, --dry-run       print the plan for the live system, change nothing\n"
                "  -c, --config FILE   configuration (default HOOKS-DIR/kvm.conf)\n"
                "  -d, --hooks-dir DIR where kvm.conf and qemu.d are (default " HOOKS_DIR_DEFAULT ")\n"
                "  -r, --recover VM    undo what the journal of VM records (as `release end`)\n"
                "  -s, --status        what is handed over now, the GPU's drivers and holders,\n"
                "                      AllowedCPUs and the desktop's units (read only)\n"
                "  -k, --check [VM]    whether a hand-over would work on this machine, and why\n"
                "                      not: kernel, GPU, consoles, desktop, config, installation,\n"
                "                      SELinux/AppArmor, and the VM (or every VM) from libvirt\n"
                "  -j, --json          with --status or --check: one JSON object, for scripts\n"
                "  -v, --verbose       log every step to standard error\n"
                "  -h, --help          this text\n"
                "  -V, --version       the version\n\n"
                "Exit status: 0 done or nothing to do; 1 the hand-over failed (the host was\n"
                "restored, or the message lists what is left), was refused (the GPU in use),\n"
                "or the hand-back is incomplete (the journal keeps what is left: --recover);\n"
                "2 usage or configuration error (nothing was touched). --check: 0 ready,\n"
                "1 something would make a hand-over fail, 2 usage error.\n");
}

static int parse_args(int argc, char **argv, struct args *a) {
        static const struct option options[] = {
                { "dry-run", no_argument, NULL, 'n' },
                { "config", required_argument, NULL, 'c' },
                { "hooks-dir", required_argument, NULL, 'd' },
                { "recover", required_argument, NULL, 'r' },
                { "status", no_argument, NULL, 's' },
                { "check", no_argument, NULL, 'k' },
                { "json", no_argument, NULL, 'j' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {}
        };
        const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        const char *recover = NULL;
        int c, n;

        *a = (struct args) { .hooks_dir = HOOKS_DIR_DEFAULT, .self = argv[0] };
        /* As libvirt's hook there are no options, and a VM may be named "-x": taken as an option,
         * every call would fail, `started` too, which kills the VM. */
        while (strcmp(self, "qemu") != 0 && (c = getopt_long(argc, argv, "nc:d:r:skjvhV", options, NULL)) >= 0)
                switch (c) {
                case 'n': a->dry_run = true; break;
                case 'c': a->config = optarg; a->explicit_config = true; break;
                case 'd': a->hooks_dir = optarg; break;
                case 'r': recover = optarg; break;
                case 's': a->status = true; break;
                case 'k': a->check = true; break;
                case 'j': a->json = true; break;
                case 'v': a->verbose = true; break;
                case 'h': help(stdout); return 0;
                case 'V': puts("qemu-hook " QEMU_HOOK_VERSION); return 0;
                default: return -EINVAL;
                }
        n = argc - optind;
        if (!a->config) {
                if (snprintf(a->config_buf, sizeof(a->config_buf), "%s/kvm.conf", a->hooks_dir) >=
                    (int) sizeof(a->config_buf)) {
                        fprintf(stderr, "qemu-hook: --hooks-dir %s: path too long\n", a->hooks_dir);
                        return -EINVAL;
                }
                a->config = a->config_buf;
        }
        if (a->json && !a->status && !a->check) {
                fprintf(stderr, "qemu-hook: --json goes with --status or --check; see --help\n");
                return -EINVAL;
        }
        if ((a->status && (n != 0 || recover || a->check || a->dry_run)) ||
            (a->check && (n > 1 || recover || a->dry_run))) {
                fprintf(stderr, "qemu-hook: %s; see --help\n", a->check && !a->status ?
                        "--check takes one VM at most, and no other action" : "--status takes no VM, operation or other action");
                return -EINVAL;
        }
        if (a->check)
                a->vm = n ? argv[optind] : NULL;
        if (a->status || a->check)
                return 1;
        if (recover && n == 0) {
                a->vm = recover;
                a->op = "release";
                a->sub = "end";
                a->extra = "-";
                a->recover = true;
                return 1;
        }
        if (recover || n < 3 || n > 4) {
                fprintf(stderr, "qemu-hook: expected VM OPERATION SUB-OPERATION [EXTRA]; see --help\n");
                return -EINVAL;
        }
        a->vm = argv[optind];
        a->op = argv[optind + 1];
        a->sub = argv[optind + 2];
        a->extra = n == 4 ? argv[optind + 3] : "-";
        return 1;
}

/* The domain XML from stdin, read once, when first needed. */
static int input_get(struct input *in) {
        if (in->read)
                return 0;
        in->read = true;
        return domain_read_stdin(&in->xml, &in->len);
}

/* What the domain XML says of the GPU, for decide(); a broken or missing XML is logged. By hand
 * (by_hand: --dry-run) without XML on stdin, libvirt's is read through its API: never in hook
 * mode, where calling back into libvirtd deadlocks. */
static enum xml_gpu xml_facts(const struct config *cfg, const char *vm, struct input *in, bool by_hand) {
        _cleanup_free_ char *error = NULL;
        enum xml_gpu x;

        if (input_get(in) < 0)
                return XML_BROKEN;
        if (by_hand && (!in->xml || in->len == 0)) {
                free(in->xml);
                in->xml = NULL;
                if (virt_domain_xml(vm, &in->xml, &in->len) < 0)
                        return XML_BROKEN;
        }
        x = domain_uses_gpu(cfg, in->xml, in->len, &error);
        if (x == XML_BROKEN)
                log_error("%s: domain XML on standard input: %s%s", vm, error,
                          in->xml ? "" : ", and the config does not name the VM ([vm NAME] handle = yes)");
        return x;
}

/* The host as the planner needs it: a snapshot, the secondary GPU's display driver resolved, and
 * the drivers the plan needs checked. */
static int snapshot(const struct config *cfg, struct host *h) {
        int r;

        r = host_snapshot(cfg->gpu, cfg->n_gpu, cfg->secondary, cfg->n_secondary, h);
        if (r < 0)
                return r;
        host_resolve_secondary_driver(h, cfg->secondary_driver);
        if (cfg->unload_driver && host_modules(h) < 0)
                return -EIO;
        if (host_pci_driver_available("vfio-pci") < 0)
                return log_error_errno(ENOENT, "vfio-pci is neither loaded nor loadable: is the vfio-pci "
                                       "module installed?");
        if (h->secondary_driver[0] && host_pci_driver_available(h->secondary_driver) < 0)
                return log_error_errno(ENOENT, "the secondary GPU's display driver %s is neither loaded "
                                       "nor loadable", h->secondary_driver);
        return 0;
}

/* Undoes a recorded or derived hand-over; the journal goes once nothing of it is left. */
static int undo(struct run_ctx *c, struct plan *p, bool dry_run, FILE *out) {
        const struct config *cfg = c->cfg;
        struct config recorded;
        int r;

        if (dry_run) {
                fprintf(out, "hand-back of %s:\n", p->vm);
                plan_print(p, true, out);
                return EXIT_DONE;
        }
        /* A VM still running with the GPU keeps it, and the desktop stays as it is. */
        if (holders_check_hand_back(c, p->steps, p->n_steps) < 0)
                return EXIT_FAILED;
        /* The user units go back on the bus of the user they were stopped for. */
        if (p->user[0]) {
                recorded = *cfg;
                recorded.user = p->user;
                recorded.user_bus = p->user_bus[0] ? p->user_bus : NULL;
                c->cfg = &recorded;
        }
        usec_t start = now_usec();
        timing_reset();
        r = engine_undo(c, p);
        c->cfg = cfg;
        if (r < 0) {
                char left[1024];
                size_t n = plan_left(p, left, sizeof(left));
                log_error_errno(r, "hand-back of %s is incomplete: %m; %zu step%s could not be undone: %s; the "
                                "journal in " JOURNAL_DIR " keeps %s: once the cause above is fixed, `qemu-hook "
                                "--recover %s` (or the VM's next release) finishes the hand-back", p->vm, n,
                                n == 1 ? "" : "s", left, n == 1 ? "it" : "them", p->vm);
                return EXIT_FAILED;
        }
        journal_remove(p->vm);
        char split[256];
        timing_format(start, split, sizeof(split));
        log_info("%s: handed back in %.1f ms (%s)", p->vm, (double) (now_usec() - start) / USEC_PER_MSEC, split);
        return EXIT_DONE;
}

/* A script failing on `started` or `reconnect` is only logged: a hook failing there makes libvirt
 * kill the running VM. On `stopped` and `release` libvirt ignores the hook's status. */
static bool failure_ignored(const char *op) {
        return strcmp(op, "started") == 0 || strcmp(op, "reconnect") == 0;
}

/* libvirt takes the hook's stdout as a new domain XML on `migrate` and `restore`, and scripts may
 * write one there, as under the shell dispatcher; anywhere else their output goes to stderr,
 * which libvirt shows when the hook fails. */
static int script_stdout(const char *op) {
        return strcmp(op, "migrate") == 0 || strcmp(op, "restore") == 0 ? -1 : STDERR_FILENO;
}

static bool failure_stops(const char *op) {
        return !failure_ignored(op) && strcmp(op, "stopped") != 0 && strcmp(op, "release") != 0;
}

/* The scripts of a call outside a hand-over (other operations, VMs not ours, release): in order;
 * where a failure fails the operation the first one ends the run, elsewhere every script runs
 * (each cleans up something of its own). Returns the first failure. */
static int run_scripts(struct run_ctx *c, const struct scripts *s, FILE *out) {
        char path[PATH_MAX];
        int first = 0;

        for (size_t i = 0; i < s->n && !(first && failure_stops(c->hook_args[1])); i++) {
                snprintf(path, sizeof(path), "%s/%s/%s", c->qemu_d, c->vm, s->paths[i]);
                if (c->dry_run) {
                        fprintf(out, "run hook script %s\n", path);
                        continue;
                }
                log_set_step("script");
                int r = script_run(s->fds[i], path, c->hook_args, c->xml_fd, script_stdout(c->hook_args[1]),
                                   c->script_timeout);
                first = first ?: r;
        }
        log_set_step(NULL);
        return first;
}

/* The hand-over, then the scripts of prepare/begin as its last steps: they find the GPU on
 * vfio-pci, and one failing undoes the hand-over like any other step. */
static int hand_over(struct run_ctx *c, const struct scripts *scripts, bool dry_run, FILE *out) {
        struct host h = {};
        struct desktop_state d = {};
        struct plan p = {}, left = {};
        char error[512], other_path[PATH_MAX], adopted[PATH_MAX] = "";
        int r, ret = EXIT_FAILED;

        r = journal_load(c->vm, &p);
        if (r >= 0 && plan_complete(&p)) {
                /* libvirtd died with the VM and never called release: the GPU is still handed
                 * over, and this start's scripts run as usual. */
                log_info("%s: handed over already (journal in " JOURNAL_DIR ")", c->vm);
                plan_free(&p);
                engine_lock(c, false);          /* scripts never run under it */
                return run_scripts(c, scripts, out) < 0 ? EXIT_FAILED : EXIT_DONE;
        }
        if (r >= 0) {
                /* A hook killed half way: put the host back before planning from it. */
                log_notice("%s: a previous hand-over did not finish; undoing what it did", c->vm);
                if (engine_check_writers(&p) < 0) {
                        plan_free(&p);
                        return EXIT_FAILED;
                }
                r = undo(c, &p, dry_run, out);
                if (dry_run || r == EXIT_DONE)
                        plan_free(&p);
                if (dry_run)
                        return r;
                if (r != EXIT_DONE) {
                        /* An undo the kernel refuses (a GPU its driver will not take back) must not
                         * keep the VM from ever starting again, nor be forgotten: the hand-over starts
                         * from the host as it is, and its journal carries what is left, undone with
                         * the rest at the release. */
                        char what[1024], path[PATH_MAX] = JOURNAL_DIR;
                        size_t n = plan_left(&p, what, sizeof(what));
                        const char *it = n == 1 ? "it" : "them";
                        (void) journal_path(c->vm, path);
                        log_warning("%s: %zu step%s of the previous hand-over could not be undone (%s); handing "
                                    "over from the host as it is, and the journal keeps %s for this VM's release. "
                                    "To clear %s sooner: fix the cause, stop the VM and run `qemu-hook --recover "
                                    "%s`; to forget %s, remove %s", c->vm, n, n == 1 ? "" : "s", what, it, it,
                                    c->vm, it, path);
                        left = p;
                        p = (struct plan) {};
                }
        } else if (r != -ENOENT)
                return EXIT_FAILED;

        if (snapshot(c->cfg, &h) < 0 || host_tuning(c->cfg, c->vm, &h) < 0)
                goto out;
        /* The GPU in another VM's journal: that VM runs with it (its hand-back must stay whole,
         * and this VM could not have the GPU anyway), or its hand-back left steps the kernel
         * refused, which this hand-over takes over like its own. */
        for (size_t i = 0; i < h.n_gpu; i++) {
                struct plan other;
                if (journal_owner(c->vm, h.gpu[i].name, &other, other_path) <= 0)
                        continue;
                if (!plan_handed_back(&other)) {
                        log_error("hand-over of %s refused: %s is handed over to %s (journal %s); nothing was "
                                  "changed: stop %s first", c->vm, h.gpu[i].name, other.vm, other_path, other.vm);
                        plan_free(&other);
                        goto out;
                }
                char what[1024];
                plan_left(&other, what, sizeof(what));
                log_warning("%s: the hand-back of %s left %s in place (%s); this hand-over takes that over from its "
                            "journal %s, to be undone at this VM's release", c->vm, other.vm, h.gpu[i].name, what,
                            other_path);
                plan_carry(&left, &other);
                strscpy(adopted, other_path, sizeof(adopted));
                break;
        }
        if (bus_desktop_state(c, &h, &d) < 0)
                goto out;
        r = plan_hand_over(c->cfg, c->vm, &h, &d, &p, error, sizeof(error));
        if (r < 0) {
                log_error_errno(r, "hand-over of %s refused: %s; nothing was changed", c->vm, error);
                goto out;
        }
        plan_carry(&p, &left);
        for (size_t i = 0; i < scripts->n; i++) {
                if (strlen(scripts->paths[i]) >= STEP_FIELD_LEN) {
                        log_error("hand-over of %s refused: hook script %s: name longer than the journal "
                                  "keeps (%d characters); nothing was changed", c->vm, scripts->paths[i],
                                  STEP_FIELD_LEN - 1);
                        goto out;
                }
                plan_add(&p, &step_script, scripts->paths[i], "", "run");
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
        /* Its steps are in this journal now: the other VM's release must not undo them again. */
        if (adopted[0] && unlink(adopted) < 0)
                log_warning_errno(errno, "removing %s, whose steps this hand-over took over: %m", adopted);
        /* What the config asks that the host cannot give without harm: said, not refused. */
        for (size_t i = 0; i < p.n_steps; i++)
                if (p.steps[i].kind == &step_module && p.steps[i].state == STEP_SKIPPED)
                        log_warning("%s: [gpu] unload_driver: module %s stays loaded: %s", c->vm, p.steps[i].target,
                                    p.steps[i].note);
        usec_t start = now_usec();
        timing_reset();
        r = engine_apply(c, &p);
        if (r < 0) {
                if (plan_settled(&p))
                        journal_remove(c->vm);
                goto out;
        }
        char split[256];
        timing_format(start, split, sizeof(split));
        log_info("%s: handed over in %.1f ms (%s)", c->vm, (double) (now_usec() - start) / USEC_PER_MSEC, split);
        ret = EXIT_DONE;
out:
        plan_free(&p);
        plan_free(&left);
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
                ret = engine_check_writers(&p) < 0 ? EXIT_FAILED : undo(c, &p, dry_run, out);
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
        if (snapshot(c->cfg, &h) < 0 || bus_desktop_state(c, &h, &d) < 0)
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

static int scripts_input(struct run_ctx *c, struct input *in) {
        int r = input_get(in);

        if (r < 0)
                return r;
        c->xml_fd = memfd_with("domain-xml", in->xml ? in->xml : "", in->len);
        if (c->xml_fd < 0)
                return log_error_errno(c->xml_fd, "hook scripts: holding the domain XML for them: %m");
        return 0;
}

static int run(struct args *a) {
        struct config cfg = {};
        struct scripts scripts = {};
        struct input in = {};
        struct call_facts f = { .handle = -1 };
        /* Only what --dry-run was asked for goes to stdout: libvirt takes the hook's stdout of
         * `migrate` and `restore` as a new domain XML, and as its hook (`qemu`) there are no
         * options, so no --dry-run. */
        FILE *out = stdout;
        char qemu_d[PATH_MAX];
        struct run_ctx c = { .vm = a->vm, .dry_run = a->dry_run, .qemu_d = qemu_d, .xml_fd = -1, .lock = -1,
                             .scripts = &scripts,
                             .hook_args = { (char *) a->vm, (char *) a->op, (char *) a->sub, (char *) a->extra } };
        int ret = EXIT_DONE, scripts_r = 0;

        log_setup(a->vm, a->verbose ? LOG_DEBUG : LOG_NOTICE, a->dry_run ? NULL : log_journal);
        if (snprintf(qemu_d, sizeof(qemu_d), "%s/qemu.d", a->hooks_dir) >= (int) sizeof(qemu_d)) {
                log_error("--hooks-dir %s: path too long", a->hooks_dir);
                return EXIT_USAGE;
        }
        f.op = call_op(a->op, a->sub);
        /* One stat() when there are none: the path of every VM that is not ours. */
        if (!a->recover)
                scripts_r = scripts_find(qemu_d, a->vm, a->op, a->sub, geteuid() == 0, &scripts);
        f.scripts = scripts.n > 0 || scripts_r < 0;
        /* Another operation depends on its scripts alone: no config to read when there are none. */
        if (f.op == CALL_OTHER && decide(&f) == ACTION_NOTHING)
                return EXIT_DONE;

        /* Without the default kvm.conf qemu-hook is only the scripts' dispatcher. */
        f.config = !a->explicit_config && access(a->config, F_OK) < 0 && errno == ENOENT ? CONFIG_ABSENT :
                   config_load(a->config, geteuid() == 0, &cfg) < 0 ? CONFIG_BROKEN : CONFIG_LOADED;
        const struct vm_config *v = f.config == CONFIG_LOADED ? config_vm(&cfg, a->vm) : NULL;
        /* --recover names the VM to hand back: it is ours. */
        f.handle = a->recover ? 1 : v ? v->handle : -1;
        f.journal = f.op == CALL_RELEASE && journal_exists(a->vm);
        enum action action = decide(&f);
        if (action == ACTION_NEED_XML) {
                f.xml = xml_facts(&cfg, a->vm, &in, a->dry_run);
                action = decide(&f);
        }
        if (action == ACTION_HAND_BACK && f.journal && f.config != CONFIG_LOADED)
                log_warning("%s: the config %s %s; handing back what the journal in " JOURNAL_DIR " records",
                            a->vm, a->config, f.config == CONFIG_BROKEN ? "cannot be used (see above)" : "does not exist");
        /* Said where the config or the XML was read; nothing is done, but for a release whose XML
         * alone is broken: its scripts still clean up what is theirs, below. */
        bool refused = action == ACTION_REFUSE;
        if (refused && !(f.op == CALL_RELEASE && f.config == CONFIG_LOADED)) {
                ret = EXIT_USAGE;
                goto out;
        }
        /* Elsewhere the scripts still run, with the default deadlines. */
        c.cfg = &cfg;
        c.timeout = (v && v->timeout_ms ? v->timeout_ms : f.config == CONFIG_LOADED ? cfg.timeout_ms :
                     CONFIG_TIMEOUT_DEFAULT_MS) * USEC_PER_MSEC;
        c.script_timeout = (f.config == CONFIG_LOADED ? cfg.script_timeout_ms : CONFIG_SCRIPT_TIMEOUT_DEFAULT_MS) *
                           USEC_PER_MSEC;
        if (scripts.n && scripts_r == 0)
                scripts_r = scripts_input(&c, &in);

        if (action == ACTION_SCRIPTS && f.op == CALL_OTHER) {
                if (scripts_r == 0)
                        scripts_r = run_scripts(&c, &scripts, out);
                if (scripts_r < 0 && failure_ignored(a->op))
                        log_warning("%s %s %s: a hook script failed; exiting 0 all the same, since libvirt kills a "
                                    "running VM when its hook fails on `%s`", a->vm, a->op, a->sub, a->op);
                ret = scripts_r < 0 && !failure_ignored(a->op) ? EXIT_FAILED : EXIT_DONE;
                goto out;
        }
        /* Release: the scripts first, while the GPU is still the VM's (they may need it); a failing
         * one does not keep the host from getting its GPU back. */
        if (f.op == CALL_RELEASE) {
                if (scripts_r == 0)
                        scripts_r = run_scripts(&c, &scripts, out);
        } else if (scripts_r < 0) {
                ret = EXIT_USAGE;       /* a script refused before anything was done */
                goto out;
        }
        if (action != ACTION_HAND_OVER && action != ACTION_HAND_BACK) {
                /* Not ours: prepare's scripts run on their own (release's ran above). */
                if (f.op == CALL_PREPARE && run_scripts(&c, &scripts, out) < 0)
                        ret = EXIT_FAILED;
                ret = refused ? EXIT_USAGE : ret;
                goto out;
        }
        if (engine_lock(&c, true) < 0) {
                ret = EXIT_FAILED;
                goto out;
        }
        ret = action == ACTION_HAND_OVER ? hand_over(&c, &scripts, a->dry_run, out) : hand_back(&c, a->dry_run, out);
        bus_close(&c);
out:
        if (f.op == CALL_RELEASE && scripts_r < 0 && ret == EXIT_DONE)
                ret = EXIT_FAILED;
        engine_lock(&c, false);
        if (c.xml_fd >= 0)
                close(c.xml_fd);
        free(in.xml);
        scripts_free(&scripts);
        if (f.config == CONFIG_LOADED)
                config_free(&cfg);
        return ret;
}

/* --status: read only, with the config if there is one (its GPU and desktop), the journals and
 * the host as they are. */
static int status(struct args *a) {
        struct config cfg = {};
        bool loaded;
        struct run_ctx c = { .vm = "", .lock = -1, .xml_fd = -1, .timeout = CONFIG_TIMEOUT_DEFAULT_MS * USEC_PER_MSEC };

        log_setup(NULL, a->verbose ? LOG_DEBUG : LOG_NOTICE, NULL);
        loaded = !(!a->explicit_config && access(a->config, F_OK) < 0 && errno == ENOENT) &&
                 config_load(a->config, geteuid() == 0, &cfg) == 0;
        if (loaded) {
                c.cfg = &cfg;
                c.timeout = cfg.timeout_ms * USEC_PER_MSEC;
        }
        status_print(&c, a->json, stdout);
        bus_close(&c);
        if (loaded)
                config_free(&cfg);
        return fflush(stdout) == 0 ? EXIT_DONE : EXIT_FAILED;
}

/* --check: read only; exit 0 ready, 1 not. */
static int check(struct args *a) {
        struct run_ctx c = { .vm = "", .lock = -1, .xml_fd = -1, .timeout = CONFIG_TIMEOUT_DEFAULT_MS * USEC_PER_MSEC };
        struct check_args ca = { .config = a->config, .explicit_config = a->explicit_config, .hooks_dir = a->hooks_dir,
                                 .vm = a->vm, .self = a->self, .json = a->json, .verbose = a->verbose };
        int r = check_run(&c, &ca, stdout);

        return fflush(stdout) == 0 ? r : EXIT_FAILED;
}

int main(int argc, char **argv) {
        struct args a;
        int r;

        /* An ignored SIGCHLD, inherited, would make every waitpid() fail: the writes under a
         * deadline and the scripts wait for their children. SIGPIPE ignored: a message to a
         * stderr whose reader is gone (libvirtd restarted) must never kill the hook between two
         * sysfs writes; the scripts get it back at its default. */
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_IGN);
        r = parse_args(argc, argv, &a);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_DONE;
        return a.status ? status(&a) : a.check ? check(&a) : run(&a);
}
