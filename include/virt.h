/* libvirt's API, for the runs by hand only (--dry-run without XML): the hook, run by libvirtd,
 * must never call back into it (deadlock), nor load it (milliseconds on every call). So the
 * library is opened with dlopen() when asked, never linked. */
#pragma once
#include <stddef.h>

/* The domain XML of vm from libvirt (a read-only connection to LIBVIRT_DEFAULT_URI, or libvirt's
 * default: qemu:///system as root): live if it runs, else its definition. Logs and returns a
 * negative errno when libvirt, its daemon or the domain is not there. */
int virt_domain_xml(const char *vm, char **ret, size_t *len);
