#include <stdio.h>

#include "timing.h"

static usec_t accounts[_TIME_ACCOUNT_MAX];

void timing_reset(void) {
        for (int i = 0; i < _TIME_ACCOUNT_MAX; i++)
                accounts[i] = 0;
}

void timing_add(enum time_account a, usec_t start) {
        accounts[a] += now_usec() - start;
}

void timing_format(usec_t start, char *buf, size_t size) {
        usec_t wall = now_usec() - start, outside = 0;

        for (int i = 0; i < _TIME_ACCOUNT_MAX; i++)
                outside += accounts[i];
        usec_t own = wall > outside ? wall - outside : 0;
#define MS(u) ((double) (u) / USEC_PER_MSEC)
        snprintf(buf, size, "sysfs %.1f ms, systemd %.1f ms, udev/DRM %.1f ms, holders %.1f ms, scripts %.1f ms, "
                 "own %.1f ms (%.1f %%)", MS(accounts[TIME_SYSFS]), MS(accounts[TIME_SYSTEMD]), MS(accounts[TIME_UDEV]),
                 MS(accounts[TIME_HOLDERS]), MS(accounts[TIME_SCRIPTS]), MS(own),
                 wall ? 100.0 * (double) own / (double) wall : 0.0);
#undef MS
}
