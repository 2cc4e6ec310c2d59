/* libvirt's API, for the runs by hand only (--dry-run without XML): the hook, run by libvirtd,
 * must never call back into it (deadlock), nor load it (milliseconds on every call). So the
 * library is opened with dlopen() when asked, never linked. */
#pragma once
#include <stddef.h>

/* Calls fn with the name and XML (live if it runs, else its definition) of vm, or of every domain
 * libvirt knows when vm is NULL, on a read-only connection (LIBVIRT_DEFAULT_URI, or libvirt's
 * default: qemu:///system as root). Logs and returns a negative errno when libvirt, its daemon or
 * the domain is not there; else the first negative fn returned, or 0. */
typedef int (*virt_domain_fn)(const char *name, const char *xml, size_t len, void *data);
int virt_foreach_domain(const char *vm, virt_domain_fn fn, void *data);

/* The domain XML of vm from libvirt (a read-only connection to LIBVIRT_DEFAULT_URI, or libvirt's
 * default: qemu:///system as root): live if it runs, else its definition. Logs and returns a
 * negative errno when libvirt, its daemon or the domain is not there. */
int virt_domain_xml(const char *vm, char **ret, size_t *len);
