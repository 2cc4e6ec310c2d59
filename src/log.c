#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static const char *log_vm;
static const char *log_step;
static int log_stderr_max = LOG_NOTICE;
static log_sink_t log_sink;

void log_setup(const char *vm, int stderr_max, log_sink_t sink) {
        log_vm = vm;
        log_stderr_max = stderr_max;
        log_sink = sink;
}

void log_set_step(const char *step) {
        log_step = step;
}

int log_full(int prio, int err, const char *fmt, ...) {
        int saved_errno = errno;
        char msg[4096];         /* a list of the steps left (plan_left, 1 KiB) and what to do */
        va_list ap;

        err = err < 0 ? -err : err;
        errno = err;                    /* for %m */
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (prio <= log_stderr_max)
                fprintf(stderr, "qemu-hook: %s\n", msg);
        /* The sink gets everything but debug chatter, unless verbose. */
        if (log_sink && (prio < LOG_DEBUG || log_stderr_max >= LOG_DEBUG))
                log_sink(prio, err, msg, log_vm ? log_vm : "", log_step ? log_step : "");
        errno = saved_errno;
        return err ? -err : -EINVAL;
}
