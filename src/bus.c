/* systemd over D-Bus: units, their jobs and their CPU sets, on the system bus and on the desktop
 * user's own bus. */
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "log.h"
#include "sysfs.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER SD_DEST ".Manager"
#define SD_UNIT SD_DEST ".Unit"
#define SD_NO_SUCH_UNIT SD_DEST ".NoSuchUnit"
#define CPU_MASK_MAX 1024       /* bytes: 8192 CPUs */


const char *bus_error_text(const sd_bus_error *error, int r) {
        if (error && sd_bus_error_is_set(error) && error->message)
                return error->message;
        return strerror(r < 0 ? -r : r);
}

static usec_t call_timeout(const struct run_ctx *c) {
        return c->timeout ? c->timeout : 20 * USEC_PER_SEC;
}

int bus_system(struct run_ctx *c, sd_bus **ret) {
        sd_bus *bus;
        int r;

        if (!c->system_bus) {
                r = sd_bus_open_system(&bus);
                if (r < 0)
                        return r;
                sd_bus_set_method_call_timeout(bus, call_timeout(c));
                c->system_bus = bus;
        }
        *ret = c->system_bus;
        return 0;
}

static int lookup_user(const char *name, struct passwd *pw, char *buf, size_t size) {
        struct passwd *found = NULL;
        int r = getpwnam_r(name, pw, buf, size, &found);

        if (r != 0)
                return -r;
        return found ? 0 : -ESRCH;
}

static void user_bus_address(const struct config *cfg, uid_t uid, char *buf, size_t size) {
        if (cfg->user_bus)
                snprintf(buf, size, "%s", cfg->user_bus);
        else
                snprintf(buf, size, "unix:path=/run/user/%u/bus", (unsigned) uid);
}

/* A session bus accepts only its owner: dbus-daemon and dbus-broker compare the uid the client
 * announces in the EXTERNAL handshake and the peer credentials of the socket with their own, and
 * reject root. So connect, authenticate and say Hello with the user's effective ids, then return
 * to root; the connection stays the user's. Only the effective ids change, so root comes back
 * through the saved set-user-ID; nothing is dropped for good. Supplementary groups stay root's:
 * setgroups() is process-wide and would need restoring as well, and neither the socket (in the
 * user's 0700 runtime directory, reached as its owner) nor a session bus's policy looks at them. */
static int connect_as(const struct passwd *pw, const char *address, usec_t timeout, sd_bus **ret) {
        sd_bus *bus = NULL;
        uid_t saved_uid = geteuid();
        gid_t saved_gid = getegid();
        bool switch_ids = saved_uid == 0 && pw->pw_uid != 0;
        const char *unique;
        int r;

        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, true);
        if (r >= 0)
                r = sd_bus_set_method_call_timeout(bus, timeout);
        if (r < 0)
                goto out;

        if (switch_ids) {
                if (setegid(pw->pw_gid) < 0) {
                        r = -errno;
                        goto out;
                }
                if (seteuid(pw->pw_uid) < 0) {
                        r = -errno;
                        if (setegid(saved_gid) < 0)
                                abort();        /* cannot happen: the effective uid is still 0 */
                        goto out;
                }
        }
        r = sd_bus_start(bus);
        /* The handshake happens here, lazily, and must be done before root is back: sd-bus sends
         * the effective uid in AUTH EXTERNAL. */
        if (r >= 0)
                r = sd_bus_get_unique_name(bus, &unique);
        if (switch_ids && (seteuid(saved_uid) < 0 || setegid(saved_gid) < 0)) {
                /* Cannot happen with a saved set-user-ID of 0; carrying on half privileged would
                 * make every later step fail in confusing ways. */
                fprintf(stderr, "qemu-hook: cannot return to root after connecting to %s: %m\n", address);
                abort();
        }
out:
        if (r < 0) {
                sd_bus_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

int bus_user(struct run_ctx *c, sd_bus **ret) {
        char buf[4096], address[256];
        struct passwd pw;
        sd_bus *bus;
        int r;

        if (!c->user_bus) {
                if (!c->cfg->user)
                        return -ESRCH;
                r = lookup_user(c->cfg->user, &pw, buf, sizeof(buf));
                if (r < 0)
                        return r;
                user_bus_address(c->cfg, pw.pw_uid, address, sizeof(address));
                r = connect_as(&pw, address, call_timeout(c), &bus);
                if (r < 0)
                        return r;
                c->user_bus = bus;
        }
        *ret = c->user_bus;
        return 0;
}

void bus_close(struct run_ctx *c) {
        c->system_bus = sd_bus_flush_close_unref(c->system_bus);
        c->user_bus = sd_bus_flush_close_unref(c->user_bus);
}

/* The object of unit. LoadUnit loads a unit that is not loaded yet (systemd unloads inactive
 * units), so that an inactive display manager is found too; managers without it have GetUnit. */
static int unit_path(sd_bus *bus, const char *unit, char **ret, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "LoadUnit", error, &reply, "s", unit);
        if (r < 0 && sd_bus_error_has_name(error, SD_BUS_ERROR_UNKNOWN_METHOD)) {
                sd_bus_error_free(error);
                r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "GetUnit", error, &reply, "s", unit);
        }
        if (r < 0)
                return sd_bus_error_has_name(error, SD_NO_SUCH_UNIT) ? -ENOENT : r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        *ret = xstrdup(path);
        return 0;
}

int bus_unit_state(sd_bus *bus, const char *unit, char *id, size_t size, bool *active,
                   sd_bus_error *error) {
        _cleanup_free_ char *path = NULL, *unit_id = NULL, *load = NULL, *state = NULL;
        int r;

        r = unit_path(bus, unit, &path, error);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, SD_DEST, path, SD_UNIT, "LoadState", error, &load);
        if (r < 0)
                return r;
        if (strcmp(load, "not-found") == 0) {
                sd_bus_error_setf(error, SD_NO_SUCH_UNIT, "Unit %s not found.", unit);
                return -ENOENT;
        }
        r = sd_bus_get_property_string(bus, SD_DEST, path, SD_UNIT, "Id", error, &unit_id);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, SD_DEST, path, SD_UNIT, "ActiveState", error, &state);
        if (r < 0)
                return r;
        if (id) {
                r = strscpy(id, unit_id, size);
                if (r < 0)
                        return r;
        }
        if (active)
                *active = strcmp(state, "active") == 0 || strcmp(state, "activating") == 0 ||
                          strcmp(state, "reloading") == 0;
        return 0;
}

struct job_removed {
        char *path;
        char *result;
};

struct job_watch {
        struct job_removed *seen;
        size_t n;
};

/* Every JobRemoved is kept, by job path: it may be read before the reply that names our job. */
static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct job_watch *w = userdata;
        const char *path, *unit, *result;
        uint32_t id;

        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
                return 0;
        w->seen = xreallocarray(w->seen, w->n + 1, sizeof(*w->seen));
        w->seen[w->n++] = (struct job_removed) { xstrdup(path), xstrdup(result) };
        return 0;
}

static const char *job_result(const struct job_watch *w, const char *job) {
        for (size_t i = 0; i < w->n; i++)
                if (strcmp(w->seen[i].path, job) == 0)
                        return w->seen[i].result;
        return NULL;
}

static void job_watch_free(struct job_watch *w) {
        for (size_t i = 0; i < w->n; i++) {
                free(w->seen[i].path);
                free(w->seen[i].result);
        }
        free(w->seen);
}

static int job_outcome(const char *result, sd_bus_error *error) {
        static const struct { const char *result, *text; } texts[] = {
                { "failed", "job failed" },
                { "timeout", "job timed out" },
                { "canceled", "job canceled" },
                { "dependency", "job failed: a unit it depends on failed" },
                { "skipped", "job skipped: a condition of the unit was not met" },
                { "invalid", "job invalid for this unit" },
        };

        if (strcmp(result, "done") == 0)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(texts); i++)
                if (strcmp(result, texts[i].result) == 0) {
                        sd_bus_error_setf(error, "org.freedesktop.systemd1.JobFailed", "%s", texts[i].text);
                        return -EIO;
                }
        sd_bus_error_setf(error, "org.freedesktop.systemd1.JobFailed", "job ended with result '%s'", result);
        return -EIO;
}

/* Sends m, a call that queues a job and answers with its path (StartUnit, StopUnit,
 * StartTransientUnit), and waits for the job's JobRemoved until deadline. */
static int job_call(sd_bus *bus, sd_bus_message *m, usec_t deadline, sd_bus_error *error) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(job_watch_free) struct job_watch w = {};
        _cleanup_free_ char *job = NULL;
        const char *path, *result;
        int r;

        /* The match first: the job can end before the method's reply is even read. */
        r = sd_bus_match_signal(bus, &slot, SD_DEST, SD_PATH, SD_MANAGER, "JobRemoved", on_job_removed, &w);
        if (r < 0)
                return r;
        /* systemd emits job signals only while some client is subscribed. */
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe", error, NULL, NULL);
        if (r < 0 && !sd_bus_error_has_name(error, "org.freedesktop.systemd1.AlreadySubscribed"))
                return r;
        sd_bus_error_free(error);

        r = sd_bus_call(bus, m, 0, error, &reply);
        if (r < 0)
                return sd_bus_error_has_name(error, SD_NO_SUCH_UNIT) ? -ENOENT :
                       sd_bus_error_has_name(error, SD_DEST ".UnitExists") ? -EEXIST : r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        job = xstrdup(path);

        while (!(result = job_result(&w, job))) {
                usec_t now;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                now = now_usec();
                if (now >= deadline) {
                        sd_bus_error_setf(error, SD_BUS_ERROR_TIMEOUT, "job %s still running at the deadline", job);
                        return -ETIMEDOUT;
                }
                r = sd_bus_wait(bus, deadline - now);
                if (r < 0)
                        return r;
        }
        return job_outcome(result, error);
}

int bus_unit_job(sd_bus *bus, const char *method, const char *unit, usec_t deadline,
                 sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, method);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", unit, "replace");
        if (r < 0)
                return r;
        return job_call(bus, m, deadline, error);
}

static int append_property(sd_bus_message *m, const char *name, const char *type, ...) {
        va_list ap;
        int r;

        r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', type);
        if (r >= 0) {
                va_start(ap, type);
                r = sd_bus_message_appendv(m, type, ap);
                va_end(ap);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* ExecStart as systemd takes it: a(sasb), one (path, argv, ignore-failure) per command. */
static int append_exec_start(sd_bus_message *m, char *const *argv) {
        int r;

        r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "ExecStart");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'r', "sasb");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", argv[0]);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char **) argv);
        if (r >= 0)
                r = sd_bus_message_append(m, "b", 0);
        for (int i = 0; i < 4 && r >= 0; i++)
                r = sd_bus_message_close_container(m);
        return r;
}

int bus_start_transient(sd_bus *bus, const char *unit, const struct transient_service *t, usec_t deadline,
                        sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, "StartTransientUnit");
        /* "fail": a unit of that name with a job queued is an error, not something to replace. */
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", unit, "fail");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0)
                r = append_property(m, "Description", "s", t->description);
        if (r >= 0)
                r = append_property(m, "Type", "s", t->type);
        /* Gone once it is over, failed or not: a name left loaded would refuse the next start. A
         * oneshot that failed stays until its failure is read (bus_service_result) and reset. */
        if (r >= 0)
                r = append_property(m, "CollectMode", "s", t->keep_failed ? "inactive" : "inactive-or-failed");
        if (r >= 0 && t->timeout)
                r = append_property(m, "TimeoutStartUSec", "t", (uint64_t) t->timeout);
        if (r >= 0)
                r = append_exec_start(m, t->argv);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r < 0)
                return r;
        return job_call(bus, m, deadline, error);
}

int bus_service_result(sd_bus *bus, const char *unit, char *result, size_t size, int *status,
                       sd_bus_error *error) {
        _cleanup_free_ char *path = NULL, *res = NULL;
        int32_t st = 0;
        int r;

        r = unit_path(bus, unit, &path, error);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, SD_DEST, path, SD_DEST ".Service", "Result", error, &res);
        if (r < 0)
                return r;
        r = sd_bus_get_property_trivial(bus, SD_DEST, path, SD_DEST ".Service", "ExecMainStatus", error, 'i', &st);
        if (r < 0)
                return r;
        *status = st;
        return strscpy(result, res, size);
}

int bus_reset_failed(sd_bus *bus, const char *unit, sd_bus_error *error) {
        int r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "ResetFailedUnit", error, NULL, "s", unit);

        /* A unit that is not loaded has no failed state to reset; StartUnit loads it. */
        if (r < 0 && sd_bus_error_has_name(error, SD_NO_SUCH_UNIT)) {
                sd_bus_error_free(error);
                return 0;
        }
        return r;
}

/* AllowedCPUs lives on the unit type's interface: ...systemd1.Slice, .Scope, .Service. */
static int cpus_interface(const char *unit, char *buf, size_t size) {
        static const struct { const char *suffix, *iface; } types[] = {
                { ".slice", SD_DEST ".Slice" }, { ".scope", SD_DEST ".Scope" },
                { ".service", SD_DEST ".Service" }, { ".socket", SD_DEST ".Socket" },
        };
        const char *dot = strrchr(unit, '.');

        for (size_t i = 0; dot && i < ELEMENTSOF(types); i++)
                if (strcmp(dot, types[i].suffix) == 0)
                        return strscpy(buf, types[i].iface, size);
        return -EINVAL;
}

int bus_get_allowed_cpus(sd_bus *bus, const char *unit, char *list, size_t size, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        char iface[64];
        const void *mask;
        size_t len;
        int r;

        r = cpus_interface(unit, iface, sizeof(iface));
        if (r < 0)
                return r;
        r = unit_path(bus, unit, &path, error);
        if (r < 0)
                return r;
        r = sd_bus_get_property(bus, SD_DEST, path, iface, "AllowedCPUs", error, &reply, "ay");
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(reply, 'y', &mask, &len);
        if (r < 0)
                return r;
        return cpu_mask_to_list(mask, len, list, size);
}

int bus_set_allowed_cpus(sd_bus *bus, const char *unit, const char *list, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        uint8_t mask[CPU_MASK_MAX];
        size_t len;
        int r;

        r = cpu_list_to_mask(list, mask, sizeof(mask), &len);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, "SetUnitProperties");
        if (r < 0)
                return r;
        /* runtime = true: the restriction must not outlive a reboot that happens while a VM runs. */
        r = sd_bus_message_append(m, "sb", unit, 1);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "AllowedCPUs");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "ay");
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', mask, len);
        for (int i = 0; i < 3 && r >= 0; i++)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        r = sd_bus_call(bus, m, 0, error, NULL);
        if (r < 0)
                return sd_bus_error_has_name(error, SD_NO_SUCH_UNIT) ? -ENOENT : r;
        return 0;
}

static int parse_cpu(const char **p, unsigned *ret) {
        char *end;
        unsigned long v;

        if (**p < '0' || **p > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(*p, &end, 10);
        if (errno != 0 || v > 1u << 20)
                return -ERANGE;
        *p = end;
        *ret = (unsigned) v;
        return 0;
}

int cpu_list_to_mask(const char *list, uint8_t *mask, size_t size, size_t *len) {
        const char *p = list;
        size_t used = 0;
        int r;

        memset(mask, 0, size);
        while (*p == ' ')
                p++;
        while (*p) {
                unsigned first, last;

                r = parse_cpu(&p, &first);
                if (r < 0)
                        return r;
                last = first;
                if (*p == '-') {
                        p++;
                        r = parse_cpu(&p, &last);
                        if (r < 0)
                                return r;
                        if (last < first)
                                return -EINVAL;
                }
                if (last / 8 >= size)
                        return -ERANGE;
                for (unsigned cpu = first; cpu <= last; cpu++)
                        mask[cpu / 8] |= 1u << (cpu % 8);
                if (last / 8 + 1 > used)
                        used = last / 8 + 1;
                while (*p == ' ')
                        p++;
                if (*p == ',') {
                        p++;
                        while (*p == ' ')
                                p++;
                        if (!*p)
                                return -EINVAL;         /* "0-3," */
                } else if (*p)
                        return -EINVAL;
        }
        *len = used;
        return 0;
}

static bool cpu_set(const uint8_t *mask, size_t len, size_t cpu) {
        return cpu / 8 < len && (mask[cpu / 8] >> (cpu % 8)) & 1;
}

int cpu_mask_to_list(const uint8_t *mask, size_t len, char *list, size_t size) {
        size_t n = 0;
        bool fits = true;

        if (size == 0)
                return -ENAMETOOLONG;
        list[0] = '\0';
        for (size_t cpu = 0; cpu < len * 8; cpu++) {
                size_t last = cpu;
                int k;

                if (!cpu_set(mask, len, cpu))
                        continue;
                while (cpu_set(mask, len, last + 1))
                        last++;
                if (last == cpu)
                        k = snprintf(list + n, size - n, "%s%zu", n ? "," : "", cpu);
                else
                        k = snprintf(list + n, size - n, "%s%zu-%zu", n ? "," : "", cpu, last);
                if (k < 0 || (size_t) k >= size - n) {
                        fits = false;
                        list[n] = '\0';         /* no half written entry */
                        break;
                }
                n += k;
                cpu = last;
        }
        return fits ? 0 : -ENAMETOOLONG;
}

/* The CPUs of this host as a list. Only ever read: CPU hotplug is no business of ours. */
static int host_cpu_list(char *buf, size_t size) {
        long n;

        if (sysfs_read("devices/system/cpu/online", buf, size) == 0 && buf[0])
                return 0;
        n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n <= 0)
                return -errno ?: -EIO;
        if (n == 1)
                snprintf(buf, size, "0");
        else
                snprintf(buf, size, "0-%ld", n - 1);
        return 0;
}

/* A reason for skipping, cut to what a step's note holds. */
static void __attribute__((format(printf, 3, 4))) set_reason(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
}

static bool no_manager(const sd_bus_error *error) {
        /* The bus is there but systemd is not on it (no systemd as PID 1, no systemd --user). */
        return sd_bus_error_has_name(error, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
               sd_bus_error_has_name(error, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

static bool no_listener(int r) {
        return r == -ENOENT || r == -ECONNREFUSED || r == -ENOTDIR;
}

static int display_manager_state(struct run_ctx *c, struct desktop_state *d, char *skip, size_t size) {
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *dm = c->cfg->display_manager ? c->cfg->display_manager : "auto";
        bool automatic = strcmp(dm, "auto") == 0;
        const char *unit = automatic ? "display-manager.service" : dm;
        sd_bus *bus;
        int r;

        if (strcmp(dm, "none") == 0) {
                set_reason(skip, size, "no display manager configured");
                d->display_manager_skip = skip;
                return 0;
        }
        r = bus_system(c, &bus);
        if (r < 0) {
                set_reason(skip, size, "no system bus (%s)", strerror(-r));
                d->display_manager_skip = skip;
                return 0;
        }
        r = bus_unit_state(bus, unit, d->display_manager, sizeof(d->display_manager),
                           &d->display_manager_active, &error);
        if (r == -ENOENT && automatic) {
                set_reason(skip, size, "no display manager (display-manager.service does not exist)");
                d->display_manager_skip = skip;
                return 0;
        }
        if (r == -ENOENT)
                return log_error_errno(r, "display manager %s: no such unit; set display_manager to "
                                       "auto, none or an existing unit", unit);
        if (r < 0 && no_manager(&error)) {
                set_reason(skip, size, "systemd is not on the system bus");
                d->display_manager_skip = skip;
                d->display_manager[0] = '\0';
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "reading the state of %s: %s", unit, bus_error_text(&error, r));
        return 0;
}

static int user_units_state(struct run_ctx *c, struct desktop_state *d, char *skip, size_t size) {
        const struct config *cfg = c->cfg;
        char buf[4096], address[256];
        struct passwd pw;
        sd_bus *bus;
        int r;

        const struct vm_config *v = config_vm(cfg, c->vm);

        /* Also for the commands and the VM's units, which go to the same bus. */
        if (!cfg->user || (!cfg->user_units[0] && !cfg->before_stop[0] && !cfg->after_start[0] &&
                           !(v && v->user_units[0])))
                return 0;
        r = lookup_user(cfg->user, &pw, buf, sizeof(buf));
        if (r == -ESRCH)
                return log_error_errno(r, "the desktop user %s does not exist", cfg->user);
        if (r < 0)
                return log_error_errno(r, "looking up the desktop user %s: %m", cfg->user);
        user_bus_address(cfg, pw.pw_uid, address, sizeof(address));
        r = bus_user(c, &bus);
        if (r < 0) {
                const char *at = strncmp(address, "unix:path=", 10) == 0 ? address + 10 : address;

                if (no_listener(r))
                        set_reason(skip, size, "user %s is not logged in (no %s)", cfg->user, at);
                else
                        set_reason(skip, size, "user %s's bus %s refused us: %s", cfg->user, at, strerror(-r));
                d->user_units_skip = skip;
                return 0;
        }
        for (size_t i = 0; cfg->user_units[i]; i++) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;

                r = bus_unit_state(bus, cfg->user_units[i], NULL, 0, &d->user_unit_active[i], &error);
                if (r == -ENOENT) {
                        /* Not every desktop has every audio unit (wireplumber or
                         * pipewire-media-session): one it lacks is not running. */
                        log_debug("user unit %s of %s does not exist", cfg->user_units[i], cfg->user);
                        d->user_unit_active[i] = false;
                        continue;
                }
                if (r < 0 && no_manager(&error)) {
                        set_reason(skip, size, "no systemd --user on user %s's bus", cfg->user);
                        d->user_units_skip = skip;
                        return 0;
                }
                if (r < 0)
                        return log_error_errno(r, "reading the state of %s of user %s: %s", cfg->user_units[i],
                                               cfg->user, bus_error_text(&error, r));
        }
        return 0;
}

static int cpus_state(struct run_ctx *c, struct desktop_state *d) {
        const struct vm_config *v = config_vm(c->cfg, c->vm);
        const char *cpus = v && v->host_cpus ? v->host_cpus : c->cfg->host_cpus;
        uint8_t want[CPU_MASK_MAX], have[CPU_MASK_MAX];
        size_t want_len, have_len;
        sd_bus *bus;
        int r;

        if (!cpus)
                return 0;
        r = host_cpu_list(d->host_cpus, sizeof(d->host_cpus));
        if (r < 0)
                return log_error_errno(r, "reading the CPUs of this host: %m");
        r = cpu_list_to_mask(cpus, want, sizeof(want), &want_len);
        if (r < 0)
                return log_error_errno(r, "%s: cpus = %s is not a CPU list like 0-3,8", c->cfg->path, cpus);
        r = cpu_list_to_mask(d->host_cpus, have, sizeof(have), &have_len);
        if (r < 0)
                return log_error_errno(r, "cannot read the CPU list \"%s\" of this host", d->host_cpus);
        for (size_t cpu = 0; cpu < want_len * 8; cpu++)
                if (cpu_set(want, want_len, cpu) && !cpu_set(have, have_len, cpu))
                        return log_error_errno(EINVAL, "%s: cpus = %s names CPU %zu, which this host does not have "
                                               "(it has %s)", c->cfg->path, cpus, cpu, d->host_cpus);

        r = bus_system(c, &bus);
        if (r < 0)
                return log_error_errno(r, "%s: cpus is set, but there is no system bus to restrict "
                                       "the host's CPUs with: %m", c->cfg->path);
        for (size_t i = 0; i < ELEMENTSOF(plan_cpu_units); i++) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;

                r = bus_get_allowed_cpus(bus, plan_cpu_units[i], d->cpus_now[i], sizeof(d->cpus_now[i]), &error);
                if (r < 0)
                        return log_error_errno(r, "reading AllowedCPUs of %s: %s", plan_cpu_units[i],
                                               bus_error_text(&error, r));
        }
        return 0;
}

/* Whether the inhibitor can be had: a system bus with systemd on it. */
static int inhibit_state(struct run_ctx *c, struct desktop_state *d, char *skip, size_t size) {
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        char unit[STEP_FIELD_LEN];
        sd_bus *bus;
        int r;

        if (!c->cfg->inhibit_sleep)
                return 0;
        r = bus_system(c, &bus);
        if (r < 0) {
                set_reason(skip, size, "no system bus (%s)", strerror(-r));
                d->inhibit_skip = skip;
                return 0;
        }
        plan_inhibit_unit(c->vm ? c->vm : "", unit, sizeof(unit));
        r = bus_unit_state(bus, unit, NULL, 0, NULL, &error);
        if (r < 0 && no_manager(&error)) {
                set_reason(skip, size, "systemd is not on the system bus");
                d->inhibit_skip = skip;
                return 0;
        }
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "reading the state of %s: %s", unit, bus_error_text(&error, r));
        return 0;
}

/* [vm NAME] user_units: each must exist on the user's bus, refused before the first step (as a
 * display manager that does not exist is). */
static int vm_units_state(struct run_ctx *c, struct desktop_state *d) {
        const struct vm_config *v = config_vm(c->cfg, c->vm);
        sd_bus *bus;
        int r;

        if (!v || !v->user_units[0] || d->user_units_skip || !c->cfg->user)
                return 0;
        r = bus_user(c, &bus);
        if (r < 0)
                return 0;       /* user_units_state said why: the steps skip */
        for (size_t i = 0; v->user_units[i]; i++) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;

                r = bus_unit_state(bus, v->user_units[i], NULL, 0, &d->vm_unit_active[i], &error);
                if (r == -ENOENT)
                        return log_error_errno(r, "[vm %s] user_units: %s of user %s: no such unit", c->vm,
                                               v->user_units[i], c->cfg->user);
                if (r < 0)
                        return log_error_errno(r, "reading the state of %s of user %s: %s", v->user_units[i],
                                               c->cfg->user, bus_error_text(&error, r));
        }
        return 0;
}

/* The services of the GPU's drivers that exist (a missing one is simply not there to stop). No
 * system bus or no systemd on it: none, as the display manager's step then skips too. */
static int driver_units_state(struct run_ctx *c, const struct host *h, struct desktop_state *d) {
        const char *units[PLAN_DRIVER_UNITS];
        size_t n = h ? plan_driver_units(h, units) : 0;
        sd_bus *bus;
        int r;

        if (n == 0 || bus_system(c, &bus) < 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
                size_t k = d->n_driver_units;

                r = bus_unit_state(bus, units[i], d->driver_units[k], sizeof(d->driver_units[k]),
                                   &d->driver_unit_active[k], &error);
                if (r == -ENOENT || (r < 0 && no_manager(&error)))
                        continue;
                if (r < 0)
                        return log_error_errno(r, "reading the state of %s: %s", units[i], bus_error_text(&error, r));
                d->n_driver_units++;
        }
        return 0;
}

int bus_desktop_state(struct run_ctx *c, const struct host *h, struct desktop_state *ret) {
        static char dm_skip[STEP_FIELD_LEN], user_skip[STEP_FIELD_LEN], inhibit_skip[STEP_FIELD_LEN];
        struct desktop_state d = {};
        int r;

        r = inhibit_state(c, &d, inhibit_skip, sizeof(inhibit_skip));
        if (r >= 0)
                r = display_manager_state(c, &d, dm_skip, sizeof(dm_skip));
        if (r >= 0)
                r = user_units_state(c, &d, user_skip, sizeof(user_skip));
        if (r >= 0)
                r = vm_units_state(c, &d);
        if (r >= 0)
                r = driver_units_state(c, h, &d);
        if (r >= 0)
                r = cpus_state(c, &d);
        if (r < 0)
                return r;
        *ret = d;
        return 0;
}
