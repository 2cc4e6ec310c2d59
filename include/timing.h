/* Where the hook's time goes: each wait on something outside the hook adds to its account, so a
 * hand-over's wall time splits into the kernel's sysfs writes, systemd's jobs, udev and DRM, the
 * processes it waited for, and the rest, which is the hook's own work. */
#pragma once
#include <stddef.h>

#include "util.h"

enum time_account {
        TIME_SYSFS,             /* inside sysfs writes, and waiting for a bind to show */
        TIME_SYSTEMD,           /* D-Bus calls to systemd and their jobs */
        TIME_UDEV,              /* a DRM card appearing and udev processing it */
        TIME_HOLDERS,           /* processes letting go of the GPU's nodes */
        TIME_SCRIPTS,           /* the hook scripts of qemu.d */
        _TIME_ACCOUNT_MAX,
};

/* Empties every account: a new measurement starts. */
void timing_reset(void);
/* Adds the time since start (now_usec()) to the account. */
void timing_add(enum time_account a, usec_t start);
/* "sysfs 120.0 ms, systemd 800.5 ms, udev/DRM 30.1 ms, holders 0.0 ms, scripts 0.0 ms, own 12.3 ms
 * (1.3 %)" for the wall time since start. */
void timing_format(usec_t start, char *buf, size_t size);
