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
        typeof(&virDomainGetName) name;
        typeof(&virConnectListAllDomains) list;
        typeof(&virDomainFree) free;
        typeof(&virGetLastErrorMessage) error;
        typeof(&virSetErrorFunc) set_error_func;
};

/* libvirt prints each error to stderr by default; ours name the VM and what was being done. */
static void quiet(void *data, virErrorPtr error) {
}

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
        SYM(name, virDomainGetName);
        SYM(list, virConnectListAllDomains);
        SYM(free, virDomainFree);
        SYM(error, virGetLastErrorMessage);
        SYM(set_error_func, virSetErrorFunc);
#undef SYM
        if (missing) {
                dlclose(v->lib);
                return log_error_errno(ENOSYS, "reading the domain XML from libvirt: libvirt.so.0 lacks %s", missing);
        }
        v->set_error_func(NULL, quiet);
        return 0;
}

/* One domain's XML to fn; a domain whose XML cannot be read is logged and skipped (it may have
 * gone meanwhile). */
static int domain_to(struct virt *v, virDomainPtr dom, virt_domain_fn fn, void *data) {
        const char *name = v->name(dom);
        char *xml = v->xml(dom, 0);
        int r;

        if (!xml)
                return log_error_errno(EIO, "%s: reading the domain XML from libvirt: %s", name ? name : "?",
                                       v->error());
        r = fn(name, xml, strlen(xml), data);
        free(xml);      /* libvirt's allocation is plain malloc */
        return r;
}

int virt_foreach_domain(const char *vm, virt_domain_fn fn, void *data) {
        struct virt v = {};
        virConnectPtr conn;
        virDomainPtr *doms = NULL;
        int r = load(&v), n;

        if (r < 0)
                return r;
        conn = v.open(NULL);
        if (!conn)
                return log_error_errno(ECONNREFUSED, "%s%sconnecting to libvirt (read only): %s", vm ? vm : "",
                                       vm ? ": " : "", v.error());
        if (vm) {
                virDomainPtr dom = v.lookup(conn, vm);
                if (!dom)
                        r = log_error_errno(ENOENT, "%s: reading the domain XML from libvirt: %s", vm, v.error());
                else {
                        r = domain_to(&v, dom, fn, data);
                        v.free(dom);
                }
        } else if ((n = v.list(conn, &doms, 0)) < 0)
                r = log_error_errno(EIO, "listing libvirt's domains: %s", v.error());
        else {
                for (int i = 0; i < n; i++) {
                        int k = domain_to(&v, doms[i], fn, data);
                        r = r < 0 ? r : k == -EIO ? 0 : k;
                        v.free(doms[i]);
                }
                free(doms);
        }
        v.close(conn);
        /* Left loaded: libvirt keeps state of its own (error storage, its initialization) until
         * the process ends, which comes soon after a run by hand. */
        return r;
}

struct one {
        char *xml;
        size_t len;
};

static int keep(const char *name, const char *xml, size_t len, void *data) {
        struct one *o = data;

        o->xml = xstrdup(xml);
        o->len = len;
        return 0;
}

int virt_domain_xml(const char *vm, char **ret, size_t *len) {
        struct one o = {};
        int r = virt_foreach_domain(vm, keep, &o);

        if (r >= 0 && o.xml) {
                *ret = o.xml;
                *len = o.len;
                return 0;
        }
        free(o.xml);
        return r < 0 ? r : -EIO;
}
