#include <dlfcn.h>
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "virt.h"

/* The functions of libvirt used, resolved at run time; their types from libvirt's own header. */
struct virt {
        void *lib;
        typeof(&virConnectOpenReadOnly) open;
        typeof(&virConnectClose) close;
        typeof(&virDomainLookupByName) lookup;
        typeof(&virDomainGetXMLDesc) xml;
        typeof(&virDomainFree) free;
        typeof(&virGetLastErrorMessage) error;
};

static int load(struct virt *v) {
        const char *missing = NULL;

        v->lib = dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
        if (!v->lib)
                return log_error_errno(ENOENT, "reading the domain XML from libvirt: %s (is libvirt installed?)",
                                       dlerror());
#define SYM(field, name) if (!(v->field = (typeof(v->field)) dlsym(v->lib, #name)) && !missing) missing = #name
        SYM(open, virConnectOpenReadOnly);
        SYM(close, virConnectClose);
        SYM(lookup, virDomainLookupByName);
        SYM(xml, virDomainGetXMLDesc);
        SYM(free, virDomainFree);
        SYM(error, virGetLastErrorMessage);
#undef SYM
        if (missing) {
                dlclose(v->lib);
                return log_error_errno(ENOSYS, "reading the domain XML from libvirt: libvirt.so.0 lacks %s", missing);
        }
        return 0;
}

int virt_domain_xml(const char *vm, char **ret, size_t *len) {
        struct virt v = {};
        virConnectPtr conn;
        virDomainPtr dom;
        char *xml = NULL;
        int r = load(&v);

        if (r < 0)
                return r;
        conn = v.open(NULL);
        if (!conn) {
                r = log_error_errno(ECONNREFUSED, "%s: reading the domain XML from libvirt: %s", vm, v.error());
                goto out;
        }
        dom = v.lookup(conn, vm);
        if (!dom)
                r = log_error_errno(ENOENT, "%s: reading the domain XML from libvirt: %s", vm, v.error());
        else {
                xml = v.xml(dom, 0);
                if (!xml)
                        r = log_error_errno(EIO, "%s: reading the domain XML from libvirt: %s", vm, v.error());
                v.free(dom);
        }
        v.close(conn);
        if (xml) {
                /* Ours to free with free(): libvirt's allocation is plain malloc. */
                *ret = xml;
                *len = strlen(xml);
        }
out:
        /* Left loaded: libvirt keeps state of its own (error storage, its initialization) until
         * the process ends, which comes soon after a run by hand. */
        return r;
}
