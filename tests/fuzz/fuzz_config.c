/* libFuzzer target: kvm.conf as config_load reads it, in either format (the original
 * KEY="value" file bash sourced, or the native INI with sections; the content decides which).
 *
 * The bytes go into a memfd, read by config_read (config_load's reader, after its checked walk
 * to the file) from a stream on it, as from a real file, without touching the disk. A config it
 * accepts must hold what the rest of the hook relies on; anything else aborts. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        /* No message reaches stderr: formatting them is still exercised, printing would only
         * slow the fuzzer down. */
        log_setup(NULL, -1, NULL);
        memfd = memfd_create("kvm.conf", MFD_CLOEXEC);
        if (memfd < 0) {
                perror("memfd_create");
                abort();
        }
        snprintf(path, sizeof(path), "kvm.conf");
        return 0;
}

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "config invariant broken: %s\n", #x); abort(); } } while (0)

static void check_config(const struct config *c) {
        size_t n = 0;

        CHECK(c->path && strcmp(c->path, path) == 0);
        CHECK(c->n_gpu >= 1 && c->n_gpu <= CONFIG_MAX_ADDRS);
        CHECK(c->n_secondary <= CONFIG_MAX_ADDRS);
        for (size_t i = 0; i < c->n_secondary; i++)
                CHECK(!config_is_gpu(c, &c->secondary[i]));
        CHECK(c->park_driver && c->display_manager);
        while (c->user_units[n])
                CHECK(++n <= CONFIG_MAX_UNITS);
        CHECK(c->timeout_ms >= 1 && c->timeout_ms <= 600000);
        CHECK(c->script_timeout_ms >= 1 && c->script_timeout_ms <= 600000);
        CHECK(c->n_vms == 0 || c->vms);
        for (size_t i = 0; i < c->n_vms; i++) {
                CHECK(c->vms[i].name && c->vms[i].name[0]);
                CHECK(c->vms[i].handle >= -1 && c->vms[i].handle <= 1);
                CHECK(c->vms[i].timeout_ms <= 600000);
                CHECK(config_vm(c, c->vms[i].name) == &c->vms[i]);     /* one section per name */
        }
        /* Copied into the plan's fixed fields (step.h STEP_FIELD_LEN, host.h NAME_LEN). */
        CHECK(!c->host_cpus || strlen(c->host_cpus) < 128);
        CHECK(!c->user || strlen(c->user) < 64);
        CHECK(!c->user_bus || strncmp(c->user_bus, "unix:", 5) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct config c;

        if (ftruncate(memfd, 0) < 0 || (size && pwrite(memfd, data, size, 0) != (ssize_t) size)) {
                perror("writing the memfd");
                abort();
        }
        int fd = dup(memfd);
        FILE *f = fd < 0 || lseek(fd, 0, SEEK_SET) < 0 ? NULL : fdopen(fd, "r");
        if (!f) {
                perror("reading the memfd");
                abort();
        }
        if (config_read(f, path, &c) == 0) {
                check_config(&c);
                config_free(&c);
        }
        fclose(f);
        return 0;
}
