/* The domain XML libvirt passes on stdin, parsed with libxml2. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "config.h"
#include "decide.h"
#include "util.h"

/* Reads the domain XML from stdin (at most 16 MiB) into a malloc'd, NUL-terminated *ret; *ret is
 * NULL when stdin is a terminal (a run by hand without XML). Logs and returns -errno on error,
 * *ret then holding what was read (to free, or to pass on). */
int domain_read_stdin(char **ret, size_t *len);
struct domain_hostdev {
        struct pci_addr addr;   /* its <source><address> */
        bool managed;           /* managed='yes': libvirt detaches and reattaches it itself */
};
/* Every <hostdev type='pci'> of the domain, in document order. Returns 0 and a malloc'd array
 * (possibly empty), or a negative errno with *error set to a malloc'd message. */
int domain_pci_hostdevs(const char *xml, size_t len, struct domain_hostdev **ret, size_t *n_ret,
                        char **error);
/* Whether the domain passes a function of the config's GPU: XML_PASSES_GPU or XML_NO_GPU, or
 * XML_BROKEN (no XML, or one libxml2 refuses) with *error set to a malloc'd message. */
enum xml_gpu domain_uses_gpu(const struct config *cfg, const char *xml, size_t len, char **error);
