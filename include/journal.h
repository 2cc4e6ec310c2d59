/* The record of a hand-over, /run/qemu-hook/VM.state: written atomically after every step so a
 * hook killed half way can be undone by the next release. Read back with inih. */
#pragma once
#include <limits.h>
#include <stdio.h>
#include "plan.h"

#define JOURNAL_DIR "/run/qemu-hook"

/* Escapes a VM name into a file name: [A-Za-z0-9_.-] stay (no leading dot), others become \xNN. */
int journal_escape(const char *vm, char *buf, size_t size);
/* The journal's path: JOURNAL_DIR/escaped name.state, long names shortened with a hash. */
int journal_path(const char *vm, char buf[static PATH_MAX]);
/* Creates JOURNAL_DIR (0700) and takes the exclusive hand-over lock, waiting until deadline, or
 * longer while its holder says it may need it longer (a hand-over of the same GPU is never given
 * up on half way); once taken, says it holds it until `until` at the latest. Returns the fd. */
int journal_lock(usec_t deadline, usec_t until);
/* The holder of the lock (fd) says it keeps it until `until` at the latest (CLOCK_MONOTONIC). */
int journal_lock_until(int fd, usec_t until);
int journal_save(const struct plan *p);
/* Whether the VM has a journal, without reading it. */
bool journal_exists(const char *vm);
/* -ENOENT when there is none. */
int journal_load(const char *vm, struct plan *ret);
/* journal_load's reader, on an open file (name: for messages), for the VM named vm. Logs and
 * returns -EBADMSG, *ret empty, for anything but a whole journal. */
int journal_read(FILE *f, const char *name, const char *vm, struct plan *ret);
int journal_remove(const char *vm);
/* Calls fn for each readable journal (broken ones are reported and passed over), with its plan
 * (its VM's name from the file) and path, until fn returns non-zero, which is returned; a negative
 * errno when JOURNAL_DIR exists but cannot be read. */
int journal_foreach(int (*fn)(struct plan *p, const char *path, void *data), void *data);
/* Whether the journal of another VM than vm has a step in place on target (a device, a unit):
 * 1 with that journal in *ret (to free) and its file in path, 0, or a negative errno when JOURNAL_DIR
 * cannot be read. Broken journals are reported and passed over. */
int journal_owner(const char *vm, const char *target, struct plan *ret, char path[static PATH_MAX]);
/* Whether any VM has a journal: then the host's state is known, and a VM without one did not
 * hand the GPU over. */
bool journal_any(void);
