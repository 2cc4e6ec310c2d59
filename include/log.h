/* Messages go to stderr (libvirt shows it when the hook fails) and to the systemd journal with
 * SYSLOG_IDENTIFIER=qemu-hook and the VM and step as fields. Never to stdout: for some operations
 * libvirt reads the hook's stdout as a replacement domain XML. */
#pragma once
#include <stdbool.h>
#include <syslog.h>

void log_setup(const char *vm, bool verbose, bool journal);
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
