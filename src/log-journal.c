/* The systemd journal as the log's sink (qemu-hook-act only: the front end does not link
 * libsystemd). sd_journal_send is a no-op without a journald socket, which is what a host
 * without systemd has. */
#include <systemd/sd-journal.h>

#include "log.h"

void log_journal(int prio, int err, const char *msg, const char *vm, const char *step) {
        sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%i", prio, "SYSLOG_IDENTIFIER=qemu-hook",
                        "QEMU_HOOK_VM=%s", vm, "QEMU_HOOK_STEP=%s", step,
                        err ? "ERRNO=%i" : NULL, err, NULL);
}
