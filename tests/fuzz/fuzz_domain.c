/* libFuzzer target: the domain XML libvirt passes on stdin, as domain_pci_hostdevs reads it
 * (libxml2, then an XPath for the PCI hostdevs' source addresses). Whatever the bytes, it returns
 * addresses within PCI's ranges or an error with its message; anything else aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <libxml/parser.h>

#include "domain.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_setup(NULL, -1, NULL);
        xmlInitParser();
        return 0;
}

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "domain invariant broken: %s\n", #x); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct domain_hostdev *addrs = NULL;
        size_t n = 0;
        char *error = NULL;
        int r;

        r = domain_pci_hostdevs((const char *) data, size, &addrs, &n, &error);
        if (r == 0) {
                CHECK(!error);
                CHECK(n == 0 || addrs);
                for (size_t i = 0; i < n; i++)
                        CHECK(addrs[i].addr.domain <= 0xffff && addrs[i].addr.bus <= 0xff && addrs[i].addr.slot <= 0x1f &&
                              addrs[i].addr.func <= 7);
        } else {
                CHECK(r < 0 && error && error[0]);
        }
        free(addrs);
        free(error);
        return 0;
}
