/* qemu-hook, the front end: libvirt runs it for every call of every VM, so it links only inih and
 * libxml2 (loading libsystemd, libudev and libkmod alone takes milliseconds) and exits 0 at once
 * when decide() says there is nothing to do: no script for the call, and not a hand-over or
 * hand-back of ours. Everything else, and every run with options, goes to qemu-hook-act (in
 * QEMU_HOOK_ACT, the libexec directory compiled in), which decides again from the same facts and
 * does the work. It reports nothing itself: qemu-hook-act does. (scripts.c is linked for
 * memfd_with only.) */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "decide.h"
#include "domain.h"
#include "journal.h"
#include "log.h"
#include "scripts.h"

/* Execs qemu-hook-act, at the path compiled in (a copy of qemu-hook elsewhere finds it too), with
 * our arguments; the domain XML we read, if any, becomes its stdin again. Returns only on
 * failure. */
static int act(char **argv, const char *xml, size_t len) {
        if (xml) {
                int fd = memfd_with("domain-xml", xml, len);
                if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, STDIN_FILENO) < 0) {
                        fprintf(stderr, "qemu-hook: passing the domain XML on: %s\n", strerror(fd < 0 ? -fd : errno));
                        return -1;
                }
                close(fd);
        }
        execv(QEMU_HOOK_ACT, argv);
        fprintf(stderr, "qemu-hook: cannot run " QEMU_HOOK_ACT ": %m\n");
        return -1;
}

/* Set by anything config.c or domain.c would say: a warning too must reach the journal. */
static bool said;

static void note(int prio, int err, const char *msg, const char *vm, const char *step) {
        said = said || prio <= LOG_WARNING;
}

/* The call's action as decide() makes it from what this process can see cheaply: the scripts'
 * path, the journal, the config, the XML when it matters. Anything to say (a config warning, an
 * error) is qemu-hook-act's to say: then ACTION_REFUSE, which hands the call on. */
static enum action front_decide(const char *vm, const char *op, const char *sub, char **xml, size_t *len) {
        struct call_facts f = { .handle = -1 };
        struct config cfg = {};
        char scripts[PATH_MAX];
        enum action a;

        f.op = call_op(op, sub);
        /* Anything there, runnable or not (qemu-hook-act warns about those), is its. */
        snprintf(scripts, sizeof(scripts), HOOKS_DIR_DEFAULT "/qemu.d/%s/%s/%s", vm, op, sub);
        f.scripts = !(access(scripts, F_OK) < 0 && (errno == ENOENT || errno == ENOTDIR));
        if (f.op == CALL_OTHER || f.scripts)
                return decide(&f);
        f.journal = f.op == CALL_RELEASE && journal_exists(vm);
        bool loaded = false;
        if (access(HOOKS_DIR_DEFAULT "/kvm.conf", F_OK) < 0 && errno == ENOENT)
                f.config = CONFIG_ABSENT;
        else {
                loaded = config_load(HOOKS_DIR_DEFAULT "/kvm.conf", geteuid() == 0, &cfg) == 0;
                f.config = loaded && !said ? CONFIG_LOADED : CONFIG_BROKEN;
        }
        if (f.config == CONFIG_LOADED) {
                const struct vm_config *v = config_vm(&cfg, vm);
                f.handle = v ? v->handle : -1;
        }
        a = decide(&f);
        if (a == ACTION_NEED_XML) {
                _cleanup_free_ char *error = NULL;
                /* On a read error what was read goes on too, so qemu-hook-act meets the same error. */
                f.xml = domain_read_stdin(xml, len) < 0 ? XML_BROKEN : domain_uses_gpu(&cfg, *xml, *len, &error);
                a = decide(&f);
        }
        if (loaded)
                config_free(&cfg);
        return a;
}

int main(int argc, char **argv) {
        _cleanup_free_ char *xml = NULL;
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
                log_setup(argv[1], -1, note);
                if (front_decide(argv[1], argv[2], argv[3], &xml, &len) == ACTION_NOTHING)
                        return 0;
        }
        act(argv, xml, len);
        /* A broken installation: fail what a failure only stops, never kill a running VM. */
        return argc > 2 && (strcmp(argv[2], "started") == 0 || strcmp(argv[2], "reconnect") == 0) ? 0 : 2;
}
