/* Every read and write of sysfs goes through here, relative to one root (/sys). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define SYSFS_ROOT "/sys"
#define SYSCTL_ROOT "/proc/sys"

/* Reads the first line of ROOT/path into buf (newline stripped). Negative errno on failure. */
int sysfs_read(const char *path, char *buf, size_t size);
/* A count the kernel prints as one unsigned decimal (nr_hugepages): -EIO when ROOT/path holds
 * anything else, a negative number or one beyond a long. */
int sysfs_read_count(const char *path, long *ret);
/* Writes value to ROOT/path in one write(2) and returns the kernel's verdict (negative errno). */
int sysfs_write(const char *path, const char *value);
/* The last component of the target of the symlink ROOT/path ("amdgpu" for .../driver), or
 * -ENOENT when there is no such link. */
int sysfs_link_name(const char *path, char *buf, size_t size);
bool sysfs_exists(const char *path);
/* sysfs_write in a child process, waited for until the deadline: a write the kernel can block
 * forever (unbinding a sound card whose node a process holds waits for that process; a probe
 * may hang) ends in -EINPROGRESS instead of hanging the hook, and libvirtd with it: the blocked
 * child is left behind, holding nothing of the hook's, and its write may still happen. */
int sysfs_write_deadline(const char *path, const char *value, usec_t deadline);
/* The PID of the writer the last -EINPROGRESS left blocked (then 0 until the next one). */
int sysfs_take_blocked_writer(void);
/* Whether a writer left blocked still is (alive, ours); wchan gets where it waits. */
bool sysfs_writer_blocked(int pid, char *wchan, size_t size);
/* sysfs_write_deadline for SYSCTL_ROOT/path ("vm/compact_memory"): work the kernel does in the
 * writer's time, which a deadline's SIGKILL interrupts. */
int sysctl_write_deadline(const char *path, const char *value, usec_t deadline);
