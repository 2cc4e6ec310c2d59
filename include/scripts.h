/* The hook scripts of qemu.d: the old dispatcher's job. libvirt runs one hook per driver, so the
 * scripts users keep in /etc/libvirt/hooks/qemu.d/VM/OPERATION/SUB-OPERATION (a file, or a
 * directory of files run in sorted order) only run when the hook runs them. */
#pragma once
#include <stdbool.h>
#include "util.h"

#define HOOKS_DIR_DEFAULT "/etc/libvirt/hooks"
#define SCRIPT_TERM_GRACE_USEC (5 * USEC_PER_SEC)

struct scripts {
        char **paths;           /* relative to qemu.d/VM: "prepare/begin/10-x", or "prepare/begin" */
        int *fds;               /* each one's O_PATH fd, what was checked: what runs (script_run) */
        size_t n;
};

/* Finds the scripts of VM's OPERATION/SUB-OPERATION under qemu_d and opens each by the checked
 * walk of secure-path.h, links followed by the walk. Absent ones are no error (n is 0). With
 * check_owner, refuses (-EPERM, logged) a script when it, a directory on its way (on its literal
 * path and on every link's target) or a link followed is not owned by root, or the file or a
 * directory is writable by group or others: what runs as root must be root's. */
int scripts_find(const char *qemu_d, const char *vm, const char *op, const char *sub, bool check_owner,
                 struct scripts *ret);
void scripts_free(struct scripts *s);

/* Runs the script fd (an fd of struct scripts; path names it in messages and is its argv[0]) like
 * libvirt runs a hook, without a shell, and by its fd, so the file that runs is the file checked:
 * a #! script's interpreter gets it as /dev/fd/N (so its $0), which needs /proc. argv is
 * VM OPERATION SUB-OPERATION EXTRA, stdin reads in_fd from its start, stdout goes to out_fd (-1:
 * ours), stderr is ours. It runs in a process group of its own. When timeout has passed, the
 * script and its group get SIGTERM; once it is gone, or as long again later (at most
 * SCRIPT_TERM_GRACE_USEC), both get SIGKILL. Returns 0 when it exited 0; otherwise logs
 * why (status, signal, deadline, exec error) and returns a negative errno. */
int script_run(int fd, const char *path, char *const args[4], int in_fd, int out_fd, usec_t timeout);

/* A sealed-in-memory file holding data, for scripts' stdin; -errno on failure. */
int memfd_with(const char *name, const char *data, size_t len);
