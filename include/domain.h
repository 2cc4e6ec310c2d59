/* The domain XML libvirt passes on stdin, parsed with libxml2. */
#pragma once
#include <stddef.h>
#include "util.h"

/* Source addresses of every <hostdev type='pci'> of the domain. Returns 0 and a malloc'd array
 * (possibly empty), or a negative errno with *error set to a malloc'd message. */
int domain_pci_hostdevs(const char *xml, size_t len, struct pci_addr **ret, size_t *n_ret,
                        char **error);
