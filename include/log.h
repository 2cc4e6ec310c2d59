/* Messages go to stderr (libvirt shows it when the hook fails) and to the systemd journal with
 * SYSLOG_IDENTIFIER=qemu-hook and the VM and step as fields. Never to stdout: for some operations
 * libvirt reads the hook's stdout as a replacement domain XML. */
#pragma once
#include <stdbool.h>
#include <syslog.h>

/* Where messages go besides stderr: the systemd journal (log_journal, in qemu-hook-act), or
 * nowhere (NULL: the front end, which leaves all reporting to qemu-hook-act). */
typedef void (*log_sink_t)(int prio, int err, const char *msg, const char *vm, const char *step);
void log_journal(int prio, int err, const char *msg, const char *vm, const char *step);
/* Messages of priority stderr_max or more urgent go to stderr (LOG_NOTICE, LOG_DEBUG when
 * verbose, -1 for none); the sink gets all but debug ones (those too with LOG_DEBUG). */
void log_setup(const char *vm, int stderr_max, log_sink_t sink);
/* The step being done, attached to every message as QEMU_HOOK_STEP= until changed (NULL clears). */
void log_set_step(const char *step);
/* Logs and returns -|err| (or -EINVAL when err is 0), so callers can write `return log_error_errno(r, ...)`.
 * %m in the format prints strerror(|err|). */
int log_full(int prio, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_full(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, 0, __VA_ARGS__)
#define log_error_errno(err, ...) log_full(LOG_ERR, (err), __VA_ARGS__)
#define log_warning_errno(err, ...) log_full(LOG_WARNING, (err), __VA_ARGS__)
