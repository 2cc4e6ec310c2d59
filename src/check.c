/* qemu-hook --check [VM]: will a hand-over work on this machine, and if not, why. Read only, as root
 * or as a user (then it says what it could not see). Each finding is a line of its group with what
 * to do about it; a FAIL is what would make a hand-over fail. The verdict is the planner's own:
 * the hand-over planned from the host as it is, as `prepare begin` would plan it. */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <time.h>

#include "bus.h"
#include "check.h"
#include "domain.h"
#include "host.h"
#include "journal.h"
#include "log.h"
#include "modules.h"
#include "plan.h"
#include "sysfs.h"
#include "virt.h"

enum level { OK, INFO, WARN, FAIL };

struct report {
        FILE *f;
        bool json;
        const char *group;
        size_t n, n_warn, n_fail;
};

/* One finding: its level, what was found and, when something is to be done, what. */
__attribute__((format(printf, 4, 5)))
static void say(struct report *r, enum level l, const char *fix, const char *fmt, ...) {
        static const char *const names[] = { "ok", "info", "warn", "FAIL" };
        char text[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        r->n_warn += l == WARN;
        r->n_fail += l == FAIL;
        if (r->json) {
                fputs(r->n++ ? ",{\"group\":" : "{\"group\":", r->f);
                json_string(r->f, r->group);
                fprintf(r->f, ",\"level\":\"%s\",\"text\":", l == FAIL ? "fail" : names[l]);
                json_string(r->f, text);
                fputs(",\"fix\":", r->f);
                json_string(r->f, fix ? fix : "");
                fputc('}', r->f);
                return;
        }
        fprintf(r->f, "  %-5s %s\n", names[l], text);
        if (fix)
                fprintf(r->f, "        -> %s\n", fix);
}

static void group(struct report *r, const char *name) {
        if (!r->json)
                fprintf(r->f, "%s%s:\n", r->group ? "\n" : "", name);
        r->group = name;
}

/* What the code shared with the hook logs (config_load, host_snapshot, bus_desktop_state) comes
 * here instead of stderr, and becomes findings of the group that asked. */
static struct {
        int prio[8];
        char msg[8][1024];
        size_t n;
} captured;

static void capture(int prio, int err, const char *msg, const char *vm, const char *step) {
        if (prio > LOG_WARNING || captured.n == ELEMENTSOF(captured.msg))
                return;
        captured.prio[captured.n] = prio;
        strscpy(captured.msg[captured.n], msg, sizeof(captured.msg[0]));
        captured.n++;
}

/* The messages captured since the last call, errors at level error, warnings as WARN. */
static void said(struct report *r, enum level error, const char *fix) {
        for (size_t i = 0; i < captured.n; i++)
                say(r, captured.prio[i] <= LOG_ERR ? error : WARN, captured.prio[i] <= LOG_ERR ? fix : NULL,
                    "%s", captured.msg[i]);
        captured.n = 0;
}

static int count_entries(const char *path) {
        _cleanup_(closedirp) DIR *d = opendir(path);
        struct dirent *de;
        int n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        return n;
}

/* The words of the kernel command line that concern the IOMMU, "" when none. */
static void iommu_words(char *buf, size_t size) {
        _cleanup_fclose_ FILE *f = fopen("/proc/cmdline", "re");
        char line[4096], *save = NULL;

        buf[0] = '\0';
        if (!f || !fgets(line, sizeof(line), f))
                return;
        for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
                if (strstr(w, "iommu"))
                        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? " " : "", w);
}

static void check_kernel(struct report *r) {
        struct utsname u;
        char words[512];
        int n, k;

        group(r, "kernel");
        if (uname(&u) == 0)
                say(r, OK, NULL, "Linux %s (%s)", u.release, u.machine);
        iommu_words(words, sizeof(words));
        n = count_entries(SYSFS_ROOT "/kernel/iommu_groups");
        if (n > 0)
                say(r, OK, NULL, "IOMMU on: %d IOMMU groups (kernel command line: %s)", n, words[0] ? words : "no iommu option");
        else
                say(r, FAIL, "turn on VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, and add intel_iommu=on "
                    "(Intel) or amd_iommu=on (AMD) to the kernel command line",
                    "IOMMU off: no IOMMU groups in " SYSFS_ROOT "/kernel/iommu_groups (kernel command line: %s)",
                    words[0] ? words : "no iommu option");
        k = host_pci_driver_available("vfio-pci");
        if (k > 0)
                say(r, OK, NULL, "vfio-pci registered (%s)", sysfs_exists("module/vfio_pci/initstate") ?
                    "module vfio_pci loaded" : "built into the kernel");
        else if (k == 0)
                say(r, OK, NULL, "vfio-pci loadable (module vfio_pci, loaded by the hand-over)");
        else
                say(r, FAIL, "install the kernel's vfio-pci module (CONFIG_VFIO_PCI) for this kernel",
                    "vfio-pci is neither registered nor loadable: %s", strerror(-k));
        captured.n = 0;
}

static const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

static void addresses(const struct pci_addr *a, size_t n, char *buf, size_t size) {
        char one[PCI_ADDR_LEN];

        buf[0] = '\0';
        for (size_t i = 0; i < n; i++)
                snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? " " : "", pci_addr_format(&a[i], one));
}

/* Every setting in effect, defaults included, as the native format names them. */
static void settings(struct report *r, const struct config *c) {
        char list[512] = "";

        addresses(c->gpu, c->n_gpu, list, sizeof(list));
        say(r, INFO, NULL, "[gpu] address = %s (every function of each slot)", list);
        say(r, INFO, NULL, "[gpu] reset_method = %s", c->reset_method ? c->reset_method : "(default: left alone)");
        say(r, INFO, NULL, "[gpu] unload_driver = %s%s", yes_no(c->unload_driver), c->unload_driver ? "" : " (default)");
        addresses(c->secondary, c->n_secondary, list, sizeof(list));
        say(r, INFO, NULL, "[secondary] address = %s", list[0] ? list : "(none)");
        say(r, INFO, NULL, "[secondary] driver = %s", c->secondary_driver ? c->secondary_driver :
            "(default: from the kernel's module aliases)");
        say(r, INFO, NULL, "[secondary] park_driver = %s%s", c->park_driver,
            strcmp(c->park_driver, PLAN_VFIO) == 0 ? " (default)" : "");
        say(r, INFO, NULL, "[desktop] user = %s", c->user ? c->user : "(none: no user units are stopped)");
        say(r, INFO, NULL, "[desktop] bus = %s", c->user_bus ? c->user_bus : "(default: unix:path=/run/user/UID/bus)");
        say(r, INFO, NULL, "[desktop] display_manager = %s%s", c->display_manager,
            strcmp(c->display_manager, "auto") == 0 ? " (default: display-manager.service)" : "");
        list[0] = '\0';
        for (size_t i = 0; c->user_units[i]; i++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? " " : "", c->user_units[i]);
        say(r, INFO, NULL, "[desktop] units = %s", list[0] ? list : "(none)");
        say(r, INFO, NULL, "[host] cpus = %s", c->host_cpus ? c->host_cpus : "(default: every CPU, unrestricted)");
        say(r, INFO, NULL, "[host] timeout = %u ms%s", c->timeout_ms,
            c->timeout_ms == CONFIG_TIMEOUT_DEFAULT_MS ? " (default)" : "");
        say(r, INFO, NULL, "[host] script_timeout = %u ms%s", c->script_timeout_ms,
            c->script_timeout_ms == CONFIG_SCRIPT_TIMEOUT_DEFAULT_MS ? " (default)" : "");
        say(r, INFO, NULL, "[host] vtconsoles = %s%s", yes_no(c->vtconsoles), c->vtconsoles ? " (default)" : "");
        say(r, INFO, NULL, "[host] framebuffer = %s%s", yes_no(c->framebuffer), c->framebuffer ? " (default)" : "");
        say(r, INFO, NULL, "[host] inhibit_sleep = %s%s", yes_no(c->inhibit_sleep),
            c->inhibit_sleep != c->original ? " (default)" : "");
        for (size_t i = 0; c->before_stop[i]; i++)
                say(r, INFO, NULL, "[desktop] before_stop = %s", c->before_stop[i]);
        for (size_t i = 0; c->after_start[i]; i++)
                say(r, INFO, NULL, "[desktop] after_start = %s", c->after_start[i]);
        for (size_t i = 0; i < c->n_vms; i++) {
                const struct vm_config *v = &c->vms[i];
                char timeout[32] = "";

                if (v->timeout_ms)
                        snprintf(timeout, sizeof(timeout), "%u ms", v->timeout_ms);
                say(r, INFO, NULL, "[vm %s] handle = %s, cpus = %s, timeout = %s", v->name,
                    v->handle < 0 ? "auto" : yes_no(v->handle), v->host_cpus ? v->host_cpus : "([host] cpus)",
                    timeout[0] ? timeout : "([host] timeout)");
                if (v->bar_sizes.n) {
                        char bars[STEP_FIELD_LEN] = "", size[16];
                        for (size_t k = 0; k < v->bar_sizes.n; k++) {
                                bar_size_format(v->bar_sizes.bar[k].order, size, sizeof(size));
                                snprintf(bars + strlen(bars), sizeof(bars) - strlen(bars), "%s%u:%s", k ? " " : "",
                                         v->bar_sizes.bar[k].index, size);
                        }
                        say(r, INFO, NULL, "[vm %s] bar_sizes = %s", v->name, bars);
                }
        }
}

/* Loads the config into cfg; false when there is none to check against. */
static bool check_config(struct report *r, const char *path, bool explicit, struct config *cfg) {
        group(r, "config");
        if (!explicit && access(path, F_OK) < 0 && errno == ENOENT) {
                say(r, FAIL, "write one: the example with every key is in the package's documentation "
                    "(kvm.conf), or see `man qemu-hook`",
                    "no config %s: qemu-hook only runs the scripts of qemu.d and hands no GPU over", path);
                return false;
        }
        /* As the hook reads it: root's, not writable by others (a user can see that too). */
        if (config_load(path, true, cfg) < 0) {
                said(r, FAIL, geteuid() != 0 ? "run --check as root: the config may be root's to read alone" :
                     "fix what is named above (`man qemu-hook` lists every key): until then every prepare of "
                     "the config's VMs fails");
                return false;
        }
        say(r, OK, NULL, "%s (%s format)", path, cfg->original ? "the original scripts' VIRSH_*" : "native INI");
        said(r, WARN, NULL);
        settings(r, cfg);
        return true;
}

static void reset_method(struct report *r, const struct pci_func *f) {
        char path[128], method[128];

        snprintf(path, sizeof(path), "bus/pci/devices/%s/reset_method", f->name);
        if (sysfs_read(path, method, sizeof(method)) == 0 && method[0])
                say(r, OK, NULL, "%s reset_method: %s", f->name, method);
        else if (snprintf(path, sizeof(path), "bus/pci/devices/%s/reset", f->name), sysfs_exists(path))
                say(r, OK, NULL, "%s can be reset (its reset file; this kernel shows no reset_method)", f->name);
        else
                say(r, WARN, "look for a firmware update of the card, or vendor-reset for older AMD cards",
                    "%s has no reset: the kernel cannot reset it between two starts of a VM, which may find "
                    "it in the state the last one left", f->name);
}

/* The resizable BARs of a display function: the size of each now and those it supports. */
static void bar_sizes(struct report *r, const struct pci_func *f) {
        for (unsigned i = 0; i < PCI_BARS; i++) {
                char now[32] = "unused", sizes[STEP_FIELD_LEN] = "";

                if (!f->bar_supported[i])
                        continue;
                if (f->bar_bytes[i] >= (1ULL << 20) && !(f->bar_bytes[i] & (f->bar_bytes[i] - 1)))
                        bar_size_format((unsigned) __builtin_ctzll(f->bar_bytes[i]) - 20, now, sizeof(now));
                plan_bar_sizes_supported(f->bar_supported[i], sizes, sizeof(sizes));
                say(r, INFO, NULL, "%s BAR %u: %s now, resizable to%s", f->name, i, now, sizes);
        }
}

/* Whether [gpu] reset_method and each [vm] bar_sizes could work on the GPU as it is: the planner's
 * own check, a FAIL naming what the kernel would refuse. */
static void pci_keys(struct report *r, const struct config *cfg, const struct host *h) {
        char error[512];

        if (cfg->reset_method) {
                struct config only = *cfg;
                only.n_vms = 0;
                if (plan_check_pci_keys(&only, NULL, h, error, sizeof(error)) < 0)
                        say(r, FAIL, "set [gpu] reset_method to methods the GPU has (or auto), or unset it", "%s", error);
                else
                        say(r, OK, NULL, "[gpu] reset_method = %s: possible (vendor-reset %sloaded)", cfg->reset_method,
                            h->vendor_reset ? "" : "not ");
        }
        for (size_t i = 0; i < cfg->n_vms; i++) {
                struct config only = *cfg;

                if (!cfg->vms[i].bar_sizes.n)
                        continue;
                only.reset_method = NULL;
                if (plan_check_pci_keys(&only, cfg->vms[i].name, h, error, sizeof(error)) < 0)
                        say(r, FAIL, "use sizes the BAR supports (listed above), or unset it", "%s", error);
                else
                        say(r, OK, NULL, "[vm %s] bar_sizes: possible", cfg->vms[i].name);
        }
}

/* [gpu] unload_driver: which modules the hand-over would unload, and why the others stay. */
static void check_modules(struct report *r, const struct config *cfg, const struct host *h) {
        struct plan p = {};

        plan_modules(cfg, h, &p);
        for (size_t i = 0; i < p.n_steps; i++) {
                const struct step *s = &p.steps[i];

                if (s->state == STEP_SKIPPED)
                        say(r, WARN, NULL, "[gpu] unload_driver: module %s stays loaded: %s", s->target, s->note);
                else
                        say(r, OK, NULL, "[gpu] unload_driver: module %s is unloaded after the move (now: %s)",
                            s->target, s->note);
        }
        if (cfg->unload_driver && !p.n_steps)
                say(r, INFO, NULL, "[gpu] unload_driver: no module to unload (the GPU is on vfio-pci or no driver)");
        plan_free(&p);
}

static void check_gpu(struct report *r, const struct config *cfg, const struct host *h) {
        bool display = false, grouped = h->n_gpu > 0;

        for (size_t i = 0; i < h->n_gpu; i++) {
                const struct pci_func *f = &h->gpu[i];
                char group_text[32] = "no IOMMU group";

                if (f->iommu_group >= 0)
                        snprintf(group_text, sizeof(group_text), "IOMMU group %d", f->iommu_group);
                grouped = grouped && f->iommu_group >= 0;
                say(r, f->iommu_group < 0 ? FAIL : OK, f->iommu_group < 0 ? "turn the IOMMU on (see kernel above)" : NULL,
                    "%s [%04x:%04x] class %06x: driver %s, driver_override %s, %s%s", f->name, f->vendor, f->device,
                    f->class, f->driver[0] ? f->driver : "(none)", f->driver_override[0] ? f->driver_override :
                    "(none)", group_text, f->boot_vga ? ", boot VGA (the firmware's console is on it)" : "");
                display = display || plan_is_display(f);
                if (plan_is_display(f)) {
                        reset_method(r, f);
                        bar_sizes(r, f);
                }
        }
        pci_keys(r, cfg, h);
        check_modules(r, cfg, h);
        if (h->n_gpu && !display)
                say(r, FAIL, "set [gpu] address (VIRSH_GPU_VIDEO) to the GPU's address (lspci -D)",
                    "%s is not a GPU: no function of its slot is a display controller", h->gpu[0].name);
        for (size_t i = 0; i < h->n_group; i++) {
                const struct pci_func *f = &h->group[i];

                if (plan_group_blocks(f))
                        say(r, FAIL, "bind it to vfio-pci too (add its address to [gpu] if it belongs to the card), "
                            "or move the GPU to a slot whose IOMMU group it has alone",
                            "IOMMU group %d also holds %s [%04x:%04x] on %s: the whole group must go to the VM",
                            f->iommu_group, f->name, f->vendor, f->device, f->driver[0] ? f->driver : "no driver");
                else
                        say(r, OK, NULL, "IOMMU group %d also holds %s (%s): no obstacle", f->iommu_group, f->name,
                            strcmp(f->driver, PLAN_VFIO) == 0 ? "on vfio-pci" : "a PCI bridge");
        }
        if (h->n_group == 0 && grouped)
                say(r, OK, NULL, "the GPU's IOMMU group holds its functions alone (viable)");
}

static void check_consoles(struct report *r, const struct config *cfg, const struct host *h) {
        char name[NAME_LEN];
        bool bound;

        group(r, "framebuffer and consoles");
        for (size_t i = 0; i < h->n_fbs; i++) {
                const struct boot_fb *fb = &h->fbs[i];
                bool on_gpu = false;

                for (size_t j = 0; j < h->n_gpu; j++)
                        on_gpu = on_gpu || strcmp(h->gpu[j].name, fb->parent) == 0;
                say(r, OK, NULL, "boot framebuffer %s (%s) on %s%s", fb->name, fb->driver[0] ? fb->driver : "unbound",
                    fb->parent[0] ? fb->parent : "an unknown device", !on_gpu ? "" : cfg->framebuffer ?
                    ": on the GPU, the hand-over unbinds it" : ": on the GPU, and [host] framebuffer = no");
        }
        if (h->n_fbs == 0)
                say(r, OK, NULL, "no boot framebuffer (efifb, simplefb): removed already by a DRM driver, or none");
        if (host_find_fbcon(name, sizeof(name), &bound) > 0)
                say(r, OK, NULL, "fbcon is %s, %s%s", name, bound ? "bound" : "unbound", !cfg->vtconsoles ? "" :
                    bound ? ": the hand-over unbinds it and binds it back" : "");
        else
                say(r, OK, NULL, "no frame-buffer console (fbcon) now");
}

static void check_secondary(struct report *r, const struct config *cfg, struct host *h) {
        bool display = false;
        int k;

        group(r, "secondary GPU");
        if (h->n_secondary == 0) {
                say(r, WARN, "set [secondary] address (VIRSH_SECONDARY_GPU_VIDEO) to a second GPU's",
                    "none configured: while a VM has the GPU, the host has no display");
                return;
        }
        for (size_t i = 0; i < h->n_secondary; i++) {
                const struct pci_func *f = &h->secondary[i];
                say(r, OK, NULL, "%s [%04x:%04x] class %06x: driver %s, driver_override %s", f->name, f->vendor,
                    f->device, f->class, f->driver[0] ? f->driver : "(none)",
                    f->driver_override[0] ? f->driver_override : "(none)");
                display = display || plan_is_display(f);
        }
        k = host_pci_driver_available(cfg->park_driver);
        say(r, k < 0 ? FAIL : OK, k < 0 ? "install its module, or set [secondary] park_driver" : NULL,
            "parking driver %s: %s", cfg->park_driver, k > 0 ? "registered" : k == 0 ? "loadable" : "neither registered nor loadable");
        if (!display)
                return;
        if (!h->secondary_driver[0]) {
                say(r, FAIL, "set driver in the [secondary] section of the config",
                    "no display driver known for %s (no module alias matches it)", h->secondary[0].name);
                return;
        }
        k = host_pci_driver_available(h->secondary_driver);
        say(r, k < 0 ? FAIL : OK, k < 0 ? "install its module, or fix [secondary] driver" : NULL,
            "display driver %s%s: %s", h->secondary_driver, cfg->secondary_driver ? " (config)" : " (module aliases)",
            k > 0 ? "registered" : k == 0 ? "loadable" : "neither registered nor loadable");
}

/* Who holds the GPU's nodes now: PID, command, unit. */
static void check_holders(struct report *r, const struct host *h) {
        for (size_t i = 0; i < h->n_gpu; i++) {
                struct func_node nodes[64];
                char holders[1024] = "";
                int n = host_func_nodes(h->gpu[i].name, nodes, ELEMENTSOF(nodes));
                unsigned hidden = 0;

                if (n > 0 && host_node_holders(nodes, (size_t) n, holders, sizeof(holders), &hidden) > 0)
                        say(r, INFO, NULL, "%s is held now by %s: the hand-over stops the display manager and the "
                            "user's units first, and waits up to [host] timeout for the rest", h->gpu[i].name, holders);
                else if (n > 0)
                        say(r, OK, NULL, "%s: nobody holds its nodes now", h->gpu[i].name);
                if (n > 0 && hidden)
                        say(r, WARN, "run --check as root", "%s: the open files of %u processes of other users "
                            "cannot be read: they may hold it too", h->gpu[i].name, hidden);
        }
}

/* A command's program: there and executable (by the user, who runs it; checked as root here). */
static void check_command(struct report *r, const char *key, const char *command) {
        char program[CONFIG_COMMAND_MAX_LEN + 1];

        strscpy(program, command, sizeof(program));
        program[strcspn(program, " \t")] = '\0';
        if (access(program, X_OK) < 0)
                say(r, FAIL, "install it, or fix the path in the config", "[desktop] %s = %s: %s: %s", key, command,
                    program, strerror(errno));
        else
                say(r, OK, NULL, "[desktop] %s = %s: %s is there", key, command, program);
}

/* Issue 12: the sleep inhibitor, the user's commands and the VMs' user units, as they are now. */
static void check_bus_keys(struct report *r, struct run_ctx *c, const struct desktop_state *d) {
        const struct config *cfg = c->cfg;
        char unit[STEP_FIELD_LEN];
        sd_bus *bus;

        if (cfg->inhibit_sleep) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
                bool active = false;

                plan_inhibit_unit(c->vm && c->vm[0] ? c->vm : "VM", unit, sizeof(unit));
                if (access("/usr/bin/systemd-inhibit", X_OK) < 0)
                        say(r, FAIL, "install systemd's systemd-inhibit, or set [host] inhibit_sleep = no",
                            "sleep inhibitor: /usr/bin/systemd-inhibit: %s", strerror(errno));
                else if (d->inhibit_skip)
                        say(r, INFO, NULL, "sleep inhibitor: skipped: %s", d->inhibit_skip);
                else if (bus_system(c, &bus) >= 0 && bus_unit_state(bus, unit, NULL, 0, &active, &error) >= 0)
                        say(r, OK, NULL, "sleep inhibitor: systemd-inhibit in %s, %s now", unit,
                            active ? "running (a VM has the GPU)" : "not running");
                else
                        say(r, OK, NULL, "sleep inhibitor: systemd-inhibit in %s, not running now", unit);
        }
        for (size_t i = 0; cfg->before_stop[i]; i++)
                check_command(r, "before_stop", cfg->before_stop[i]);
        for (size_t i = 0; cfg->after_start[i]; i++)
                check_command(r, "after_start", cfg->after_start[i]);
        for (size_t k = 0; k < cfg->n_vms; k++) {
                const struct vm_config *v = &cfg->vms[k];

                for (size_t i = 0; v->user_units[i]; i++) {
                        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
                        bool active = false;
                        int q;

                        if (d->user_units_skip || bus_user(c, &bus) < 0) {
                                say(r, INFO, NULL, "[vm %s] user_units: %s: not checked (%s)", v->name, v->user_units[i],
                                    d->user_units_skip ? d->user_units_skip : "no user bus");
                                continue;
                        }
                        q = bus_unit_state(bus, v->user_units[i], NULL, 0, &active, &error);
                        if (q == -ENOENT)
                                say(r, FAIL, "install the unit for the user, or fix its name", "[vm %s] user_units: "
                                    "%s of user %s: no such unit", v->name, v->user_units[i], cfg->user);
                        else if (q < 0)
                                say(r, WARN, NULL, "[vm %s] user_units: %s: %s", v->name, v->user_units[i],
                                    bus_error_text(&error, q));
                        else
                                say(r, OK, NULL, "[vm %s] user_units: %s of user %s: %s now", v->name,
                                    v->user_units[i], cfg->user, active ? "active" : "inactive");
                }
        }
}

/* Returns whether the desktop's state could be read (for the planner). */
static bool check_desktop(struct report *r, struct run_ctx *c, const struct host *h, struct desktop_state *d) {
        const struct config *cfg = c->cfg;

        group(r, "desktop");
        if (bus_desktop_state(c, h, d) < 0) {
                /* As a user, what the system's manager or the user's bus refuse to say is a limit
                 * of this run, not of the machine. */
                said(r, geteuid() == 0 ? FAIL : WARN, geteuid() == 0 ? "a unit named in [desktop] that does not "
                     "exist: fix its name or install it; a bus that does not answer: is systemd running?" :
                     "run --check as root");
                return false;
        }
        said(r, WARN, NULL);
        if (d->display_manager_skip)
                say(r, INFO, NULL, "display manager: %s", d->display_manager_skip);
        else
                say(r, OK, NULL, "display manager %s, %s", d->display_manager, d->display_manager_active ? "active" : "inactive");
        for (size_t i = 0; cfg->user && cfg->user_units[i]; i++)
                if (!d->user_units_skip)
                        say(r, OK, NULL, "%s's %s: %s", cfg->user, cfg->user_units[i],
                            d->user_unit_active[i] ? "active" : "inactive");
        if (cfg->user && d->user_units_skip)
                say(r, geteuid() == 0 ? INFO : WARN, geteuid() == 0 ? NULL : "run --check as root to see them",
                    "%s's units: %s", cfg->user, d->user_units_skip);
        for (size_t i = 0; i < d->n_driver_units; i++)
                say(r, OK, NULL, "%s (of the GPU's driver): %s%s", d->driver_units[i],
                    d->driver_unit_active[i] ? "active" : "inactive",
                    d->driver_unit_active[i] ? ": stopped while the VM has the GPU, started after the hand-back" : "");
        check_bus_keys(r, c, d);
        return true;
}

/* The file the hook path leads to is ours: the front end compiled for this qemu-hook-act, or the
 * binary that started this run (argv[0]), or a copy of either. */
static bool same_file(const char *a, const char *b) {
        struct stat sa, sb;
        _cleanup_fclose_ FILE *fa = NULL, *fb = NULL;
        int ca, cb;

        if (stat(a, &sa) < 0 || stat(b, &sb) < 0 || !S_ISREG(sa.st_mode) || sa.st_size != sb.st_size)
                return false;
        if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
                return true;
        fa = fopen(a, "re");
        fb = fopen(b, "re");
        if (!fa || !fb)
                return false;
        do {
                ca = getc(fa);
                cb = getc(fb);
        } while (ca == cb && ca != EOF);
        return ca == cb;
}

/* When process pid started, in microseconds since the epoch, or 0: its start in clock ticks since
 * boot (/proc/PID/stat), put on the wall clock by where boot is on it now. */
static usec_t started_at(const char *pid) {
        char path[300], buf[1024], *p;
        unsigned long long ticks;
        struct timespec real, boot;
        _cleanup_fclose_ FILE *f = NULL;

        snprintf(path, sizeof(path), "/proc/%s/stat", pid);
        f = fopen(path, "re");
        /* The 22nd field, after the command in parentheses (which may hold spaces). */
        if (!f || !fgets(buf, sizeof(buf), f) || !(p = strrchr(buf, ')')) ||
            sscanf(p + 2, "%*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu",
                   &ticks) != 1 || clock_gettime(CLOCK_REALTIME, &real) < 0 || clock_gettime(CLOCK_BOOTTIME, &boot) < 0)
                return 0;
        usec_t boot_at = (usec_t) (real.tv_sec - boot.tv_sec) * USEC_PER_SEC + (real.tv_nsec - boot.tv_nsec) / 1000;
        return boot_at + ticks * USEC_PER_SEC / (unsigned long long) sysconf(_SC_CLK_TCK);
}

struct daemon {
        char pid[16], comm[32], label[256];
        usec_t since;
};

/* libvirt's daemons running now in our mount namespace (where they see the hook we check): the
 * monolithic libvirtd, or the modular virtqemud. */
static size_t find_daemons(struct daemon *out, size_t max) {
        _cleanup_(closedirp) DIR *d = opendir("/proc");
        struct dirent *de;
        size_t n = 0;

        char self_ns[64] = "";

        if (readlink("/proc/self/ns/mnt", self_ns, sizeof(self_ns) - 1) < 0)
                self_ns[0] = '\0';
        while (d && n < max && (de = readdir(d))) {
                char path[300], comm[32] = "", ns[64] = "";
                _cleanup_fclose_ FILE *f = NULL;

                if (!strchr("123456789", de->d_name[0]))
                        continue;
                /* One in another mount namespace (a container's) has hooks of its own, elsewhere;
                 * as a user, others' namespaces cannot be read: then it counts. */
                snprintf(path, sizeof(path), "/proc/%s/ns/mnt", de->d_name);
                if (readlink(path, ns, sizeof(ns) - 1) > 0 && self_ns[0] && strcmp(ns, self_ns) != 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
                f = fopen(path, "re");
                if (!f || !fgets(comm, sizeof(comm), f))
                        continue;
                comm[strcspn(comm, "\n")] = '\0';
                if (strcmp(comm, "libvirtd") != 0 && strcmp(comm, "virtqemud") != 0)
                        continue;
                struct daemon *dm = &out[n++];
                *dm = (struct daemon) { .since = started_at(de->d_name) };
                strscpy(dm->pid, de->d_name, sizeof(dm->pid));
                strscpy(dm->comm, comm, sizeof(dm->comm));
                /* Its confinement: SELinux's context or AppArmor's profile. */
                snprintf(path, sizeof(path), "/proc/%s/attr/current", de->d_name);
                _cleanup_fclose_ FILE *a = fopen(path, "re");
                if (!a || !fgets(dm->label, sizeof(dm->label), a))
                        strscpy(dm->label, "", sizeof(dm->label));
                dm->label[strcspn(dm->label, "\n")] = '\0';
        }
        return n;
}

static void wall_time(usec_t t, char *buf, size_t size) {
        time_t s = (time_t) (t / USEC_PER_SEC);
        struct tm tm;

        if (!localtime_r(&s, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
                strscpy(buf, "?", size);
        else
                snprintf(buf + strlen(buf), size - strlen(buf), ".%02u", (unsigned) (t % USEC_PER_SEC / 10000));
}

static void check_install(struct report *r, const char *hooks_dir, const char *self, struct daemon *dms, size_t n_dms) {
        char hook[PATH_MAX], target[PATH_MAX] = "", when[64];
        struct stat st;

        group(r, "installation");
        snprintf(hook, sizeof(hook), "%s/qemu", hooks_dir);
        if (lstat(hook, &st) < 0) {
                say(r, FAIL, "ln -s " QEMU_HOOK_FRONT " /etc/libvirt/hooks/qemu, then restart libvirtd (or virtqemud)",
                    "no hook %s: libvirt runs nothing (%s)", hook, strerror(errno));
                return;
        }
        if (S_ISLNK(st.st_mode) && readlink(hook, target, sizeof(target) - 1) < 0)
                target[0] = '\0';
        char head[3] = "";
        _cleanup_fclose_ FILE *f = fopen(hook, "re");
        if (f && !fgets(head, sizeof(head), f))
                head[0] = '\0';
        if (same_file(hook, QEMU_HOOK_FRONT) || (strchr(self, '/') && same_file(hook, self)))
                say(r, OK, NULL, "%s%s%s is qemu-hook", hook, target[0] ? " -> " : "", target);
        else if (access(hook, F_OK) < 0)
                say(r, FAIL, "ln -sf " QEMU_HOOK_FRONT " /etc/libvirt/hooks/qemu", "%s -> %s: a link to nothing", hook, target);
        else
                say(r, FAIL, "move it aside (qemu-hook runs the scripts of qemu.d, as the origin's dispatcher did) "
                    "and ln -s " QEMU_HOOK_FRONT " in its place",
                    "%s%s%s is %s, not qemu-hook", hook, target[0] ? " -> " : "", target,
                    strcmp(head, "#!") == 0 ? "a script (the original hook dispatcher?)" : "another program");
        if (access(hook, X_OK) < 0 && errno == EACCES)
                say(r, FAIL, "chmod 0755 it", "%s is not executable: libvirt ignores it", hook);
        /* libvirt looks for its hooks when the daemon starts, and again on a reload (SIGHUP), which
         * leaves no trace to read: a daemon older than the hook is told to restart. */
        usec_t installed = (usec_t) st.st_ctim.tv_sec * USEC_PER_SEC + (usec_t) st.st_ctim.tv_nsec / 1000;
        wall_time(installed, when, sizeof(when));
        for (size_t i = 0; i < n_dms; i++) {
                char since[64] = "an unknown time", fix[64];

                if (dms[i].since)
                        wall_time(dms[i].since, since, sizeof(since));
                snprintf(fix, sizeof(fix), "systemctl restart %s", dms[i].comm);
                if (dms[i].since && dms[i].since < installed)
                        say(r, FAIL, fix, "%s (PID %s) runs since %s, before %s was installed (%s): it looks for its "
                            "hooks when it starts or reloads (SIGHUP), so it has not seen it unless reloaded since, "
                            "which --check cannot tell: restart it", dms[i].comm, dms[i].pid, since, hook, when);
                else
                        say(r, OK, NULL, "%s (PID %s) runs since %s, after %s was installed (%s)", dms[i].comm,
                            dms[i].pid, since, hook, when);
        }
        if (n_dms == 0)
                say(r, WARN, "systemctl enable --now libvirtd (or virtqemud)",
                    "neither libvirtd nor virtqemud runs (or, as a user, cannot be seen): it finds the hook when it starts");
}

/* The type of an SELinux context, "user:role:TYPE:level". */
static const char *context_type(const char *context, char *buf, size_t size) {
        const char *t = strchr(context, ':');

        t = t ? strchr(t + 1, ':') : NULL;
        if (!t)
                return "";
        snprintf(buf, size, "%.*s", (int) strcspn(t + 1, ":"), t + 1);
        return buf;
}

static void file_context(struct report *r, const char *path) {
        char context[256] = "", type[128], fix[PATH_MAX + 32];
        ssize_t n = getxattr(path, "security.selinux", context, sizeof(context) - 1);

        if (n < 0 && errno == ENOENT)
                return;
        if (n < 0) {
                say(r, WARN, NULL, "%s: no SELinux label readable (%s)", path, strerror(errno));
                return;
        }
        context[n] = '\0';
        context_type(context, type, sizeof(type));
        /* What a file keeps when it is moved (not copied) from a home or /tmp, or never labelled:
         * libvirtd may not run it. */
        bool stray = strcmp(type, "user_home_t") == 0 || strcmp(type, "admin_home_t") == 0 ||
                     strcmp(type, "user_tmp_t") == 0 || strcmp(type, "tmp_t") == 0 ||
                     strcmp(type, "unlabeled_t") == 0;
        snprintf(fix, sizeof(fix), "restorecon -v %s", path);
        say(r, stray ? WARN : OK, stray ? fix : NULL, "%s: %s%s", path, context,
            stray ? ": a label from where it was built, not the system's" : "");
}

static void check_selinux(struct report *r, const char *hook, const char *front) {
        char enforce[8], boolean[16];
        const char *fix = "setsebool -P virt_hooks_unconfined 1";

        if (sysfs_read("fs/selinux/enforce", enforce, sizeof(enforce)) < 0) {
                say(r, OK, NULL, "SELinux: not enabled");
                return;
        }
        bool enforcing = strcmp(enforce, "1") == 0;
        int k = sysfs_read("fs/selinux/booleans/virt_hooks_unconfined", boolean, sizeof(boolean));
        /* "CURRENT PENDING", each 0 or 1. */
        bool unconfined = k == 0 && boolean[0] == '1';
        if (k < 0)
                say(r, enforcing ? WARN : INFO, NULL, "SELinux %s; its policy has no boolean virt_hooks_unconfined "
                    "(%s): libvirtd's hooks run in libvirtd's own domain", enforcing ? "enforcing" : "permissive",
                    strerror(-k));
        else if (unconfined)
                say(r, OK, NULL, "SELinux %s, virt_hooks_unconfined on: the hook runs unconfined",
                    enforcing ? "enforcing" : "permissive");
        else
                say(r, enforcing ? FAIL : WARN, fix, "SELinux %s and virt_hooks_unconfined off: %s", enforcing ?
                    "enforcing" : "permissive", enforcing ? "the hook runs confined and is denied its sysfs writes "
                    "and D-Bus calls" : "its denials are logged now, and enforced once SELinux enforces");
        file_context(r, hook);
        file_context(r, front);
        file_context(r, QEMU_HOOK_ACT);
}

/* AppArmor: the daemons' profiles from their own attr (what the kernel enforces on them). The
 * hooks run under libvirtd's profile (it runs them with ix). */
static void check_apparmor(struct report *r, const struct daemon *dms, size_t n_dms) {
        char enabled[8];

        if (sysfs_read("module/apparmor/parameters/enabled", enabled, sizeof(enabled)) < 0 ||
            strcmp(enabled, "Y") != 0) {
                say(r, OK, NULL, "AppArmor: not enabled");
                return;
        }
        for (size_t i = 0; i < n_dms; i++) {
                const char *l = dms[i].label;
                if (!l[0] || strchr(l, ':'))    /* SELinux's context, or none readable */
                        say(r, INFO, NULL, "AppArmor on; the profile of %s (PID %s) cannot be read", dms[i].comm, dms[i].pid);
                else if (strcmp(l, "unconfined") == 0)
                        say(r, OK, NULL, "AppArmor on; %s runs unconfined, and so does its hook", dms[i].comm);
                else {
                        char fix[512];
                        snprintf(fix, sizeof(fix), "if the hook is denied (journalctl -k | grep 'apparmor=\"DENIED\"'), "
                                 "allow it in /etc/apparmor.d/local/usr.sbin.%s, or aa-complain /usr/sbin/%s",
                                 dms[i].comm, dms[i].comm);
                        say(r, strstr(l, "(enforce)") ? WARN : INFO, fix, "AppArmor confines %s (PID %s) with %s: its "
                            "hook runs under that profile too", dms[i].comm, dms[i].pid, l);
                }
        }
        if (n_dms == 0)
                say(r, INFO, NULL, "AppArmor on; no libvirt daemon runs to read its profile from");
}

struct vm_check {
        struct report *r;
        const struct config *cfg;
        const char *asked;      /* the VM named on the command line, or NULL */
        size_t n;
};

static int check_domain(const char *name, const char *xml, size_t len, void *data) {
        struct vm_check *v = data;
        _cleanup_free_ struct domain_hostdev *devs = NULL;
        _cleanup_free_ char *error = NULL;
        const struct vm_config *vc = config_vm(v->cfg, name);
        char passed[512] = "", one[PCI_ADDR_LEN];
        size_t n, n_gpu = 0;

        v->n++;
        if (domain_pci_hostdevs(xml, len, &devs, &n, &error) < 0) {
                say(v->r, v->asked ? FAIL : WARN, NULL, "%s: its XML from libvirt: %s", name, error);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                if (config_is_gpu(v->cfg, &devs[i].addr)) {
                        n_gpu++;
                        snprintf(passed + strlen(passed), sizeof(passed) - strlen(passed), "%s%s (%s)", n_gpu > 1 ?
                                 ", " : "", pci_addr_format(&devs[i].addr, one), devs[i].managed ? "managed" : "not managed");
                }
        if (vc && vc->handle == 0)
                say(v->r, OK, NULL, "%s: never handed over ([vm %s] handle = no)", name, name);
        else if (n_gpu)
                say(v->r, OK, NULL, "%s passes the GPU: %s; its start hands the GPU over, the other functions of the "
                    "slot go to vfio-pci too", name, passed);
        else if (vc && vc->handle == 1)
                say(v->r, OK, NULL, "%s: handed over at each start ([vm %s] handle = yes), though it passes no GPU "
                    "function", name, name);
        else
                say(v->r, v->asked ? WARN : OK, v->asked ? "add the GPU's functions as <hostdev> (virsh edit), or "
                    "[vm NAME] handle = yes" : NULL, "%s does not pass the GPU: its start hands nothing over", name);
        return 0;
}

/* kB of a /proc/meminfo line ("MemAvailable"), 0 when unknown. */
static unsigned long meminfo_kb(const char *key) {
        _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        size_t n = strlen(key);
        unsigned long kb = 0;

        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, key, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%lu", &kb) == 1)
                        break;
        return kb;
}

static void check_hugepages(struct report *r, const struct vm_config *v, const struct host *t) {
        unsigned long kb = t->huge.page_kb, asked = t->huge.asked_kb;

        if (!kb) {
                say(r, FAIL, "set hugepage_size = 2M, or boot a CPU and kernel with 1G pages (pdpe1gb)",
                    "[vm %s] hugepages = %lu MiB: the kernel has no %lu kB huge pages (no /sys/kernel/mm/hugepages/"
                    "hugepages-%lukB)", v->name, v->hugepages_kb / 1024, asked, asked);
                return;
        }
        /* Reserved pages (resv_hugepages) are counted in free_hugepages but promised already. */
        long want, missing = plan_hugepages_missing(v, &t->huge, &want);
        unsigned long more_kb = missing > 0 ? (unsigned long) missing * kb : 0, total = meminfo_kb("MemTotal"),
                      avail = meminfo_kb("MemAvailable");
        enum level l = total && more_kb > total ? FAIL : avail && more_kb > avail ? WARN : OK;

        say(r, l, l == FAIL ? "lower [vm] hugepages: this machine does not have that much memory" :
            l == WARN ? "free memory before the VM starts, or reserve the pages at boot (hugepages= on the "
            "kernel command line)" : NULL,
            "[vm %s] hugepages = %lu MiB as %lu kB pages (%ld): now nr_hugepages %ld (surplus %ld), "
            "free_hugepages %ld (reserved %ld); %s (MemAvailable %lu MiB)", v->name, v->hugepages_kb / 1024, kb,
            want, t->huge.nr, t->huge.surplus, t->huge.free, t->huge.resv,
            missing > 0 ? "more to allocate at the hand-over" : "free already", avail / 1024);
        if (missing > 0)
                say(r, INFO, NULL, "[vm %s] %ld more pages (%lu MiB) at the hand-over, after compacting memory",
                    v->name, missing, more_kb / 1024);
}

static void check_governor(struct report *r, const struct vm_config *v, const struct host *t) {
        size_t scaled = 0, offline = 0, refused = 0;
        char now[256] = "";

        for (size_t i = 0; i < t->n_cpus; i++) {
                const struct cpu_freq *cpu = &t->cpus[i];

                offline += !cpu->online;
                if (!cpu->online || !cpu->cpufreq)
                        continue;
                scaled++;
                if (!host_word_in(cpu->available, v->cpu_governor) && refused++ == 0)
                        say(r, FAIL, "choose one the CPUs offer, or load its module (cpufreq_NAME)",
                            "[vm %s] cpu_governor = %s: CPU %u offers only %s", v->name, v->cpu_governor, cpu->cpu,
                            cpu->available);
                if (!host_word_in(now, cpu->governor))
                        snprintf(now + strlen(now), sizeof(now) - strlen(now), "%s%s", now[0] ? " " : "",
                                 cpu->governor);
        }
        if (scaled == 0)
                say(r, WARN, NULL, "[vm %s] cpu_governor = %s: no cpufreq on any of the %zu CPUs (the kernel scales "
                    "no frequency here): nothing to set", v->name, v->cpu_governor, t->n_cpus);
        else if (!refused)
                say(r, OK, NULL, "[vm %s] cpu_governor = %s: offered by the %zu CPUs with cpufreq (now %s)%s", v->name,
                    v->cpu_governor, scaled, now, offline ? "; offline CPUs are left alone" : "");
        if (scaled && scaled + offline < t->n_cpus)
                say(r, INFO, NULL, "[vm %s] %zu CPUs have no cpufreq: left alone", v->name,
                    t->n_cpus - scaled - offline);
}

/* What the [vm] sections ask of the host, against what it has now. */
static void check_vm_tuning(struct report *r, const struct config *cfg, const char *vm) {
        bool any = false;

        for (size_t i = 0; i < cfg->n_vms; i++) {
                const struct vm_config *v = &cfg->vms[i];
                struct host t = {};

                if ((!v->hugepages_kb && !v->cpu_governor) || (vm && strcmp(vm, v->name) != 0))
                        continue;
                if (!any)
                        group(r, "huge pages and CPU governor");
                any = true;
                if (host_tuning(cfg, v->name, &t) < 0)
                        said(r, FAIL, "see the message");
                else {
                        if (v->hugepages_kb)
                                check_hugepages(r, v, &t);
                        if (v->cpu_governor)
                                check_governor(r, v, &t);
                }
                host_free(&t);
        }
}

static void check_vms(struct report *r, const struct config *cfg, const char *vm) {
        struct vm_check v = { .r = r, .cfg = cfg, .asked = vm };

        group(r, "VMs (libvirt)");
        if (virt_foreach_domain(vm, check_domain, &v) < 0)
                said(r, vm ? FAIL : WARN, vm ? "check the VM's name (virsh list --all), and that libvirtd or "
                     "virtqemud runs" : "have libvirtd or virtqemud running to have the VMs checked");
        else if (v.n == 0)
                say(r, INFO, NULL, "libvirt knows no VM");
        captured.n = 0;
}

static int print_journal(struct plan *p, const char *path, void *data) {
        struct report *r = data;
        char left[1024];

        plan_left(p, left, sizeof(left));
        say(r, INFO, "qemu-hook --status shows it", "%s: %s (journal %s)%s%s", p->vm, plan_complete(p) ? "the GPU is "
            "handed over" : plan_handed_back(p) ? "hand-back incomplete" : "hand-over incomplete", path,
            left[0] ? "; left to undo: " : "", left);
        return 0;
}

/* The planner's verdict on the host as it is: what `prepare begin` would do now, or why it would
 * refuse. */
static void check_plan(struct report *r, const struct config *cfg, const char *vm, const struct host *h,
                       const struct desktop_state *d) {
        struct plan p = {};
        char error[512];
        size_t skipped = 0;

        if (plan_hand_over(cfg, vm ? vm : "VM", h, d, &p, error, sizeof(error)) < 0) {
                say(r, FAIL, "see the findings above", "a hand-over now would be refused: %s", error);
                return;
        }
        for (size_t i = 0; i < p.n_steps; i++)
                skipped += p.steps[i].state == STEP_SKIPPED;
        say(r, OK, "qemu-hook --dry-run VM prepare begin lists them", "a hand-over now: %zu steps (%zu of them "
            "skipped: in place already or not needed)", p.n_steps, skipped);
        plan_free(&p);
}

int check_run(struct run_ctx *c, const struct check_args *a, FILE *f) {
        struct report r = { .f = f, .json = a->json };
        struct config cfg = {};
        struct host h = {};
        struct desktop_state d = {};
        struct daemon dms[8];
        char hook[PATH_MAX];
        bool loaded, have_host = false, have_desktop = false;
        struct passwd *pw = getpwuid(geteuid());

        log_setup(NULL, a->verbose ? LOG_DEBUG : -1, capture);
        if (r.json)
                fputs("{\"findings\":[", f);
        else
                fprintf(f, "qemu-hook --check%s%s, as %s%s\n\n", a->vm ? " " : "", a->vm ? a->vm : "",
                        pw ? pw->pw_name : "?", geteuid() == 0 ? "" : " (not root: other users' processes and "
                        "root's files may be hidden; said where it matters)");
        check_kernel(&r);
        loaded = check_config(&r, a->config, a->explicit_config, &cfg);
        c->cfg = loaded ? &cfg : NULL;
        if (loaded) {
                c->timeout = cfg.timeout_ms * USEC_PER_MSEC;
                group(&r, "gpu");
                have_host = host_snapshot(cfg.gpu, cfg.n_gpu, cfg.secondary, cfg.n_secondary, &h) == 0;
                if (have_host) {
                        host_resolve_secondary_driver(&h, cfg.secondary_driver);
                        have_host = !cfg.unload_driver || host_modules(&h) == 0;
                }
                said(&r, FAIL, "fix [gpu] address or [secondary] address: lspci -D lists the machine's functions");
                if (have_host) {
                        check_gpu(&r, &cfg, &h);
                        check_consoles(&r, &cfg, &h);
                        check_secondary(&r, &cfg, &h);
                        have_desktop = check_desktop(&r, c, &h, &d);
                        check_holders(&r, &h);
                        check_vm_tuning(&r, &cfg, a->vm);
                        /* The planner's verdict below then weighs them too. */
                        if (a->vm && host_tuning(&cfg, a->vm, &h) < 0)
                                captured.n = 0;
                }
        }
        size_t n_dms = find_daemons(dms, ELEMENTSOF(dms));
        check_install(&r, a->hooks_dir, a->self, dms, n_dms);
        group(&r, "access control");
        snprintf(hook, sizeof(hook), "%s/qemu", a->hooks_dir);
        /* The front end as installed, else the one that ran us. */
        check_selinux(&r, hook, access(QEMU_HOOK_FRONT, F_OK) == 0 || !strchr(a->self, '/') ? QEMU_HOOK_FRONT : a->self);
        check_apparmor(&r, dms, n_dms);
        if (loaded)
                check_vms(&r, &cfg, a->vm);
        group(&r, "hand-over");
        int k = journal_foreach(print_journal, &r);
        if (k < 0)
                say(&r, geteuid() == 0 ? FAIL : WARN, geteuid() == 0 ? NULL : "run --check as root",
                    "the journals in " JOURNAL_DIR " cannot be read (%s): whether a VM has the GPU now is unknown",
                    strerror(-k));
        captured.n = 0;
        if (have_host && have_desktop)
                check_plan(&r, &cfg, a->vm, &h, &d);
        else if (have_host && geteuid() != 0)
                say(&r, WARN, "run --check as root", "no hand-over planned: the desktop's state cannot be read as %s",
                    pw ? pw->pw_name : "this user");
        else
                say(&r, FAIL, "see the findings above", "no hand-over can be planned: %s", !loaded ? "no usable config" :
                    !have_host ? "the configured functions cannot be read" : "the desktop's state cannot be read");
        if (r.json)
                fprintf(f, "],\"ready\":%s,\"failures\":%zu,\"warnings\":%zu,\"root\":%s}\n",
                        r.n_fail ? "false" : "true", r.n_fail, r.n_warn, geteuid() == 0 ? "true" : "false");
        else
                fprintf(f, "\n%s (%zu problem%s, %zu warning%s)\n", r.n_fail ? "NOT READY: what is marked FAIL would "
                        "make a hand-over fail" : "ready: a hand-over would go through", r.n_fail,
                        r.n_fail == 1 ? "" : "s", r.n_warn, r.n_warn == 1 ? "" : "s");
        bus_close(c);
        host_free(&h);
        if (loaded)
                config_free(&cfg);
        return r.n_fail ? 1 : 0;
}
