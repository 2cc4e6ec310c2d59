#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <libxml/parser.h>
#include <libxml/SAX2.h>
#include <libxml/xpath.h>

#include "domain.h"
#include "log.h"

#define XML_MAX (16u << 20)

int domain_read_stdin(char **ret, size_t *len) {
        size_t size = 0, n = 0;
        char *buf = NULL;

        *ret = NULL;
        *len = 0;
        if (isatty(STDIN_FILENO))
                return 0;
        for (;;) {
                if (n == size) {
                        if (size >= XML_MAX) {
                                *ret = buf;     /* what was read, for the caller to pass on or free */
                                *len = n;
                                buf[n] = '\0';
                                return log_error_errno(EFBIG, "domain XML on standard input exceeds %u bytes", XML_MAX);
                        }
                        size = size ? size * 2 : 16384;
                        buf = xreallocarray(buf, size + 1, 1);
                }
                ssize_t k = read(STDIN_FILENO, buf + n, size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int r = log_error_errno(errno, "reading the domain XML from standard input: %m");
                        *ret = buf;
                        *len = n;
                        buf[n] = '\0';
                        return r;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        *ret = buf;
        *len = n;
        return 0;
}

/* Reads a libvirt address attribute ("0x0d", or decimal) into *ret. */
static int attr_number(xmlNode *node, const char *name, unsigned max, unsigned *ret) {
        xmlChar *value = xmlGetProp(node, (const xmlChar *) name);
        char *end;
        unsigned long n;
        int r = -EINVAL;

        if (value) {
                errno = 0;
                n = strtoul((const char *) value, &end, 0);
                if (errno == 0 && end != (char *) value && *end == '\0' && n <= max) {
                        *ret = (unsigned) n;
                        r = 0;
                }
        }
        xmlFree(value);
        return r;
}

struct first_error {
        int line;
        char message[200];
};

/* libxml2 reports every error; the first one is where the document went wrong, the last one
 * often only says where the parser gave up ("Premature end of data"). */
static void keep_first(void *data, xmlErrorPtr e) {
        struct first_error *first = data;

        if (first->message[0] || !e)
                return;
        first->line = e->line;
        strscpy(first->message, e->message ? e->message : "parse error", sizeof(first->message));
        first->message[strcspn(first->message, "\n")] = '\0';
}

/* libvirt never writes a document type declaration, and what one declares is the only costly
 * part of parsing: entities that expand ten times per level, or that raise an error on every one
 * of 10^8 references (found by fuzzing: 568 bytes kept libxml2 2.9.14 busy for 5 s, each level
 * more ten times longer, the hook running inside libvirtd's call with no deadline). Refused at
 * "<!DOCTYPE", before its internal subset is read. */
static void refuse_doctype(void *data, const xmlChar *name, const xmlChar *external_id,
                           const xmlChar *system_id) {
        xmlParserCtxt *ctxt = data;
        struct first_error *first = ctxt->_private;

        if (!first->message[0]) {
                first->line = xmlSAX2GetLineNumber(ctxt);
                strscpy(first->message, "a document type declaration (<!DOCTYPE), which libvirt never writes",
                        sizeof(first->message));
        }
        /* What a fatal error does: no document comes back. Stopping alone would return the
         * part read so far. */
        ctxt->wellFormed = 0;
        xmlStopParser(ctxt);
}

int domain_pci_hostdevs(const char *xml, size_t len, struct domain_hostdev **ret, size_t *n_ret,
                        char **error) {
        xmlParserCtxt *ctxt;
        xmlDoc *doc = NULL;
        xmlXPathContext *xpath = NULL;
        xmlXPathObject *found = NULL;
        struct domain_hostdev *addrs = NULL;
        size_t n = 0;
        int r;

        *error = NULL;
        if (len == 0 || len > INT32_MAX) {
                *error = xstrdup(len ? "domain XML too large" : "no domain XML on standard input");
                return -EINVAL;
        }
        /* libxml2 prints parse errors to stderr by default; the caller reports one clear line. */
        struct first_error first = {};
        ctxt = xmlNewParserCtxt();
        if (!ctxt) {
                *error = xstrdup("cannot parse the domain XML: out of memory");
                return -ENOMEM;
        }
        ctxt->_private = &first;
        ctxt->sax->internalSubset = refuse_doctype;
        xmlSetStructuredErrorFunc(&first, keep_first);
        doc = xmlCtxtReadMemory(ctxt, xml, (int) len, "domain.xml", NULL, XML_PARSE_NONET | XML_PARSE_NOWARNING);
        xmlSetStructuredErrorFunc(NULL, NULL);
        xmlFreeParserCtxt(ctxt);
        if (!doc) {
                char buf[256];

                snprintf(buf, sizeof(buf), "malformed domain XML: line %d: %s", first.line,
                         first.message[0] ? first.message : "parse error");
                *error = xstrdup(buf);
                return -EINVAL;
        }
        xmlNode *root = xmlDocGetRootElement(doc);
        if (!root || !xmlStrEqual(root->name, (const xmlChar *) "domain")) {
                *error = xstrdup("malformed domain XML: the root element is not <domain>");
                r = -EINVAL;
                goto out;
        }

        xpath = xmlXPathNewContext(doc);
        found = xpath ? xmlXPathEvalExpression(
                (const xmlChar *) "/domain/devices/hostdev[@type='pci']/source/address", xpath) : NULL;
        if (!found) {
                *error = xstrdup("cannot evaluate the domain XML");
                r = -ENOMEM;
                goto out;
        }

        int count = found->nodesetval ? found->nodesetval->nodeNr : 0;
        addrs = xcalloc((size_t) count, sizeof(*addrs));
        for (int i = 0; i < count; i++) {
                xmlNode *node = found->nodesetval->nodeTab[i];
                struct pci_addr a = {};

                /* libvirt omits domain='0x0000' in hand-written XML; the kernel's default is 0. */
                if (!xmlHasProp(node, (const xmlChar *) "domain"))
                        a.domain = 0;
                else if (attr_number(node, "domain", 0xffff, &a.domain) < 0)
                        goto bad;
                if (attr_number(node, "bus", 0xff, &a.bus) < 0 ||
                    attr_number(node, "slot", 0x1f, &a.slot) < 0 ||
                    attr_number(node, "function", 7, &a.func) < 0)
                        goto bad;
                /* <hostdev managed='yes'><source><address/>: libvirt detaches it itself. */
                xmlChar *managed = node->parent && node->parent->parent ?
                                   xmlGetProp(node->parent->parent, (const xmlChar *) "managed") : NULL;
                addrs[n++] = (struct domain_hostdev) { a, managed && xmlStrEqual(managed, (const xmlChar *) "yes") };
                xmlFree(managed);
                continue;
        bad:;
                char buf[128];
                snprintf(buf, sizeof(buf), "domain XML line %ld: <hostdev type='pci'> has a bad source address",
                         xmlGetLineNo(node));
                *error = xstrdup(buf);
                r = -EINVAL;
                goto out;
        }
        *ret = addrs;
        *n_ret = n;
        addrs = NULL;
        r = 0;
out:
        free(addrs);
        xmlXPathFreeObject(found);
        xmlXPathFreeContext(xpath);
        xmlFreeDoc(doc);
        return r;
}

enum xml_gpu domain_uses_gpu(const struct config *cfg, const char *xml, size_t len, char **error) {
        _cleanup_free_ struct domain_hostdev *addrs = NULL;
        size_t n;

        if (!xml) {
                *error = xstrdup("no domain XML on standard input");
                return XML_BROKEN;
        }
        if (domain_pci_hostdevs(xml, len, &addrs, &n, error) < 0)
                return XML_BROKEN;
        for (size_t i = 0; i < n; i++)
                if (config_is_gpu(cfg, &addrs[i].addr))
                        return XML_PASSES_GPU;
        return XML_NO_GPU;
}
