#define _GNU_SOURCE 1    /* O_PATH */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "secure-path.h"

/* Names end up in fixed fields of the plan and the journal (host.h NAME_LEN, step.h
 * STEP_FIELD_LEN): refuse longer ones here, where the message can name the line. */
#define NAME_MAX_LEN 63
#define CPUS_MAX_LEN 127
#define USER_MAX_LEN 32         /* useradd's limit */
#define CPU_MAX 8192            /* the kernel's largest NR_CPUS */
#define TIMEOUT_MAX_MS 600000U
/* inih copies section names into a 50-byte buffer and silently cuts longer ones. */
#define SECTION_MAX_LEN 49

#define UNIT_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@"
#define DRIVER_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
#define USER_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."

enum section { SECTION_TOP, SECTION_GPU, SECTION_SECONDARY, SECTION_DESKTOP, SECTION_HOST, SECTION_VM };

static const char *const section_names[] = {
        [SECTION_GPU] = "gpu", [SECTION_SECONDARY] = "secondary", [SECTION_DESKTOP] = "desktop",
        [SECTION_HOST] = "host",
};

/* The original file's keys, synonyms mapped to one slot: bash sources the file, so when both
 * spellings are set the later assignment wins, as it did for the scripts. */
enum { ORIG_GPU_VIDEO, ORIG_GPU_AUDIO, ORIG_SECONDARY_VIDEO, ORIG_SECONDARY_AUDIO, ORIG_USER, ORIG_BUS };
static const struct {
        const char *name;
        int slot;
} original_keys[] = {
        { "VIRSH_GPU_VIDEO", ORIG_GPU_VIDEO },
        { "VIRSH_PRIMARY_GPU_VIDEO", ORIG_GPU_VIDEO },
        { "VIRSH_GPU_AUDIO", ORIG_GPU_AUDIO },
        { "VIRSH_PRIMARY_GPU_AUDIO", ORIG_GPU_AUDIO },
        { "VIRSH_SECONDARY_GPU_VIDEO", ORIG_SECONDARY_VIDEO },
        { "VIRSH_SECONDARY_GPU_AUDIO", ORIG_SECONDARY_AUDIO },
        { "VIRSH_USER", ORIG_USER },
        { "VIRSH_USER_DBUS_ADDR", ORIG_BUS },
};

/* The original scripts stopped pipewire and pipewire-pulse; their sockets must stop too, or the
 * first client that connects starts them again and they reopen the GPU's HDMI audio. */
static const char *const units_original[] = {
        "pipewire.socket", "pipewire.service", "pipewire-pulse.socket", "pipewire-pulse.service", NULL,
};
static const char *const units_native[] = {
        "pipewire.socket", "pipewire.service", "pipewire-pulse.socket", "pipewire-pulse.service",
        "wireplumber.service", NULL,
};
static const char *const unit_suffixes[] = {
        ".service", ".socket", ".target", ".timer", ".path", ".mount", ".automount", ".swap",
        ".slice", ".scope", ".device", NULL,
};

struct parser {
        struct config *config;
        FILE *file;
        char *buf;
        size_t size;
        unsigned line;          /* of the line inih is working on: it parses each line as it reads it */
        int read_errno;
        unsigned top_line;      /* first top-level key: the file is in the original format */
        unsigned section_line;  /* first [section]: the file is in the native format */
        unsigned err_line;      /* first error found by the reader or the handler, 0: none */
        char err[512];
        /* where each address came from, for messages about duplicates found later */
        unsigned gpu_line[CONFIG_MAX_ADDRS], secondary_line[CONFIG_MAX_ADDRS];
        const char *gpu_key[CONFIG_MAX_ADDRS], *secondary_key[CONFIG_MAX_ADDRS];
        /* the original format's addresses, turned into the lists once the whole file is read */
        struct pci_addr orig_addr[ORIG_SECONDARY_AUDIO + 1];
        unsigned orig_line[ORIG_SECONDARY_AUDIO + 1];
        const char *orig_key[ORIG_SECONDARY_AUDIO + 1];
        bool units_set;
};

#define NO_LINE UINT_MAX  /* for what is missing from the whole file */

/* Records the first error, at line (0: the current one); returns 0, which is what an inih
 * handler returns on error. */
__attribute__((format(printf, 3, 4)))
static int fail(struct parser *p, unsigned line, const char *fmt, ...) {
        va_list ap;
        int n;

        if (p->err_line)
                return 0;
        p->err_line = line ? line : p->line;
        if (p->err_line == NO_LINE)
                n = snprintf(p->err, sizeof(p->err), "%s: ", p->config->path);
        else
                n = snprintf(p->err, sizeof(p->err), "%s:%u: ", p->config->path, p->err_line);
        if (n < 0 || (size_t) n >= sizeof(p->err))
                n = 0;
        va_start(ap, fmt);
        vsnprintf(p->err + n, sizeof(p->err) - n, fmt, ap);
        va_end(ap);
        return 0;
}

static bool chars_only(const char *s, const char *allowed) {
        return s[strspn(s, allowed)] == '\0';
}

static bool has_suffix(const char *s, const char *suffix) {
        size_t n = strlen(s), m = strlen(suffix);
        return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool unit_name_valid(const char *s) {
        const char *dot = strrchr(s, '.');

        if (strlen(s) > NAME_MAX_LEN || !chars_only(s, UNIT_CHARS) || !dot || dot == s ||
            s[0] == '@' || dot[-1] == '@')      /* "foo@.service" is a template, not a unit */
                return false;
        for (size_t i = 0; unit_suffixes[i]; i++)
                if (strcmp(dot, unit_suffixes[i]) == 0)
                        return true;
        return false;
}

static bool user_name_valid(const char *s) {
        /* A leading digit would read as a UID, a leading '-' as an option. */
        return (isalpha((unsigned char) s[0]) || s[0] == '_') && strlen(s) <= USER_MAX_LEN &&
               chars_only(s, USER_CHARS);
}

/* "0-3,8,10-11", the syntax of systemd's AllowedCPUs=. */
static bool cpu_list_valid(const char *s) {
        if (strlen(s) > CPUS_MAX_LEN)
                return false;
        for (;;) {
                unsigned long first, last;
                char *end;

                if (!isdigit((unsigned char) *s))
                        return false;
                first = last = strtoul(s, &end, 10);
                if (*end == '-') {
                        if (!isdigit((unsigned char) end[1]))
                                return false;
                        last = strtoul(end + 1, &end, 10);
                }
                if (first > last || last >= CPU_MAX)
                        return false;
                if (*end == '\0')
                        return true;
                if (*end != ',')
                        return false;
                s = end + 1;
        }
}

static int parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "1", "yes", "true", "on" }, *const no[] = { "0", "no", "false", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return *ret = true, 0;
                if (strcasecmp(s, no[i]) == 0)
                        return *ret = false, 0;
        }
        return -EINVAL;
}

/* Milliseconds, or a number with the unit ms, s or min. */
static int parse_duration_ms(const char *s, unsigned *ret) {
        unsigned long long v, mult;
        char *end;

        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (*end == '\0' || strcmp(end, "ms") == 0)
                mult = 1;
        else if (strcmp(end, "s") == 0)
                mult = 1000;
        else if (strcmp(end, "min") == 0)
                mult = 60000;
        else
                return -EINVAL;
        if (errno == ERANGE || v == 0 || v > TIMEOUT_MAX_MS / mult)
                return -ERANGE;
        *ret = (unsigned) (v * mult);
        return 0;
}

/* The original file is what bash sources: strip one level of quotes, and a "# comment" after
 * the value ('#' starts a comment only at the start of a word, as in bash). inih itself only
 * knows " ;" inline comments. Writes into buf, which has room for a whole line. */
static const char *clean_value(struct parser *p, const char *key, const char *v, char *buf) {
        const char *end;

        if (*v == '"' || *v == '\'') {
                const char *rest;

                end = strchr(v + 1, *v);
                if (!end)
                        return fail(p, 0, "%s: %s: missing closing quote", key, v), NULL;
                rest = end + 1 + strspn(end + 1, " \t");
                if (*rest != '\0' && *rest != '#')
                        return fail(p, 0, "%s: %s: unexpected text after the closing quote", key, v), NULL;
                v++;
        } else {
                for (end = v; *end; end++)
                        if (*end == '#' && end > v && (end[-1] == ' ' || end[-1] == '\t'))
                                break;
                while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
        }
        memcpy(buf, v, end - v);
        buf[end - v] = '\0';
        return buf;
}

/* "gpu", "vm win10", "vm \"win 10\"" -> the section, and the VM name into vm. */
static int section_parse(const char *s, char vm[static SECTION_MAX_LEN + 1]) {
        size_t n;

        for (int i = SECTION_GPU; i <= SECTION_HOST; i++)
                if (strcmp(s, section_names[i]) == 0)
                        return i;
        if (strncmp(s, "vm", 2) != 0 || (s[2] != ' ' && s[2] != '\t'))
                return -EINVAL;
        s += 2 + strspn(s + 2, " \t");
        n = strlen(s);
        if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0])
                s++, n -= 2;
        if (n == 0 || n > SECTION_MAX_LEN)
                return -EINVAL;
        memcpy(vm, s, n);
        vm[n] = '\0';
        return SECTION_VM;
}

static struct vm_config *vm_get(struct config *c, const char *name) {
        struct vm_config *v = (struct vm_config *) config_vm(c, name);

        if (v)
                return v;
        c->vms = xreallocarray(c->vms, c->n_vms + 1, sizeof(*c->vms));
        v = &c->vms[c->n_vms++];
        *v = (struct vm_config) { .name = xstrdup(name), .handle = -1 };
        return v;
}

/* Adds a to a list of addresses (the GPU's or the secondary's), refusing duplicates. key is a
 * string literal: it is kept for later messages. */
static int addr_add(struct parser *p, bool secondary, const char *key, const struct pci_addr *a, unsigned line) {
        struct config *c = p->config;
        struct pci_addr *list = secondary ? c->secondary : c->gpu;
        unsigned *lines = secondary ? p->secondary_line : p->gpu_line;
        const char **keys = secondary ? p->secondary_key : p->gpu_key;
        size_t *n = secondary ? &c->n_secondary : &c->n_gpu;
        char buf[PCI_ADDR_LEN];

        for (size_t i = 0; i < *n; i++)
                if (pci_addr_equal(&list[i], a))
                        return fail(p, line, "%s: %s is listed twice (also on line %u)", key,
                                    pci_addr_format(a, buf), lines[i]);
        if (*n >= CONFIG_MAX_ADDRS)
                return fail(p, line, "%s: more than %d addresses", key, CONFIG_MAX_ADDRS);
        lines[*n] = line;
        keys[*n] = key;
        list[(*n)++] = *a;
        return 1;
}

static int set_string(char **field, const char *v) {
        free(*field);
        *field = *v ? xstrdup(v) : NULL;
        return 1;
}

/* Each parse_* gets the cleaned value and the field it sets; an empty value resets the field
 * (lists become empty, anything else takes its default). Returns 1, or 0 after fail(). */
typedef int (*parse_fn)(struct parser *p, const char *key, const char *v, void *field);

static int parse_addresses(struct parser *p, const char *key, const char *v, void *field) {
        bool secondary = field == p->config->secondary;
        char buf[INI_MAX_LINE], *save = NULL;

        if (!*v) {
                *(secondary ? &p->config->n_secondary : &p->config->n_gpu) = 0;
                return 1;
        }
        strscpy(buf, v, sizeof(buf));
        for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                struct pci_addr a;

                if (pci_addr_parse(w, &a) < 0)
                        return fail(p, 0, "%s: \"%s\" is not a PCI address (expected DDDD:BB:SS.F)", key, w);
                if (!addr_add(p, secondary, secondary ? "[secondary] address" : "[gpu] address", &a, p->line))
                        return 0;
        }
        return 1;
}

static int parse_driver(struct parser *p, const char *key, const char *v, void *field) {
        if (*v && (strlen(v) > NAME_MAX_LEN || !chars_only(v, DRIVER_CHARS)))
                return fail(p, 0, "%s: \"%s\" is not a driver name (expected a name like amdgpu or vfio-pci)", key, v);
        return set_string(field, v);
}

static int parse_user(struct parser *p, const char *key, const char *v, void *field) {
        if (*v && !user_name_valid(v))
                return fail(p, 0, "%s: \"%s\" is not a user name (expected a login name like liss)", key, v);
        return set_string(field, v);
}

static int parse_bus(struct parser *p, const char *key, const char *v, void *field) {
        /* The user's bus is a local socket reached with the user's credentials; any other
         * transport would hand root's D-Bus calls to something else. */
        if (*v && strncmp(v, "unix:", 5) != 0)
                return fail(p, 0, "%s: \"%s\" is not a local bus address "
                            "(expected unix:path=/run/user/UID/bus)", key, v);
        return set_string(field, v);
}

static int parse_display_manager(struct parser *p, const char *key, const char *v, void *field) {
        if (*v && strcmp(v, "auto") != 0 && strcmp(v, "none") != 0 &&
            !(unit_name_valid(v) && has_suffix(v, ".service")))
                return fail(p, 0, "%s: \"%s\" is not a display manager "
                            "(expected auto, none or a unit name like gdm.service)", key, v);
        return set_string(field, v);
}

static int parse_units(struct parser *p, const char *key, const char *v, void *field) {
        char **units = field, buf[INI_MAX_LINE], *save = NULL;
        size_t n = 0;

        /* The first assignment replaces the default list, later ones add to it. */
        if (p->units_set)
                while (units[n])
                        n++;
        p->units_set = true;
        if (!*v)
                n = 0;
        strscpy(buf, v, sizeof(buf));
        for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                if (!unit_name_valid(w))
                        return fail(p, 0, "%s: \"%s\" is not a unit name "
                                    "(expected names like pipewire.service or pipewire.socket)", key, w);
                for (size_t i = 0; i < n; i++)
                        if (strcmp(units[i], w) == 0)
                                return fail(p, 0, "%s: %s is listed twice", key, w);
                if (n >= CONFIG_MAX_UNITS)
                        return fail(p, 0, "%s: more than %d units", key, CONFIG_MAX_UNITS);
                free(units[n]);
                units[n++] = xstrdup(w);
        }
        for (size_t i = n; units[i]; i++) {
                free(units[i]);
                units[i] = NULL;
        }
        return 1;
}

/* [vm NAME] user_units: each assignment adds to the list, an empty one empties it. */
static int parse_vm_units(struct parser *p, const char *key, const char *v, void *field) {
        char **units = field, buf[INI_MAX_LINE], *save = NULL;
        size_t n = 0;

        while (units[n])
                n++;
        if (!*v)
                for (; n > 0; n--) {
                        free(units[n - 1]);
                        units[n - 1] = NULL;
                }
        strscpy(buf, v, sizeof(buf));
        for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                if (!unit_name_valid(w))
                        return fail(p, 0, "%s: \"%s\" is not a unit name "
                                    "(expected names like scream.service)", key, w);
                for (size_t i = 0; i < n; i++)
                        if (strcmp(units[i], w) == 0)
                                return fail(p, 0, "%s: %s is listed twice", key, w);
                if (n >= CONFIG_MAX_UNITS)
                        return fail(p, 0, "%s: more than %d units", key, CONFIG_MAX_UNITS);
                units[n++] = xstrdup(w);
        }
        return 1;
}

/* before_stop, after_start: one command per assignment, words split at blanks and run without a
 * shell, so quotes, backslashes and $ would not mean what they mean to one: refused. The first
 * word is an absolute path (systemd's ExecStart wants one, and PATH is not the user's here).
 * Each assignment adds a command, an empty one empties the list. */
static int parse_command(struct parser *p, const char *key, const char *v, void *field) {
        char **cmds = field;
        size_t n = 0;

        while (cmds[n])
                n++;
        if (!*v) {
                for (; n > 0; n--) {
                        free(cmds[n - 1]);
                        cmds[n - 1] = NULL;
                }
                return 1;
        }
        if (v[0] != '/')
                return fail(p, 0, "%s: \"%s\" does not start with an absolute path "
                            "(expected a command like /usr/bin/gnome-session-save --logout)", key, v);
        if (strpbrk(v, "\"'\\$`;|&<>"))
                return fail(p, 0, "%s: \"%s\": quotes, backslashes and shell characters are not supported "
                            "(the command runs without a shell, its words split at blanks)", key, v);
        if (strlen(v) > CONFIG_COMMAND_MAX_LEN)
                return fail(p, 0, "%s: command longer than %d characters", key, CONFIG_COMMAND_MAX_LEN);
        if (n >= CONFIG_MAX_COMMANDS)
                return fail(p, 0, "%s: more than %d commands", key, CONFIG_MAX_COMMANDS);
        cmds[n] = xstrdup(v);
        return 1;
}

static int parse_cpus(struct parser *p, const char *key, const char *v, void *field) {
        if (*v && !cpu_list_valid(v))
                return fail(p, 0, "%s: \"%s\" is not a CPU list "
                            "(expected CPU numbers and ranges like 0-3,8,10-11)", key, v);
        return set_string(field, v);
}

static int parse_timeout(struct parser *p, const char *key, const char *v, void *field) {
        int r = 0;

        /* 0 stands for the default: 20 s globally, the global value in a [vm] section. */
        *(unsigned *) field = 0;
        if (*v)
                r = parse_duration_ms(v, field);
        if (r == -ERANGE)
                return fail(p, 0, "%s: \"%s\" is out of range (expected 1ms to 10min)", key, v);
        if (r < 0)
                return fail(p, 0, "%s: \"%s\" is not a duration "
                            "(expected milliseconds, or a number followed by ms, s or min)", key, v);
        return 1;
}

/* An empty value stands for the key's default. */
static int parse_bool_default(struct parser *p, const char *key, const char *v, bool *field, bool def) {
        *field = def;
        if (*v && parse_bool(v, field) < 0)
                return fail(p, 0, "%s: \"%s\" is not a boolean (expected yes or no)", key, v);
        return 1;
}

/* vtconsoles, framebuffer, inhibit_sleep */
static int parse_bool_key(struct parser *p, const char *key, const char *v, void *field) {
        return parse_bool_default(p, key, v, field, true);
}

/* unload_driver */
static int parse_bool_no(struct parser *p, const char *key, const char *v, void *field) {
        return parse_bool_default(p, key, v, field, false);
}

static int parse_handle(struct parser *p, const char *key, const char *v, void *field) {
        bool b;

        if (!*v || strcmp(v, "auto") == 0)
                *(int *) field = -1;
        else if (parse_bool(v, &b) == 0)
                *(int *) field = b;
        else
                return fail(p, 0, "%s: \"%s\" is not auto, yes or no", key, v);
        return 1;
}

/* "64M", "8G", "512MiB": a size with its unit (K, M, G, T, each optionally followed by iB or B), in
 * kB; 0 is not a size. */
static int parse_size_kb(const char *s, unsigned long *ret) {
        unsigned long long v, shift;
        char *end;

        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        switch (*end) {
        case 'K': case 'k': shift = 0; break;
        case 'M': case 'm': shift = 10; break;
        case 'G': case 'g': shift = 20; break;
        case 'T': case 't': shift = 30; break;
        default: return -EINVAL;
        }
        end++;
        if (*end && strcmp(end, "iB") != 0 && strcmp(end, "B") != 0)
                return -EINVAL;
        /* Up to 64 TiB: far beyond any machine's memory, far below an overflow. */
        if (errno == ERANGE || v == 0 || v > (1ULL << 36 >> shift))
                return -ERANGE;
        *ret = (unsigned long) (v << shift);
        return 0;
}

static int parse_hugepages(struct parser *p, const char *key, const char *v, void *field) {
        int r = 0;

        *(unsigned long *) field = 0;
        if (*v)
                r = parse_size_kb(v, field);
        if (r < 0)
                return fail(p, 0, "%s: \"%s\" is not a size (expected a number with its unit, like 8G or 512M)",
                            key, v);
        return 1;
}

static int parse_hugepage_size(struct parser *p, const char *key, const char *v, void *field) {
        unsigned long kb = 0;

        /* The sizes x86-64 has; others (arm64's 64K, 32M) are for when someone needs them. */
        if (*v && (parse_size_kb(v, &kb) < 0 || (kb != 2048 && kb != 1048576)))
                return fail(p, 0, "%s: \"%s\" is not a huge page size (expected 2M or 1G)", key, v);
        *(unsigned long *) field = kb;
        return 1;
}

static int parse_governor(struct parser *p, const char *key, const char *v, void *field) {
        /* CPUFREQ_NAME_LEN is 16 with the NUL. */
        if (*v && (strlen(v) > 15 || !chars_only(v, "abcdefghijklmnopqrstuvwxyz0123456789_-")))
                return fail(p, 0, "%s: \"%s\" is not a governor name (expected a name like performance or "
                            "schedutil)", key, v);
        return set_string(field, v);
}

/* The kernel's reset method names (drivers/pci/pci.c, pci_reset_fn_methods[]), in its order. */
static const char *const reset_methods[] = { "device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus" };

static int parse_reset_method(struct parser *p, const char *key, const char *v, void *field) {
        char buf[INI_MAX_LINE], list[INI_MAX_LINE] = "", *save = NULL;

        if (strcmp(v, "auto") == 0 || !*v)
                return set_string(field, v);
        strscpy(buf, v, sizeof(buf));
        for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                size_t i, len = strlen(list);

                for (i = 0; i < ELEMENTSOF(reset_methods) && strcmp(w, reset_methods[i]) != 0; i++)
                        ;
                if (i == ELEMENTSOF(reset_methods))
                        return fail(p, 0, "%s: \"%s\" is not a reset method (expected auto, or one or more of "
                                    "device_specific, acpi, flr, af_flr, pm, bus, cxl_bus)", key, w);
                for (const char *at = list; (at = strstr(at, w)); at += strlen(w))
                        if ((at == list || at[-1] == ' ') && (at[strlen(w)] == ' ' || !at[strlen(w)]))
                                return fail(p, 0, "%s: %s is listed twice", key, w);
                snprintf(list + len, sizeof(list) - len, "%s%s", len ? " " : "", w);
        }
        return set_string(field, list);
}

/* "0:8G 2:256M": BAR index, a colon, a power of two from 1M with the unit M, G or T (binary; a
 * trailing B or iB is allowed). */
static int parse_bar_sizes(struct parser *p, const char *key, const char *v, void *field) {
        struct bar_sizes *b = field, sizes = {};
        char buf[INI_MAX_LINE], *save = NULL;

        strscpy(buf, v, sizeof(buf));
        for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                unsigned long index, size, shift;
                char *end;

                if (!isdigit((unsigned char) w[0]) || (index = strtoul(w, &end, 10), *end != ':') || index > 5 ||
                    !isdigit((unsigned char) end[1]))
                        return fail(p, 0, "%s: \"%s\" is not INDEX:SIZE (expected a BAR index 0-5, a colon and a "
                                    "size like 256M or 8G)", key, w);
                errno = 0;
                size = strtoul(end + 1, &end, 10);
                shift = strchr("mM", *end) && *end ? 0 : strchr("gG", *end) && *end ? 10 :
                        strchr("tT", *end) && *end ? 20 : 99;
                if (shift != 99)
                        end++;
                if (shift == 99 || (*end && strcasecmp(end, "B") != 0 && strcasecmp(end, "iB") != 0))
                        return fail(p, 0, "%s: \"%s\": no unit (expected a size like 256M, 8G or 1T)", key, w);
                /* The kernel's size values go up to 1 MB << 43 (8 EiB, pci_rebar_get_possible_sizes). */
                if (errno == ERANGE || size == 0 || (size & (size - 1)) || shift + __builtin_ctzl(size) > 43)
                        return fail(p, 0, "%s: \"%s\" is not a power of two from 1M (the sizes a resizable "
                                    "BAR can have)", key, w);
                for (size_t i = 0; i < sizes.n; i++)
                        if (sizes.bar[i].index == index)
                                return fail(p, 0, "%s: BAR %lu is listed twice", key, index);
                sizes.bar[sizes.n].index = (unsigned) index;
                sizes.bar[sizes.n++].order = (unsigned) (shift + (unsigned) __builtin_ctzl(size));
        }
        *b = sizes;
        return 1;
}

static const struct native_key {
        enum section section;
        const char *name;
        parse_fn parse;
        size_t offset;          /* in struct config, or in struct vm_config for SECTION_VM */
} native_keys[] = {
        { SECTION_GPU, "address", parse_addresses, offsetof(struct config, gpu) },
        { SECTION_GPU, "reset_method", parse_reset_method, offsetof(struct config, reset_method) },
        { SECTION_GPU, "unload_driver", parse_bool_no, offsetof(struct config, unload_driver) },
        { SECTION_SECONDARY, "address", parse_addresses, offsetof(struct config, secondary) },
        { SECTION_SECONDARY, "driver", parse_driver, offsetof(struct config, secondary_driver) },
        { SECTION_SECONDARY, "park_driver", parse_driver, offsetof(struct config, park_driver) },
        { SECTION_DESKTOP, "user", parse_user, offsetof(struct config, user) },
        { SECTION_DESKTOP, "bus", parse_bus, offsetof(struct config, user_bus) },
        { SECTION_DESKTOP, "display_manager", parse_display_manager, offsetof(struct config, display_manager) },
        { SECTION_DESKTOP, "units", parse_units, offsetof(struct config, user_units) },
        { SECTION_DESKTOP, "before_stop", parse_command, offsetof(struct config, before_stop) },
        { SECTION_DESKTOP, "after_start", parse_command, offsetof(struct config, after_start) },
        { SECTION_HOST, "cpus", parse_cpus, offsetof(struct config, host_cpus) },
        { SECTION_HOST, "timeout", parse_timeout, offsetof(struct config, timeout_ms) },
        { SECTION_HOST, "script_timeout", parse_timeout, offsetof(struct config, script_timeout_ms) },
        { SECTION_HOST, "vtconsoles", parse_bool_key, offsetof(struct config, vtconsoles) },
        { SECTION_HOST, "framebuffer", parse_bool_key, offsetof(struct config, framebuffer) },
        { SECTION_HOST, "inhibit_sleep", parse_bool_key, offsetof(struct config, inhibit_sleep) },
        { SECTION_VM, "handle", parse_handle, offsetof(struct vm_config, handle) },
        { SECTION_VM, "cpus", parse_cpus, offsetof(struct vm_config, host_cpus) },
        { SECTION_VM, "timeout", parse_timeout, offsetof(struct vm_config, timeout_ms) },
        { SECTION_VM, "user_units", parse_vm_units, offsetof(struct vm_config, user_units) },
        { SECTION_VM, "hugepages", parse_hugepages, offsetof(struct vm_config, hugepages_kb) },
        { SECTION_VM, "hugepage_size", parse_hugepage_size, offsetof(struct vm_config, hugepage_kb) },
        { SECTION_VM, "cpu_governor", parse_governor, offsetof(struct vm_config, cpu_governor) },
        { SECTION_VM, "bar_sizes", parse_bar_sizes, offsetof(struct vm_config, bar_sizes) },
};

static int native_key(struct parser *p, const char *section, const char *name, const char *value) {
        char vm[SECTION_MAX_LEN + 1], key[128], expected[512] = "", buf[INI_MAX_LINE], *base;
        int s = section_parse(section, vm);
        const char *v;

        snprintf(key, sizeof(key), "[%s] %s", section, name);
        if (s < 0)      /* the reader refuses unknown sections; this is for what it missed */
                return fail(p, 0, "[%s]: unknown section", section);
        v = clean_value(p, key, value, buf);
        if (!v)
                return 0;
        base = s == SECTION_VM ? (char *) vm_get(p->config, vm) : (char *) p->config;
        for (size_t i = 0; i < ELEMENTSOF(native_keys); i++) {
                const struct native_key *k = &native_keys[i];

                if ((int) k->section != s)
                        continue;
                if (strcmp(k->name, name) == 0)
                        return k->parse(p, key, v, base + k->offset);
                snprintf(expected + strlen(expected), sizeof(expected) - strlen(expected), "%s%s",
                         expected[0] ? ", " : "", k->name);
        }
        /* A typo in a native file must not silently change what a root process does. */
        return fail(p, 0, "%s: unknown key (expected one of: %s)", key, expected);
}

static int original_key(struct parser *p, const char *name, const char *value) {
        char buf[INI_MAX_LINE];
        const char *v;

        if (!p->top_line)
                p->top_line = p->line;
        /* The file is sourced by bash, where "export KEY=value" means the same. */
        if (strncmp(name, "export", 6) == 0 && (name[6] == ' ' || name[6] == '\t'))
                name += 6 + strspn(name + 6, " \t");
        for (size_t i = 0; i < ELEMENTSOF(original_keys); i++) {
                int slot = original_keys[i].slot;

                if (strcmp(name, original_keys[i].name) != 0)
                        continue;
                v = clean_value(p, name, value, buf);
                if (!v)
                        return 0;
                if (slot == ORIG_USER)
                        return parse_user(p, name, v, &p->config->user);
                if (slot == ORIG_BUS)
                        return parse_bus(p, name, v, &p->config->user_bus);
                /* An empty value unsets the key, as in bash; missing ones are reported at the end. */
                p->orig_line[slot] = 0;
                if (!*v)
                        return 1;
                if (pci_addr_parse(v, &p->orig_addr[slot]) < 0)
                        return fail(p, 0, "%s: \"%s\" is not a PCI address (expected DDDD:BB:SS.F)", name, v);
                p->orig_line[slot] = p->line;
                p->orig_key[slot] = original_keys[i].name;
                return 1;
        }
        /* Users keep their own variables in this file: warn (a typo is likely) but go on. */
        log_warning("%s:%u: %s: unknown key, ignored", p->config->path, p->line, name);
        return 1;
}

static int handler(void *userdata, const char *section, const char *name, const char *value) {
        struct parser *p = userdata;

        if (p->err_line)
                return 0;
        return *section ? native_key(p, section, name, value) : original_key(p, name, value);
}

/* fgets for inih that counts lines, so that every message can name one, and checks what inih
 * would get wrong silently: overlong lines (it would parse the rest as a line of its own) and
 * section names (it would cut long ones; an empty unknown section never reaches the handler). */
static char *read_line(char *str, int num, void *userdata) {
        struct parser *p = userdata;
        char *s, vm[SECTION_MAX_LEN + 1];
        size_t n;

        if (p->err_line)
                return NULL;    /* the first error is the one reported: stop there */
        errno = 0;
        if (getline(&p->buf, &p->size, p->file) < 0) {
                p->read_errno = errno;
                return NULL;
        }
        p->line++;
        /* Leading blanks mean nothing in a file bash sources, but inih's multi-line values
         * would glue an indented "key = value" to the previous key's value. */
        s = p->buf + strspn(p->buf, " \t");
        n = strcspn(s, "\r\n");
        s[n] = '\0';
        if (n > (size_t) num - 3)       /* room for "\r\n" and the NUL, as inih wants */
                return fail(p, 0, "line longer than %d characters", num - 3), NULL;

        if (s[0] == '[') {
                char *end = strchr(s, ']');

                if (end) {
                        size_t len = end - s - 1;
                        char section[INI_MAX_LINE];

                        memcpy(section, s + 1, len);
                        section[len] = '\0';
                        if (len > SECTION_MAX_LEN)
                                return fail(p, 0, "[%s]: section name longer than %d characters", section,
                                            SECTION_MAX_LEN), NULL;
                        if (section_parse(section, vm) < 0)
                                return fail(p, 0, "[%s]: unknown section "
                                            "(expected [gpu], [secondary], [desktop], [host] or [vm NAME])",
                                            section), NULL;
                        /* The two formats differ in defaults and in how unknown keys are
                         * treated: a mixed file would have no single obvious meaning. */
                        if (p->top_line)
                                return fail(p, 0, "[%s]: a section after top-level KEY=\"value\" lines (line %u) "
                                            "of the original format (expected one format: sections only, "
                                            "or VIRSH_* keys only)", section, p->top_line), NULL;
                        if (!p->section_line)
                                p->section_line = p->line;
                }
        }
        memcpy(str, s, n);
        str[n] = '\n';
        str[n + 1] = '\0';
        return str;
}

/* Builds the lists of the original format and fills in the defaults of what was not set. */
static int finish(struct parser *p) {
        struct config *c = p->config;
        const char *const *units;
        char buf[PCI_ADDR_LEN], buf2[PCI_ADDR_LEN];

        if (p->top_line) {
                c->original = true;
                if (!p->orig_line[ORIG_GPU_VIDEO])
                        return fail(p, NO_LINE, "VIRSH_GPU_VIDEO is not set "
                                    "(expected the PCI address of the GPU to pass through, like \"0000:0d:00.0\")");
                for (int slot = ORIG_GPU_VIDEO; slot <= ORIG_SECONDARY_AUDIO; slot++)
                        if (p->orig_line[slot] &&
                            !addr_add(p, slot >= ORIG_SECONDARY_VIDEO, p->orig_key[slot], &p->orig_addr[slot],
                                      p->orig_line[slot]))
                                return 0;
        } else if (c->n_gpu == 0)
                return fail(p, NO_LINE, "%s", p->section_line ?
                            "[gpu] address is not set (expected the PCI address of the GPU to pass through)" :
                            "no GPU configured (expected [gpu] address, or VIRSH_GPU_VIDEO in the original format)");

        for (size_t i = 0; i < c->n_secondary; i++)
                for (size_t j = 0; j < c->n_gpu; j++)
                        if (pci_addr_same_slot(&c->secondary[i], &c->gpu[j]))
                                return fail(p, p->secondary_line[i],
                                            "%s: %s is in the slot of the GPU's %s (%s, line %u) "
                                            "(expected a different card)",
                                            p->secondary_key[i], pci_addr_format(&c->secondary[i], buf),
                                            pci_addr_format(&c->gpu[j], buf2), p->gpu_key[j], p->gpu_line[j]);

        if (!c->user && (c->before_stop[0] || c->after_start[0]))
                return fail(p, NO_LINE, "[desktop] %s is set but [desktop] user is not (expected the user "
                            "the commands run as)", c->before_stop[0] ? "before_stop" : "after_start");
        for (size_t i = 0; !c->user && i < c->n_vms; i++)
                if (c->vms[i].user_units[0])
                        return fail(p, NO_LINE, "[vm %s] user_units is set but [desktop] user is not (expected "
                                    "the user whose units they are)", c->vms[i].name);
        /* The original scripts never held off sleep: their format keeps their behaviour. */
        if (c->original)
                c->inhibit_sleep = false;
        if (!p->units_set) {
                units = c->original ? units_original : units_native;
                for (size_t i = 0; units[i]; i++)
                        c->user_units[i] = xstrdup(units[i]);
        }
        if (!c->park_driver)
                c->park_driver = xstrdup("vfio-pci");
        if (!c->display_manager)
                c->display_manager = xstrdup("auto");
        if (c->timeout_ms == 0)
                c->timeout_ms = CONFIG_TIMEOUT_DEFAULT_MS;
        if (c->script_timeout_ms == 0)
                c->script_timeout_ms = CONFIG_SCRIPT_TIMEOUT_DEFAULT_MS;
        return 1;
}

static int load(struct parser *p) {
        const char *path = p->config->path;
        int r;

        r = ini_parse_stream(read_line, p, handler, p);
        if (p->read_errno)
                return log_error_errno(p->read_errno, "config %s:%u: %m", path, p->line + 1);
        if (r == -2)
                return log_error_errno(ENOMEM, "config %s: %m", path);
        /* inih reports the first line it failed on, which is ours too when our handler failed. */
        if (r > 0 && (!p->err_line || (unsigned) r < p->err_line))
                return log_error("%s:%d: syntax error (expected KEY=value, [section] or a comment)", path, r);
        if (!p->err_line)
                finish(p);
        if (p->err_line)
                return log_error("%s", p->err);
        return 0;
}

/* The file decides which devices root unbinds and which units it stops: with check_owner it, and
 * every directory and link on its way, must be root's (secure-path.h), and what is read is the
 * file that was checked. */
static int open_config(const char *path, bool check_owner, FILE **ret) {
        struct secure_path sp;
        struct stat st;
        char what[PATH_MAX + 16];
        int fd, r;

        snprintf(what, sizeof(what), "config %s", path);
        r = secure_path_open(AT_FDCWD, NULL, path, what, check_owner, &sp);
        if (r == -ENOENT || r == -ENOTDIR)
                return log_error_errno(r, "%s: %m", what);
        if (r < 0)
                return r;
        if (!S_ISREG(sp.st.st_mode) || sp.dir_fd < 0) {
                secure_path_close(&sp);
                return log_error_errno(EINVAL, "%s: not a regular file", what);
        }
        r = secure_path_check(&sp, what, check_owner);
        if (r < 0) {
                secure_path_close(&sp);
                return r;
        }
        /* An O_PATH fd cannot be read: the same name in the same (checked, held) directory,
         * and the same file, or nothing. */
        /* O_NONBLOCK: a FIFO swapped in meanwhile must not block the open; the file checked is
         * a regular one, where the flag changes nothing. */
        fd = openat(sp.dir_fd, secure_path_name(&sp), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                r = log_error_errno(errno, "%s: %m", what);
        else if (fstat(fd, &st) < 0)
                r = log_error_errno(errno, "%s: %m", what);
        else if (st.st_dev != sp.st.st_dev || st.st_ino != sp.st.st_ino)
                r = log_error_errno(EBUSY, "%s: replaced while it was being opened; try again", what);
        else if (!(*ret = fdopen(fd, "re")))
                r = log_error_errno(errno, "%s: %m", what);
        if (r < 0 && fd >= 0)
                close(fd);
        secure_path_close(&sp);
        return r;
}

int config_read(FILE *f, const char *path, struct config *ret) {
        struct parser p = { .config = ret, .file = f };
        int r;

        assert(f);
        assert(path);
        assert(ret);
        *ret = (struct config) { .path = xstrdup(path), .vtconsoles = true, .framebuffer = true,
                                 .inhibit_sleep = true };
        r = load(&p);
        free(p.buf);
        if (r < 0)
                config_free(ret);
        return r;
}

int config_load(const char *path, bool check_owner, struct config *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        int r;

        assert(path);
        assert(ret);
        r = open_config(path, check_owner, &f);
        if (r < 0) {
                *ret = (struct config) {};
                return r;
        }
        return config_read(f, path, ret);
}

void config_free(struct config *c) {
        if (!c)
                return;
        free(c->path);
        free(c->secondary_driver);
        free(c->park_driver);
        free(c->reset_method);
        free(c->user);
        free(c->user_bus);
        free(c->display_manager);
        for (size_t i = 0; c->user_units[i]; i++)
                free(c->user_units[i]);
        free(c->host_cpus);
        for (size_t i = 0; c->before_stop[i]; i++)
                free(c->before_stop[i]);
        for (size_t i = 0; c->after_start[i]; i++)
                free(c->after_start[i]);
        for (size_t i = 0; i < c->n_vms; i++) {
                free(c->vms[i].name);
                free(c->vms[i].host_cpus);
                for (size_t k = 0; c->vms[i].user_units[k]; k++)
                        free(c->vms[i].user_units[k]);
                free(c->vms[i].cpu_governor);
        }
        free(c->vms);
        *c = (struct config) {};
}

bool config_is_gpu(const struct config *c, const struct pci_addr *a) {
        for (size_t i = 0; i < c->n_gpu; i++)
                if (pci_addr_same_slot(a, &c->gpu[i]))
                        return true;
        return false;
}

const struct vm_config *config_vm(const struct config *c, const char *vm) {
        for (size_t i = 0; vm && i < c->n_vms; i++)
                if (strcmp(c->vms[i].name, vm) == 0)
                        return &c->vms[i];
        return NULL;
}
