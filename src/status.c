/* qemu-hook --status: what is handed over now, read only. Each journal (VM, since when, what is
 * done and what is left to undo), each configured PCI function (driver, driver_override, who holds
 * its nodes), AllowedCPUs of the slices, and the desktop units, as text or as JSON for scripts.
 * Anything that cannot be read is said where it would be, never a failure: the user asks because
 * something is wrong. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bus.h"
#include "host.h"
#include "journal.h"
#include "log.h"
#include "status.h"

struct out {
        FILE *f;
        bool json;
        size_t n;               /* items printed in the current list */
        int journals_error;     /* JOURNAL_DIR unreadable (a user's --status): a negative errno */
        unsigned unreadable;    /* processes whose open files could not be read, at most per scan */
};

/* One "key": value pair of a JSON object, or "  key: value" of the text. */
static void field(struct out *o, const char *indent, const char *key, const char *value, bool last) {
        if (!o->json) {
                fprintf(o->f, "%s%s: %s\n", indent, key, value[0] ? value : "-");
                return;
        }
        json_string(o->f, key);
        fputc(':', o->f);
        json_string(o->f, value);
        fputs(last ? "" : ",", o->f);
}

static int print_journal(struct plan *p, const char *path, void *data) {
        struct out *o = data;
        struct stat st;
        char since[64] = "", done[16];
        /* Room for every step's undo (plan_left describes each in at most 256 bytes) with its
         * number: a fixed 1024 bytes cut the list short, and the test guest's hand-over of one
         * GPU with two functions (22 steps) already takes 877. */
        size_t size = (p->n_steps + 1) * (256 + 16);
        _cleanup_free_ char *left = xcalloc(1, size);
        size_t n_done = 0;

        if (stat(path, &st) == 0)
                strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S", localtime(&st.st_mtime));
        for (size_t i = 0; i < p->n_steps; i++)
                n_done += p->steps[i].state == STEP_DONE;
        snprintf(done, sizeof(done), "%zu", n_done);
        plan_left(p, left, size);
        const char *state = plan_complete(p) ? "handed over" : plan_handed_back(p) ? "hand-back incomplete" :
                            "hand-over incomplete";
        if (o->json)
                fputs(o->n ? ",{" : "{", o->f);
        else
                fprintf(o->f, "  %s: %s\n", p->vm, state);
        o->n++;
        field(o, "    ", "vm", p->vm, false);
        field(o, "    ", "state", state, false);
        field(o, "    ", "journal", path, false);
        field(o, "    ", "last written", since, false);
        field(o, "    ", "steps done", done, false);
        field(o, "    ", "left to undo", left, true);
        if (o->json)
                fputc('}', o->f);
        return 0;
}

static void print_func(struct out *o, const char *role, const char *name) {
        struct pci_func f = {};
        struct func_node nodes[64];
        char holders[1024] = "";
        unsigned unreadable = 0;
        int n;

        if (host_read_func(name, &f) < 0)
                strscpy(f.driver, "(cannot be read)", sizeof(f.driver));
        n = host_func_nodes(name, nodes, ELEMENTSOF(nodes));
        if (n > 0)
                host_node_holders(nodes, (size_t) n, holders, sizeof(holders), &unreadable);
        o->unreadable = MAX(o->unreadable, unreadable);
        if (o->json)
                fputs(o->n ? ",{" : "{", o->f);
        else
                fprintf(o->f, "  %s (%s)\n", name, role);
        o->n++;
        field(o, "    ", "address", name, false);
        field(o, "    ", "role", role, false);
        field(o, "    ", "driver", f.driver, false);
        field(o, "    ", "driver_override", f.driver_override, false);
        field(o, "    ", "holders", holders, true);
        if (o->json)
                fputc('}', o->f);
}

/* Every function of the configured slots, from the same snapshot the hand-over plans from. */
static void print_funcs(struct out *o, const struct config *cfg) {
        struct host h = {};

        if (!cfg || host_snapshot(cfg->gpu, cfg->n_gpu, cfg->secondary, cfg->n_secondary, &h) < 0) {
                if (!o->json)
                        fprintf(o->f, "  %s\n", cfg ? "(the configured functions cannot be read, see above)" :
                                "(no config: no GPU configured)");
                return;
        }
        for (size_t i = 0; i < h.n_gpu; i++)
                print_func(o, "GPU", h.gpu[i].name);
        for (size_t i = 0; i < h.n_secondary; i++)
                print_func(o, "secondary", h.secondary[i].name);
        host_free(&h);
        if (!o->json && o->unreadable)
                fprintf(o->f, "  (holders: the open files of %u processes of other users cannot be read; "
                        "root sees them all)\n", o->unreadable);
}

/* What a user's --status could not read, for scripts: the text says it in place. */
static void print_unreadable(struct out *o) {
        char what[256];

        if (o->journals_error) {
                snprintf(what, sizeof(what), "hand-overs: " JOURNAL_DIR ": %s", strerror(-o->journals_error));
                fputs(o->n++ ? "," : "", o->f);
                json_string(o->f, what);
        }
        if (o->unreadable) {
                snprintf(what, sizeof(what), "holders: the open files of %u processes of other users",
                         o->unreadable);
                fputs(o->n++ ? "," : "", o->f);
                json_string(o->f, what);
        }
}

static void print_cpus(struct out *o, struct run_ctx *c) {
        sd_bus *bus = NULL;
        bool have_bus = bus_system(c, &bus) >= 0;

        for (size_t i = 0; i < ELEMENTSOF(plan_cpu_units); i++) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
                char list[STEP_FIELD_LEN] = "(no system bus)";
                int r = have_bus ? bus_get_allowed_cpus(bus, plan_cpu_units[i], list, sizeof(list), &error) : 0;

                if (r < 0)
                        snprintf(list, sizeof(list), "(%s)", bus_error_text(&error, r));
                field(o, "  ", plan_cpu_units[i], list[0] ? list : "all", i + 1 == ELEMENTSOF(plan_cpu_units));
        }
}

static void print_units(struct out *o, struct run_ctx *c) {
        struct desktop_state d = {};
        char state[64];

        if (!c->cfg || bus_desktop_state(c, NULL, &d) < 0) {
                field(o, "  ", "desktop", c->cfg ? "(cannot be read, see above)" : "(no config)", true);
                return;
        }
        snprintf(state, sizeof(state), "%s", d.display_manager_skip ? d.display_manager_skip :
                 d.display_manager_active ? "active" : "inactive");
        field(o, "  ", d.display_manager[0] ? d.display_manager : "display manager", state, !c->cfg->user);
        for (size_t i = 0; c->cfg->user && c->cfg->user_units[i]; i++) {
                char key[STEP_FIELD_LEN + 64];
                snprintf(key, sizeof(key), "%s: %s", c->cfg->user, c->cfg->user_units[i]);
                field(o, "  ", key, d.user_units_skip ? d.user_units_skip : d.user_unit_active[i] ? "active" :
                      "inactive", !c->cfg->user_units[i + 1]);
        }
}

/* A section: a JSON member holding a list or object, or a heading. */
static void section(struct out *o, const char *name, bool list, bool first) {
        o->n = 0;
        if (o->json)
                fprintf(o->f, "%s\"%s\":%c", first ? "{" : ",", name, list ? '[' : '{');
        else
                fprintf(o->f, "%s%s:\n", first ? "" : "\n", name);
}

static void section_end(struct out *o, bool list) {
        if (o->json)
                fputc(list ? ']' : '}', o->f);
}

int status_print(struct run_ctx *c, bool json, FILE *f) {
        struct out o = { .f = f, .json = json };
        int r;

        section(&o, "hand-overs", true, true);
        r = journal_foreach(print_journal, &o);
        if (r < 0)
                o.journals_error = r;
        if (r < 0 && !json)
                fprintf(f, "  (cannot be read: " JOURNAL_DIR ": %s; root sees them)\n", strerror(-r));
        else if (o.n == 0 && !json)
                fprintf(f, "  (none: nothing is handed over)\n");
        section_end(&o, true);
        section(&o, "functions", true, false);
        print_funcs(&o, c->cfg);
        section_end(&o, true);
        section(&o, "cpus", false, false);
        print_cpus(&o, c);
        section_end(&o, false);
        section(&o, "desktop", false, false);
        print_units(&o, c);
        section_end(&o, false);
        if (json) {
                section(&o, "unreadable", true, false);
                print_unreadable(&o);
                section_end(&o, true);
                fputs("}\n", f);
        }
        return 0;
}
