/* domain_pci_hostdevs: which PCI functions a libvirt domain XML passes through. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "domain.h"

/* The origin's Windows VM as `virsh dumpxml` writes it: the Vega 64's two functions, managed, among
 * the other devices a real domain has (a USB hostdev, a disk, an interface with a PCI address). */
static const char origin_xml[] =
        "<domain type='kvm' id='3'>\n"
        "  <name>win10</name>\n"
        "  <uuid>6b2f7e3a-8c1d-4d2e-9a51-0c7d3b8e1f42</uuid>\n"
        "  <memory unit='KiB'>16777216</memory>\n"
        "  <vcpu placement='static'>8</vcpu>\n"
        "  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>\n"
        "  <devices>\n"
        "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
        "    <disk type='file' device='disk'>\n"
        "      <source file='/var/lib/libvirt/images/win10.qcow2'/>\n"
        "      <target dev='sda' bus='sata'/>\n"
        "      <address type='drive' controller='0' bus='0' target='0' unit='0'/>\n"
        "    </disk>\n"
        "    <interface type='network'>\n"
        "      <source network='default'/>\n"
        "      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>\n"
        "    </interface>\n"
        "    <hostdev mode='subsystem' type='usb' managed='yes'>\n"
        "      <source><vendor id='0x046d'/><product id='0xc52b'/></source>\n"
        "      <address type='usb' bus='0' port='1'/>\n"
        "    </hostdev>\n"
        "    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
        "      <source>\n"
        "        <address domain='0x0000' bus='0x0d' slot='0x00' function='0x0'/>\n"
        "      </source>\n"
        "      <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>\n"
        "    </hostdev>\n"
        "    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
        "      <source>\n"
        "        <address domain='0x0000' bus='0x0d' slot='0x00' function='0x1'/>\n"
        "      </source>\n"
        "      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>\n"
        "    </hostdev>\n"
        "  </devices>\n"
        "</domain>\n";

#define DOMAIN(devices) "<domain type='kvm'><name>vm</name><devices>" devices "</devices></domain>"
#define PCI_HOSTDEV(address) \
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>" address "</source></hostdev>"

struct parsed {
        int r;
        struct domain_hostdev *addrs;
        size_t n;
        char *error;
};

static struct parsed parse(const char *xml, size_t len) {
        struct parsed p = { .addrs = NULL, .n = (size_t) -1, .error = (char *) "untouched" };

        p.r = domain_pci_hostdevs(xml, len, &p.addrs, &p.n, &p.error);
        return p;
}

static void parsed_free(struct parsed *p) {
        if (p->r == 0)
                free(p->addrs);
        free(p->error);
}

static void assert_addr(const struct pci_addr *a, unsigned domain, unsigned bus, unsigned slot,
                        unsigned func) {
        char got[PCI_ADDR_LEN], want[PCI_ADDR_LEN];
        struct pci_addr w = { domain, bus, slot, func };

        /* Compare as text so that a failure prints both addresses. */
        assert_string_equal(pci_addr_format(a, got), pci_addr_format(&w, want));
        assert_true(pci_addr_equal(a, &w));
}

static void test_origin_domain(void **state) {
        struct parsed p = parse(origin_xml, strlen(origin_xml));

        assert_int_equal(p.r, 0);
        assert_null(p.error);
        /* The interface's and the hostdevs' own guest-side <address> are not sources. */
        assert_int_equal(p.n, 2);
        assert_addr(&p.addrs[0].addr, 0, 0x0d, 0, 0);
        assert_addr(&p.addrs[1].addr, 0, 0x0d, 0, 1);
        assert_true(p.addrs[0].managed && p.addrs[1].managed);
        parsed_free(&p);
}

/* managed='yes' only: libvirt's default is no, and so is any other value. */
static void test_managed_read_from_the_hostdev(void **state) {
        static const char xml[] = DOMAIN(
                "<hostdev mode='subsystem' type='pci' managed='no'><source>"
                "<address bus='0x0d' slot='0x00' function='0x0'/></source></hostdev>"
                "<hostdev mode='subsystem' type='pci'><source>"
                "<address bus='0x0d' slot='0x00' function='0x1'/></source></hostdev>"
                PCI_HOSTDEV("<address bus='0x0e' slot='0x00' function='0x0'/>"));
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, 0);
        assert_int_equal(p.n, 3);
        assert_false(p.addrs[0].managed);
        assert_false(p.addrs[1].managed);
        assert_true(p.addrs[2].managed);
        parsed_free(&p);
}

static void test_several_hostdevs_in_document_order(void **state) {
        static const char xml[] = DOMAIN(
                PCI_HOSTDEV("<address domain='0x0000' bus='0x08' slot='0x00' function='0x1'/>")
                "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source></hostdev>"
                PCI_HOSTDEV("<address domain='0x0001' bus='0xff' slot='0x1f' function='0x7'/>")
                PCI_HOSTDEV("<address domain='0x0000' bus='0x0d' slot='0x00' function='0x0'/>"));
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, 0);
        assert_null(p.error);
        assert_int_equal(p.n, 3);
        assert_addr(&p.addrs[0].addr, 0, 0x08, 0, 1);
        assert_addr(&p.addrs[1].addr, 1, 0xff, 0x1f, 7);
        assert_addr(&p.addrs[2].addr, 0, 0x0d, 0, 0);
        parsed_free(&p);
}

static void test_usb_and_mdev_hostdevs_ignored(void **state) {
        static const char xml[] = DOMAIN(
                "<hostdev mode='subsystem' type='usb' managed='yes'>"
                "<source><address bus='1' device='4'/></source></hostdev>"
                "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>"
                "<source><address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev>"
                "<hostdev mode='subsystem' type='scsi'>"
                "<source><adapter name='scsi_host0'/><address bus='0' target='0' unit='0'/></source></hostdev>");
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, 0);
        assert_null(p.error);
        assert_int_equal(p.n, 0);
        assert_non_null(p.addrs);      /* "a malloc'd array (possibly empty)" */
        parsed_free(&p);
}

static void test_no_hostdevs(void **state) {
        static const char xml[] = DOMAIN("<emulator>/usr/bin/qemu-system-x86_64</emulator>");
        static const char no_devices[] = "<domain type='qemu'><name>tiny</name></domain>";
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, 0);
        assert_null(p.error);
        assert_int_equal(p.n, 0);
        parsed_free(&p);

        p = parse(no_devices, strlen(no_devices));
        assert_int_equal(p.r, 0);
        assert_int_equal(p.n, 0);
        parsed_free(&p);
}

/* Only the first len bytes count: stdin is read into a buffer that is not NUL-terminated. */
static void test_length_is_honoured(void **state) {
        char buf[sizeof(origin_xml) + 16];
        struct parsed p;

        memcpy(buf, origin_xml, strlen(origin_xml));
        memset(buf + strlen(origin_xml), '<', sizeof(buf) - strlen(origin_xml));
        p = parse(buf, strlen(origin_xml));
        assert_int_equal(p.r, 0);
        assert_int_equal(p.n, 2);
        parsed_free(&p);
}

struct attr_case {
        const char *name;
        const char *address;
        struct pci_addr want;
};

/* libvirt writes 0x hex; hand-written XML has decimal and omits the domain. */
static const struct attr_case attr_cases[] = {
        { "hex as libvirt writes it", "<address domain='0x0000' bus='0x0d' slot='0x00' function='0x1'/>", { 0, 0x0d, 0, 1 } },
        { "decimal", "<address domain='0' bus='13' slot='0' function='1'/>", { 0, 13, 0, 1 } },
        { "decimal bus 16 is not hex 0x16", "<address domain='0' bus='16' slot='2' function='0'/>", { 0, 16, 2, 0 } },
        { "upper-case hex", "<address domain='0x0000' bus='0X0D' slot='0x1F' function='0x7'/>", { 0, 0x0d, 0x1f, 7 } },
        { "no domain attribute", "<address bus='0x0d' slot='0x00' function='0x0'/>", { 0, 0x0d, 0, 0 } },
        { "extra type attribute", "<address type='pci' domain='0x0000' bus='0x08' slot='0x00' function='0x0'/>", { 0, 8, 0, 0 } },
        { "largest values", "<address domain='0xffff' bus='0xff' slot='0x1f' function='0x7'/>", { 0xffff, 0xff, 0x1f, 7 } },
};

static void test_attribute_forms(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(attr_cases); i++) {
                const struct attr_case *c = &attr_cases[i];
                char xml[512];
                struct parsed p;

                snprintf(xml, sizeof(xml), DOMAIN(PCI_HOSTDEV("%s")), c->address);
                print_message("case: %s\n", c->name);
                p = parse(xml, strlen(xml));
                assert_int_equal(p.r, 0);
                assert_null(p.error);
                assert_int_equal(p.n, 1);
                assert_addr(&p.addrs[0].addr, c->want.domain, c->want.bus, c->want.slot, c->want.func);
                parsed_free(&p);
        }
}

/* A source address that cannot name a PCI function is an error, not a silent skip: the VM might
 * pass the GPU through and the hook would then leave it on the host. */
static const struct bad_case { const char *name, *address; } bad_attr_cases[] = {
        { "missing bus", "<address domain='0x0000' slot='0x00' function='0x0'/>" },
        { "missing slot", "<address domain='0x0000' bus='0x0d' function='0x0'/>" },
        { "missing function", "<address domain='0x0000' bus='0x0d' slot='0x00'/>" },
        { "function 8", "<address domain='0x0000' bus='0x0d' slot='0x00' function='0x8'/>" },
        { "slot 0x20", "<address domain='0x0000' bus='0x0d' slot='0x20' function='0x0'/>" },
        { "bus 0x100", "<address domain='0x0000' bus='0x100' slot='0x00' function='0x0'/>" },
        { "domain 0x10000", "<address domain='0x10000' bus='0x0d' slot='0x00' function='0x0'/>" },
        { "empty bus", "<address domain='0x0000' bus='' slot='0x00' function='0x0'/>" },
        { "trailing garbage", "<address domain='0x0000' bus='0x0dz' slot='0x00' function='0x0'/>" },
        { "not a number", "<address domain='0x0000' bus='thirteen' slot='0x00' function='0x0'/>" },
        { "empty domain", "<address domain='' bus='0x0d' slot='0x00' function='0x0'/>" },
        { "negative", "<address domain='0x0000' bus='-1' slot='0x00' function='0x0'/>" },
};

static void test_bad_source_address(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_attr_cases); i++) {
                const struct bad_case *c = &bad_attr_cases[i];
                char xml[512];
                struct parsed p;

                /* Line 2, so that the message's line number is checked too. */
                snprintf(xml, sizeof(xml), "<domain type='kvm'><devices>\n" PCI_HOSTDEV("%s") "</devices></domain>",
                         c->address);
                print_message("case: %s\n", c->name);
                p = parse(xml, strlen(xml));
                assert_int_equal(p.r, -EINVAL);
                assert_non_null(p.error);
                assert_string_equal(p.error, "domain XML line 2: <hostdev type='pci'> has a bad source address");
                parsed_free(&p);
        }
}

static void test_empty_input(void **state) {
        struct parsed p = parse("", 0);

        assert_int_equal(p.r, -EINVAL);
        assert_string_equal(p.error, "no domain XML on standard input");
        parsed_free(&p);

        /* Whitespace only is not empty for the length check, but it is no document either. */
        p = parse("  \n", 3);
        assert_int_equal(p.r, -EINVAL);
        assert_non_null(p.error);
        assert_int_equal(strncmp(p.error, "malformed domain XML: ", 22), 0);
        parsed_free(&p);
}

static void test_malformed(void **state) {
        static const char *const cases[] = {
                "<domain><devices><hostdev type='pci'></devices></domain>",    /* mismatched tag */
                "<domain type='kvm'>\n<name>win10</name>\n",                  /* truncated */
                "not xml at all",
                "<domain a='1' a='2'/>",                                       /* duplicate attribute */
                "<domain></domain><domain></domain>",                          /* two roots */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct parsed p = parse(cases[i], strlen(cases[i]));

                print_message("case: %s\n", cases[i]);
                assert_int_equal(p.r, -EINVAL);
                assert_non_null(p.error);
                /* One clear line: the prefix, a line number, libxml2's reason, no newline. */
                assert_int_equal(strncmp(p.error, "malformed domain XML: line ", 27), 0);
                assert_null(strchr(p.error, '\n'));
                assert_true(strlen(p.error) > strlen("malformed domain XML: line 1: "));
                parsed_free(&p);
        }
}

static void test_malformed_names_the_line(void **state) {
        /* An unquoted attribute on line 3: libvirt users edit XML by hand with virsh edit. */
        static const char xml[] = "<domain>\n<devices>\n<hostdev type=pci>\n</devices>\n</domain>\n";
        static const char not_xml[] = "not xml at all";
        static const char mismatched[] = "<domain>\n<devices>\n<hostdev type='pci'>\n</devices>\n</domain>\n";
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, -EINVAL);
        assert_non_null(p.error);
        print_message("error: %s\n", p.error);
        assert_int_equal(strncmp(p.error, "malformed domain XML: line 3: ", 30), 0);
        parsed_free(&p);

        p = parse(not_xml, strlen(not_xml));
        assert_int_equal(p.r, -EINVAL);
        assert_string_equal(p.error, "malformed domain XML: line 1: Start tag expected, '<' not found");
        parsed_free(&p);

        /* The first error is the one to fix, not the parser giving up at the end. */
        p = parse(mismatched, strlen(mismatched));
        assert_int_equal(p.r, -EINVAL);
        assert_string_equal(p.error, "malformed domain XML: line 4: Opening and ending tag mismatch: "
                                     "hostdev line 3 and devices");
        parsed_free(&p);
}

static void test_not_a_domain(void **state) {
        static const char *const cases[] = {
                "<network><name>default</name></network>",
                /* A hostdev outside <domain> must not be taken for one. */
                "<devices><hostdev type='pci'><source><address domain='0' bus='13' slot='0' function='0'/></source></hostdev></devices>",
                "<Domain><devices/></Domain>",
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct parsed p = parse(cases[i], strlen(cases[i]));

                print_message("case: %s\n", cases[i]);
                assert_int_equal(p.r, -EINVAL);
                assert_string_equal(p.error, "malformed domain XML: the root element is not <domain>");
                parsed_free(&p);
        }
}

/* The hook parses stdin as root: an external entity must not be fetched or read. */
static void test_external_entity_not_expanded(void **state) {
        static const char xml[] =
                "<?xml version='1.0'?>\n"
                "<!DOCTYPE domain [<!ENTITY bus SYSTEM 'file:///etc/hostname'>]>\n"
                "<domain><devices>" PCI_HOSTDEV("<address domain='0' bus='&bus;' slot='0' function='0'/>")
                "</devices></domain>";
        struct parsed p = parse(xml, strlen(xml));

        /* Either refused outright or the attribute is not a number: never a parsed address. */
        assert_int_not_equal(p.r, 0);
        assert_non_null(p.error);
        parsed_free(&p);
}

/* libvirt never writes a DOCTYPE; one declaring entities cost seconds to hours of parsing (the
 * fuzzer's find, in tests/fuzz/corpus/domain/timeout-entity-errors.xml): refused before its
 * internal subset is read, with a message saying why. */
static void test_doctype_refused(void **state) {
        static const char *const cases[] = {
                "<!DOCTYPE domain>\n<domain><devices/></domain>",
                /* Eight levels of ten references to an undeclared entity: 10^8 errors. */
                "<?xml version='1.0'?>\n<!DOCTYPE domain [\n"
                "<!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>\n<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>\n"
                "<!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>\n<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'>\n"
                "<!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>\n<!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'>\n"
                "<!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'>\n<!ENTITY i '&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;'>\n"
                "]>\n<domain><devices>" PCI_HOSTDEV("<address bus='&i;' slot='0' function='0'/>")
                "</devices></domain>",
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct parsed p = parse(cases[i], strlen(cases[i]));

                print_message("case %zu\n", i);
                assert_int_equal(p.r, -EINVAL);
                assert_string_equal(p.error, i == 0 ?
                        "malformed domain XML: line 1: a document type declaration (<!DOCTYPE), which libvirt never writes" :
                        "malformed domain XML: line 2: a document type declaration (<!DOCTYPE), which libvirt never writes");
                parsed_free(&p);
        }
}

/* Hostdevs nested elsewhere (a hostdev in <metadata>) are not the domain's devices. */
static void test_only_devices_hostdevs(void **state) {
        static const char xml[] =
                "<domain><metadata><x:stuff xmlns:x='urn:x'><hostdev type='pci'><source>"
                "<address domain='0' bus='13' slot='0' function='0'/></source></hostdev></x:stuff></metadata>"
                "<devices/></domain>";
        struct parsed p = parse(xml, strlen(xml));

        assert_int_equal(p.r, 0);
        assert_int_equal(p.n, 0);
        parsed_free(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_origin_domain),
                cmocka_unit_test(test_several_hostdevs_in_document_order),
                cmocka_unit_test(test_managed_read_from_the_hostdev),
                cmocka_unit_test(test_usb_and_mdev_hostdevs_ignored),
                cmocka_unit_test(test_no_hostdevs),
                cmocka_unit_test(test_length_is_honoured),
                cmocka_unit_test(test_attribute_forms),
                cmocka_unit_test(test_bad_source_address),
                cmocka_unit_test(test_empty_input),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_malformed_names_the_line),
                cmocka_unit_test(test_not_a_domain),
                cmocka_unit_test(test_external_entity_not_expanded),
                cmocka_unit_test(test_doctype_refused),
                cmocka_unit_test(test_only_devices_hostdevs),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
