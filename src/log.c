#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-journal.h>

#include "log.h"

static const char *log_vm;
static const char *log_step;
static bool log_verbose;
static bool log_journal;

void log_setup(const char *vm, bool verbose, bool journal) {
        log_vm = vm;
        log_verbose = verbose;
        log_journal = journal;
}

void log_set_step(const char *step) {
        log_step = step;
}

int log_full(int prio, int err, const char *fmt, ...) {
        int saved_errno = errno;
        char msg[1024];
        va_list ap;

        err = err < 0 ? -err : err;
        errno = err;                    /* for %m */
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (prio <= LOG_NOTICE || log_verbose)
                fprintf(stderr, "qemu-hook: %s\n", msg);
        /* The journal gets everything but debug chatter; sd_journal_send is a no-op without a
         * journald socket, which is what a host without systemd has. */
        if (log_journal && (prio < LOG_DEBUG || log_verbose))
                sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%i", prio,
                                "SYSLOG_IDENTIFIER=qemu-hook", "QEMU_HOOK_VM=%s", log_vm ? log_vm : "",
                                "QEMU_HOOK_STEP=%s", log_step ? log_step : "",
                                err ? "ERRNO=%i" : NULL, err, NULL);
        errno = saved_errno;
        return err ? -err : -EINVAL;
}
