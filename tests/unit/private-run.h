/* For the unit tests that write JOURNAL_DIR: only in a private tmpfs on /run, which
 * tests/run-units.sh mounts (as root, in a mount namespace of its own); elsewhere they skip, so
 * that they never touch the journal of a VM running on this host. Include once, after cmocka. */
#pragma once
#include <stdbool.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#define TMPFS_MAGIC 0x01021994

static bool private_run;
static const char *why_not_private = "not checked";

/* Created by tests/run-units.sh in the tmpfs it mounts on /run: a real /run never has it. */
#define PRIVATE_RUN_MARKER "/run/.qemu-hook-unit-tests"

static bool in_init_mount_namespace(void) {
        char self[64] = "", init[64] = "";

        /* Unreadable without CAP_SYS_PTRACE over PID 1 (containers): the marker decides then. */
        if (readlink("/proc/self/ns/mnt", self, sizeof(self) - 1) < 0 ||
            readlink("/proc/1/ns/mnt", init, sizeof(init) - 1) < 0)
                return false;
        return strcmp(self, init) == 0;
}

/* /run must be a tmpfs mounted by the runner (its marker inside), in a mount namespace that is
 * not init's when that can be told. */
static int check_private_run(void **state) {
        struct statfs run, root;

        if (in_init_mount_namespace())
                why_not_private = "in the host's own mount namespace";
        else if (statfs("/run", &run) < 0 || run.f_type != TMPFS_MAGIC)
                why_not_private = "/run is not a tmpfs";
        else if (statfs("/", &root) < 0 || memcmp(&root.f_fsid, &run.f_fsid, sizeof(run.f_fsid)) == 0)
                why_not_private = "/run is not a mount of its own";
        else if (access(PRIVATE_RUN_MARKER, F_OK) < 0)
                why_not_private = "no " PRIVATE_RUN_MARKER ": /run was not set up by the test runner";
        else if (access("/run", W_OK) < 0)
                why_not_private = "/run is not writable";
        else {
                private_run = true;
                return 0;
        }
        print_message("journal file tests skipped: %s; run them with tests/run-units.sh as root, which "
                      "gives them a private tmpfs on /run\n", why_not_private);
        return 0;
}

#define REQUIRE_PRIVATE_RUN() do { if (!private_run) { print_message("skipped: %s\n", why_not_private); skip(); } } while (0)
