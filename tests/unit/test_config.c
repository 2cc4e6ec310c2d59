/* config.c: both kvm.conf formats, every key, every error with its line, the owner check. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "stderr-capture.h"

#include "config.h"

static char dir[] = "/tmp/test_config.XXXXXX";
static char path[sizeof(dir) + 32];
static char messages[8192];     /* what the last load wrote to stderr */

static void write_conf(const char *text) {
        FILE *f;

        snprintf(path, sizeof(path), "%s/kvm.conf", dir);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(chmod(path, 0644), 0);
}

/* log.c writes "qemu-hook: MESSAGE" to stderr: catch it in a file for the duration of a load. */
static int load(const char *p, bool check_owner, struct config *c) {
        struct capture cap = capture_start();
        int r;

        r = config_load(p, check_owner, c);
        capture_end(&cap, messages, sizeof(messages));
        return r;
}

static int load_text(const char *text, struct config *c) {
        write_conf(text);
        return load(path, false, c);
}

static size_t count(const char *haystack, const char *needle) {
        size_t n = 0;

        for (const char *s = haystack; (s = strstr(s, needle)); s += strlen(needle))
                n++;
        return n;
}

static void assert_addr(const struct pci_addr *a, const char *expected) {
        char buf[PCI_ADDR_LEN];

        assert_string_equal(pci_addr_format(a, buf), expected);
}

static void assert_units(const struct config *c, const char *const *expected) {
        size_t i;

        for (i = 0; expected[i]; i++) {
                assert_non_null(c->user_units[i]);
                assert_string_equal(c->user_units[i], expected[i]);
        }
        assert_null(c->user_units[i]);
}

/* Asserts that text fails with exactly one message, which contains "kvm.conf:" expected. */
static void assert_error(const char *text, const char *expected) {
        struct config c;
        char want[512];

        snprintf(want, sizeof(want), "%s/kvm.conf%s", dir, expected);
        int r = load_text(text, &c);

        if (r != -EINVAL || !strstr(messages, want))
                fail_msg("%s\nreturned %d, expected \"%s\" in:\n%s", text, r, want, messages);
        assert_int_equal(count(messages, "qemu-hook: "), 1);
        /* config_load freed it */
        assert_null(c.path);
        assert_int_equal(c.n_gpu, 0);
        assert_null(c.user_units[0]);
}

static const char *const pipewire[] = {
        "pipewire.socket", "pipewire.service", "pipewire-pulse.socket", "pipewire-pulse.service", NULL,
};
static const char *const pipewire_wireplumber[] = {
        "pipewire.socket", "pipewire.service", "pipewire-pulse.socket", "pipewire-pulse.service",
        "wireplumber.service", NULL,
};

/* As the original README has it: every value double-quoted, comments, and the user's own
 * variables, which bash did not mind. */
static void test_original(void **state) {
        struct config c;

        assert_int_equal(load_text("## Virtual Machine\n"
                                   "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\n"
                                   "VIRSH_GPU_AUDIO=\"0000:0d:00.1\"\n"
                                   "VIRSH_SECONDARY_GPU_VIDEO=\"0000:08:00.0\"\n"
                                   "VIRSH_SECONDARY_GPU_AUDIO=\"0000:08:00.1\"\n"
                                   "\n"
                                   "# the desktop user\n"
                                   "VIRSH_USER=\"liss\"\n"
                                   "VIRSH_USER_DBUS_ADDR=\"unix:path=/run/user/1000/bus\"\n"
                                   "MY_OWN_VARIABLE=\"whatever\"\n", &c), 0);
        assert_non_null(strstr(messages, "kvm.conf:10: MY_OWN_VARIABLE: unknown key, ignored\n"));
        assert_int_equal(count(messages, "qemu-hook: "), 1);
        assert_non_null(strstr(c.path, "/kvm.conf"));
        assert_true(c.original);
        assert_int_equal(c.n_gpu, 2);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        assert_addr(&c.gpu[1], "0000:0d:00.1");
        assert_int_equal(c.n_secondary, 2);
        assert_addr(&c.secondary[0], "0000:08:00.0");
        assert_addr(&c.secondary[1], "0000:08:00.1");
        assert_null(c.secondary_driver);
        assert_string_equal(c.park_driver, "vfio-pci");
        assert_string_equal(c.user, "liss");
        assert_string_equal(c.user_bus, "unix:path=/run/user/1000/bus");
        assert_string_equal(c.display_manager, "auto");
        assert_units(&c, pipewire);
        assert_null(c.host_cpus);
        assert_int_equal(c.timeout_ms, 20000);
        assert_true(c.vtconsoles);
        assert_true(c.framebuffer);
        assert_int_equal(c.n_vms, 0);
        assert_null(config_vm(&c, "win10"));
        config_free(&c);
}

static void test_original_unknown_key_warned(void **state) {
        struct config c;

        assert_int_equal(load_text("VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\n"
                                   "# mine\n"
                                   "MY_OWN_VARIABLE=\"whatever\"\n"
                                   "VIRSH_GPU_VIDOE=\"0000:0d:00.1\"\n", &c), 0);
        assert_non_null(strstr(messages, "kvm.conf:3: MY_OWN_VARIABLE: unknown key, ignored\n"));
        assert_non_null(strstr(messages, "kvm.conf:4: VIRSH_GPU_VIDOE: unknown key, ignored\n"));
        assert_int_equal(count(messages, "qemu-hook: "), 2);
        assert_int_equal(c.n_gpu, 1);
        assert_int_equal(c.n_secondary, 0);
        assert_null(c.user);
        config_free(&c);
}

/* One revision spells the GPU keys VIRSH_PRIMARY_GPU_*; the rest is what bash also accepts. */
static void test_original_variants(void **state) {
        struct config c;

        assert_int_equal(load_text("VIRSH_PRIMARY_GPU_VIDEO='0000:0d:00.0'\n"
                                   "  export VIRSH_PRIMARY_GPU_AUDIO=0000:0d:00.1   # HDMI audio\n"
                                   "VIRSH_SECONDARY_GPU_VIDEO=\"0000:08:00.0\" # R5 240\n"
                                   "VIRSH_SECONDARY_GPU_AUDIO=\"\"\n"
                                   "VIRSH_USER=\n"
                                   "VIRSH_USER_DBUS_ADDR=\"\"\n", &c), 0);
        assert_string_equal(messages, "");
        assert_true(c.original);
        assert_int_equal(c.n_gpu, 2);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        assert_addr(&c.gpu[1], "0000:0d:00.1");
        assert_int_equal(c.n_secondary, 1);
        assert_addr(&c.secondary[0], "0000:08:00.0");
        assert_null(c.user);
        assert_null(c.user_bus);
        config_free(&c);

        /* Both spellings: the later assignment wins, as when bash sources the file. */
        assert_int_equal(load_text("VIRSH_GPU_VIDEO=\"0000:0a:00.0\"\n"
                                   "VIRSH_PRIMARY_GPU_VIDEO=\"0000:0D:00.0\"\n", &c), 0);
        assert_int_equal(c.n_gpu, 1);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        config_free(&c);
}

static void test_native(void **state) {
        struct config c;

        assert_int_equal(load_text("# every key\n"
                                   "[gpu]\n"
                                   "address = 0000:0d:00.0, 0000:0e:00.0\n"
                                   "address = 0000:0f:00.0\n"
                                   "\n"
                                   "[secondary]\n"
                                   "address = 0000:08:00.0 0000:08:00.1\n"
                                   "driver = radeon\n"
                                   "park_driver = pci-stub\n"
                                   "\n"
                                   "[desktop]\n"
                                   "user = \"liss\"\n"
                                   "bus = unix:path=/run/user/1000/bus\n"
                                   "display_manager = sddm.service\n"
                                   "units = pipewire.service wireplumber.service\n"
                                   "  units = scream@liss.service ; indentation means nothing\n"
                                   "\n"
                                   "[host]\n"
                                   "cpus = 0-3,8,10-11\n"
                                   "timeout = 5s\n"
                                   "script_timeout = 2min\n"
                                   "vtconsoles = no\n"
                                   "framebuffer = False\n", &c), 0);
        assert_string_equal(messages, "");
        assert_false(c.original);
        assert_int_equal(c.n_gpu, 3);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        assert_addr(&c.gpu[1], "0000:0e:00.0");
        assert_addr(&c.gpu[2], "0000:0f:00.0");
        assert_int_equal(c.n_secondary, 2);
        assert_addr(&c.secondary[0], "0000:08:00.0");
        assert_addr(&c.secondary[1], "0000:08:00.1");
        assert_string_equal(c.secondary_driver, "radeon");
        assert_string_equal(c.park_driver, "pci-stub");
        assert_string_equal(c.user, "liss");
        assert_string_equal(c.user_bus, "unix:path=/run/user/1000/bus");
        assert_string_equal(c.display_manager, "sddm.service");
        assert_units(&c, (const char *const[]) { "pipewire.service", "wireplumber.service", "scream@liss.service", NULL });
        assert_string_equal(c.host_cpus, "0-3,8,10-11");
        assert_int_equal(c.timeout_ms, 5000);
        assert_int_equal(c.script_timeout_ms, 120000);
        assert_false(c.vtconsoles);
        assert_false(c.framebuffer);
        assert_int_equal(c.n_vms, 0);
        config_free(&c);

        /* Only what is required: the native defaults. */
        assert_int_equal(load_text("[gpu]\naddress=0000:0d:00.0\n", &c), 0);
        assert_false(c.original);
        assert_int_equal(c.n_gpu, 1);
        assert_int_equal(c.n_secondary, 0);
        assert_null(c.secondary_driver);
        assert_string_equal(c.park_driver, "vfio-pci");
        assert_null(c.user);
        assert_null(c.user_bus);
        assert_string_equal(c.display_manager, "auto");
        assert_units(&c, pipewire_wireplumber);
        assert_null(c.host_cpus);
        assert_int_equal(c.timeout_ms, 20000);
        assert_true(c.vtconsoles);
        assert_true(c.framebuffer);
        config_free(&c);
}

/* An empty value resets a key: lists become empty, anything else takes its default. */
static void test_native_empty_values(void **state) {
        struct config c;

        assert_int_equal(load_text("[gpu]\n"
                                   "address = 0000:01:00.0\n"
                                   "address =\n"
                                   "address = 0000:0d:00.0\n"
                                   "[secondary]\n"
                                   "driver = radeon\n"
                                   "driver =\n"
                                   "park_driver = pci-stub\n"
                                   "park_driver = \"\"\n"
                                   "[desktop]\n"
                                   "user = liss\n"
                                   "user =\n"
                                   "display_manager = none\n"
                                   "units =\n"
                                   "[host]\n"
                                   "cpus = 0\n"
                                   "cpus =\n"
                                   "timeout = 1ms\n"
                                   "timeout =\n"
                                   "vtconsoles = off\n"
                                   "vtconsoles =\n", &c), 0);
        assert_int_equal(c.n_gpu, 1);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        assert_null(c.secondary_driver);
        assert_string_equal(c.park_driver, "vfio-pci");
        assert_null(c.user);
        assert_string_equal(c.display_manager, "none");
        assert_null(c.user_units[0]);
        assert_null(c.host_cpus);
        assert_int_equal(c.timeout_ms, 20000);
        assert_true(c.vtconsoles);
        config_free(&c);
}

static void test_timeouts(void **state) {
        static const struct { const char *value; unsigned ms; } ok[] = {
                { "1", 1 }, { "500", 500 }, { "500ms", 500 }, { "20s", 20000 }, { "10min", 600000 },
                { "600000", 600000 },
        };
        struct config c;
        char text[128];

        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                snprintf(text, sizeof(text), "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout=%s\n", ok[i].value);
                assert_int_equal(load_text(text, &c), 0);
                assert_int_equal(c.timeout_ms, ok[i].ms);
                config_free(&c);
        }
}

static void test_vms(void **state) {
        struct config c;
        const struct vm_config *v;

        assert_int_equal(load_text("[gpu]\n"
                                   "address = 0000:0d:00.0\n"
                                   "[host]\n"
                                   "cpus = 0-11\n"
                                   "[vm win10]\n"
                                   "handle = yes\n"
                                   "cpus = 0,1,6,7\n"
                                   "timeout = 30s\n"
                                   "[vm \"linux guest\"]\n"
                                   "handle = no\n"
                                   "[vm  other]\n"
                                   "handle = auto\n"
                                   "[vm win10]\n"
                                   "timeout = 45000\n", &c), 0);
        assert_string_equal(messages, "");
        assert_int_equal(c.n_vms, 3);
        v = config_vm(&c, "win10");
        assert_non_null(v);
        assert_string_equal(v->name, "win10");
        assert_int_equal(v->handle, 1);
        assert_string_equal(v->host_cpus, "0,1,6,7");
        assert_int_equal(v->timeout_ms, 45000);     /* the section reopened: merged, the later value */
        v = config_vm(&c, "linux guest");
        assert_non_null(v);
        assert_int_equal(v->handle, 0);
        assert_null(v->host_cpus);
        assert_int_equal(v->timeout_ms, 0);
        v = config_vm(&c, "other");
        assert_non_null(v);
        assert_int_equal(v->handle, -1);
        assert_null(config_vm(&c, "win"));
        assert_null(config_vm(&c, NULL));
        assert_string_equal(c.host_cpus, "0-11");
        config_free(&c);
}

static void test_vm_tuning(void **state) {
        static const struct { const char *value; unsigned long kb; } sizes[] = {
                { "64M", 65536 }, { "8G", 8388608 }, { "512MiB", 524288 }, { "1GB", 1048576 },
                { "2048K", 2048 }, { "1t", 1073741824 }, { "64T", 68719476736UL },
        };
        struct config c;
        const struct vm_config *v;
        char text[256];

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                snprintf(text, sizeof(text), "[gpu]\naddress=0000:0d:00.0\n[vm w]\nhugepages = %s\n", sizes[i].value);
                assert_int_equal(load_text(text, &c), 0);
                assert_int_equal(config_vm(&c, "w")->hugepages_kb, sizes[i].kb);
                assert_int_equal(config_vm(&c, "w")->hugepage_kb, 0);   /* the default: 2 MiB */
                assert_null(config_vm(&c, "w")->cpu_governor);
                config_free(&c);
        }
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\n"
                                   "[vm win10]\nhugepages = 16G\nhugepage_size = 1G\ncpu_governor = performance\n"
                                   "[vm other]\nhugepages = 1G\nhugepage_size = 2M\nhugepage_size =\n"
                                   "cpu_governor = schedutil\ncpu_governor =\n", &c), 0);
        assert_string_equal(messages, "");
        v = config_vm(&c, "win10");
        assert_int_equal(v->hugepages_kb, 16UL << 20);
        assert_int_equal(v->hugepage_kb, 1048576);
        assert_string_equal(v->cpu_governor, "performance");
        v = config_vm(&c, "other");
        assert_int_equal(v->hugepages_kb, 1UL << 20);
        assert_int_equal(v->hugepage_kb, 0);            /* emptied: the default again */
        assert_null(v->cpu_governor);
        config_free(&c);
}

#define X28 "# twenty-eight bytes, this. "
#define X196 X28 X28 X28 X28 X28 X28 X28

static void test_errors(void **state) {
        static const struct { const char *text, *message; } cases[] = {
                /* the original format */
                { "# c\n\n\n\n\n\nVIRSH_GPU_VIDEO=\"0000:0d:00\"\n",
                  ":7: VIRSH_GPU_VIDEO: \"0000:0d:00\" is not a PCI address (expected DDDD:BB:SS.F)\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_PRIMARY_GPU_AUDIO=\"0d:00.1\"\n",
                  ":2: VIRSH_PRIMARY_GPU_AUDIO: \"0d:00.1\" is not a PCI address (expected DDDD:BB:SS.F)\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_SECONDARY_GPU_VIDEO=0000:08:00.8\n",
                  ":2: VIRSH_SECONDARY_GPU_VIDEO: \"0000:08:00.8\" is not a PCI address" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_SECONDARY_GPU_AUDIO=\"0000:08:00.1\n",
                  ":2: VIRSH_SECONDARY_GPU_AUDIO: \"0000:08:00.1: missing closing quote\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"x\n",
                  ":1: VIRSH_GPU_VIDEO: \"0000:0d:00.0\"x: unexpected text after the closing quote\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_USER=\"1000\"\n",
                  ":2: VIRSH_USER: \"1000\" is not a user name (expected a login name like liss)\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_USER_DBUS_ADDR=\"tcp:host=x,port=1\"\n",
                  ":2: VIRSH_USER_DBUS_ADDR: \"tcp:host=x,port=1\" is not a local bus address (expected unix:path=/run/user/UID/bus)\n" },
                { "VIRSH_GPU_AUDIO=\"0000:0d:00.1\"\nVIRSH_USER=\"liss\"\n",
                  ": VIRSH_GPU_VIDEO is not set (expected the PCI address of the GPU to pass through" },
                { "VIRSH_GPU_VIDEO=\"\"\n", ": VIRSH_GPU_VIDEO is not set" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_GPU_AUDIO=\"0000:0d:00.0\"\n",
                  ":2: VIRSH_GPU_AUDIO: 0000:0d:00.0 is listed twice (also on line 1)\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_GPU_AUDIO=\"0000:0d:00.1\"\nVIRSH_SECONDARY_GPU_VIDEO=\"0000:0d:00.2\"\n",
                  ":3: VIRSH_SECONDARY_GPU_VIDEO: 0000:0d:00.2 is in the slot of the GPU's 0000:0d:00.0 (VIRSH_GPU_VIDEO, line 1) (expected a different card)\n" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\n\n[gpu]\naddress=0000:0d:00.0\n",
                  ":3: [gpu]: a section after top-level KEY=\"value\" lines (line 1) of the original format (expected one format" },
                { "VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\nVIRSH_USER\n", ":2: syntax error (expected KEY=value, [section] or a comment)\n" },

                /* the native format */
                { "[gpu]\naddress = 0000:0d:00.0\nreset_method = reset\n",
                  ":3: [gpu] reset_method: \"reset\" is not a reset method (expected auto, or one or more of "
                  "device_specific, acpi, flr, af_flr, pm, bus, cxl_bus)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\nreset_method = bus flr bus\n",
                  ":3: [gpu] reset_method: bus is listed twice\n" },
                { "[gpu]\naddress = 0000:0d:00.0\nreset_method = auto flr\n",
                  ":3: [gpu] reset_method: \"auto\" is not a reset method" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0=8G\n",
                  ":4: [vm w] bar_sizes: \"0=8G\" is not INDEX:SIZE (expected a BAR index 0-5, a colon and a size "
                  "like 256M or 8G)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 6:8G\n",
                  ":4: [vm w] bar_sizes: \"6:8G\" is not INDEX:SIZE" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:8\n",
                  ":4: [vm w] bar_sizes: \"0:8\": no unit (expected a size like 256M, 8G or 1T)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:8K\n", ":4: [vm w] bar_sizes: \"0:8K\": no unit" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:8Gx\n", ":4: [vm w] bar_sizes: \"0:8Gx\": no unit" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:6G\n",
                  ":4: [vm w] bar_sizes: \"0:6G\" is not a power of two from 1M (the sizes a resizable BAR can have)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:0M\n", ":4: [vm w] bar_sizes: \"0:0M\" is not a power of two" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:16777216T\n",
                  ":4: [vm w] bar_sizes: \"0:16777216T\" is not a power of two" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm w]\nbar_sizes = 0:8G 2:256M 0:4G\n",
                  ":4: [vm w] bar_sizes: BAR 0 is listed twice\n" },
                { "[gpu]\naddress = 0000:0d:00.0 nonsense\n",
                  ":2: [gpu] address: \"nonsense\" is not a PCI address (expected DDDD:BB:SS.F)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\naddress = 0000:0d:00.1, 0000:0d:00.0\n",
                  ":3: [gpu] address: 0000:0d:00.0 is listed twice (also on line 2)\n" },
                { "[gpu]\naddress = 1:0.0 2:0.0 3:0.0 4:0.0 5:0.0 6:0.0 7:0.0 8:0.0 9:0.0\n",
                  ":2: [gpu] address: \"1:0.0\" is not a PCI address" },
                { "[gpu]\naddress = 0000:01:00.0 0000:02:00.0 0000:03:00.0 0000:04:00.0\n"
                  "address = 0000:05:00.0 0000:06:00.0 0000:07:00.0 0000:08:00.0 0000:09:00.0\n",
                  ":3: [gpu] address: more than 8 addresses\n" },
                { "[secondary]\naddress = 0000:0d:00.1\n[gpu]\naddress = 0000:0d:00.0\n",
                  ":2: [secondary] address: 0000:0d:00.1 is in the slot of the GPU's 0000:0d:00.0 ([gpu] address, line 4) (expected a different card)\n" },
                { "[secondary]\naddress = 0000:08:00.0\n",
                  ": [gpu] address is not set (expected the PCI address of the GPU to pass through)\n" },
                { "[gpu]\naddress =\n", ": [gpu] address is not set" },
                { "", ": no GPU configured (expected [gpu] address, or VIRSH_GPU_VIDEO in the original format)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[secondary]\ndriver = radeon/x\n",
                  ":4: [secondary] driver: \"radeon/x\" is not a driver name (expected a name like amdgpu or vfio-pci)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[secondary]\npark_driver = vfio pci\n",
                  ":4: [secondary] park_driver: \"vfio pci\" is not a driver name" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nuser = -liss\n",
                  ":4: [desktop] user: \"-liss\" is not a user name (expected a login name like liss)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nbus = /run/user/1000/bus\n",
                  ":4: [desktop] bus: \"/run/user/1000/bus\" is not a local bus address (expected unix:path=/run/user/UID/bus)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\ndisplay_manager = gdm\n",
                  ":4: [desktop] display_manager: \"gdm\" is not a display manager (expected auto, none or a unit name like gdm.service)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\ndisplay_manager = gdm.socket\n",
                  ":4: [desktop] display_manager: \"gdm.socket\" is not a display manager" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\ndisplay_manager = g$dm.service\n",
                  ":4: [desktop] display_manager: \"g$dm.service\" is not a display manager" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nunits = pipewire.service pipewire\n",
                  ":4: [desktop] units: \"pipewire\" is not a unit name (expected names like pipewire.service or pipewire.socket)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nunits = pipewire.sevice\n",
                  ":4: [desktop] units: \"pipewire.sevice\" is not a unit name" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nunits = scream@.service\n",
                  ":4: [desktop] units: \"scream@.service\" is not a unit name" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nunits = a.service\nunits = b.service a.service\n",
                  ":5: [desktop] units: a.service is listed twice\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\n"
                  "units = 1.service 2.service 3.service 4.service 5.service 6.service 7.service 8.service\n"
                  "units = 9.service 10.service 11.service 12.service 13.service 14.service 15.service 16.service\n"
                  "units = 17.service\n",
                  ":6: [desktop] units: more than 16 units\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ncpus = 0-3, 8\n",
                  ":4: [host] cpus: \"0-3, 8\" is not a CPU list (expected CPU numbers and ranges like 0-3,8,10-11)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ncpus = 3-1\n", ":4: [host] cpus: \"3-1\" is not a CPU list" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ncpus = 0-\n", ":4: [host] cpus: \"0-\" is not a CPU list" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ncpus = 0,,1\n", ":4: [host] cpus: \"0,,1\" is not a CPU list" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ncpus = 99999\n", ":4: [host] cpus: \"99999\" is not a CPU list" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = 5h\n",
                  ":4: [host] timeout: \"5h\" is not a duration (expected milliseconds, or a number followed by ms, s or min)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = -5\n", ":4: [host] timeout: \"-5\" is not a duration" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = 0\n",
                  ":4: [host] timeout: \"0\" is out of range (expected 1ms to 10min)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = 11min\n", ":4: [host] timeout: \"11min\" is out of range" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\nscript_timeout = 1h\n",
                  ":4: [host] script_timeout: \"1h\" is not a duration" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = 99999999999999999999999\n",
                  ":4: [host] timeout: \"99999999999999999999999\" is out of range" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\nvtconsoles = maybe\n",
                  ":4: [host] vtconsoles: \"maybe\" is not a boolean (expected yes or no)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\nframebuffer = 2\n", ":4: [host] framebuffer: \"2\" is not a boolean" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhandle = sometimes\n",
                  ":4: [vm win10] handle: \"sometimes\" is not auto, yes or no\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\ncpus = all\n", ":4: [vm win10] cpus: \"all\" is not a CPU list" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\ntimeout = 1d\n", ":4: [vm win10] timeout: \"1d\" is not a duration" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 64\n",
                  ":4: [vm win10] hugepages: \"64\" is not a size (expected a number with its unit, like 8G or 512M)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 0M\n", ":4: [vm win10] hugepages: \"0M\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 8 G\n", ":4: [vm win10] hugepages: \"8 G\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 8Gb\n", ":4: [vm win10] hugepages: \"8Gb\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = -8G\n", ":4: [vm win10] hugepages: \"-8G\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 65T\n", ":4: [vm win10] hugepages: \"65T\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepages = 99999999999999999999999G\n",
                  ":4: [vm win10] hugepages: \"99999999999999999999999G\" is not a size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepage_size = 4M\n",
                  ":4: [vm win10] hugepage_size: \"4M\" is not a huge page size (expected 2M or 1G)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhugepage_size = huge\n",
                  ":4: [vm win10] hugepage_size: \"huge\" is not a huge page size" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\ncpu_governor = Performance\n",
                  ":4: [vm win10] cpu_governor: \"Performance\" is not a governor name (expected a name like "
                  "performance or schedutil)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\ncpu_governor = a-governor-too-long\n",
                  ":4: [vm win10] cpu_governor: \"a-governor-too-long\" is not a governor name" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\nhugepages = 1G\n", ":4: [host] hugepages: unknown key" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm win10]\nhandel = yes\n",
                  ":4: [vm win10] handel: unknown key (expected one of: handle, cpus, timeout, user_units, hugepages, "
                  "hugepage_size, cpu_governor, bar_sizes)\n" },
                { "[gpu]\naddress=0000:0d:00.0\nadress = 0000:0e:00.0\n",
                  ":3: [gpu] adress: unknown key (expected one of: address, reset_method, unload_driver)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nunit = a.service\n",
                  ":4: [desktop] unit: unknown key (expected one of: user, bus, display_manager, units, before_stop, after_start)\n" },
                { "[gpu]\naddress=0000:0d:00.0\n\n[gpus]\n",
                  ":4: [gpus]: unknown section (expected [gpu], [secondary], [desktop], [host] or [vm NAME])\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm]\nhandle=yes\n", ":3: [vm]: unknown section" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm \"\"]\nhandle=yes\n", ":3: [vm \"\"]: unknown section" },
                { "[gpu]\naddress=0000:0d:00.0\n[vm a-very-long-virtual-machine-name-of-fifty-characters]\n",
                  ":3: [vm a-very-long-virtual-machine-name-of-fifty-characters]: section name longer than 49 characters\n" },
                { "[gpu]\naddress=0000:0d:00.0\n[desktop]\nuser = 'liss\n",
                  ":4: [desktop] user: 'liss: missing closing quote\n" },
                /* syntax errors reported by inih, and the first of several errors wins */
                { "[gpu]\naddress=0000:0d:00.0\n[desktop\n", ":3: syntax error (expected KEY=value, [section] or a comment)\n" },
                { "[gpu]\naddress=0000:0d:00.0\njust words\n[host]\ntimeout = 0\n", ":3: syntax error" },
                { "[gpu]\naddress=0000:0d:00.0\n[host]\ntimeout = 0\njust words\n", ":4: [host] timeout: \"0\" is out of range" },
                /* inih would parse the rest of an overlong line as a line of its own */
                { "[gpu]\naddress = 0000:0d:00.0\n" X196 "x\n" X196 "xx\n", ":4: line longer than 197 characters\n" },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                assert_error(cases[i].text, cases[i].message);
}

/* Created by tests/run-units.sh in the tmpfs it mounts on /run (mode 0755, root's). */
#define PRIVATE_RUN_MARKER "/run/.qemu-hook-unit-tests"

static void assert_refused(const char *file, const char *why) {
        struct config c;
        char want[1024];

        assert_int_equal(load(file, true, &c), -EPERM);
        snprintf(want, sizeof(want), "qemu-hook: config %s: refusing it, %s\n", file, why);
        assert_string_equal(messages, want);
        assert_null(c.path);
}

/* Issue 12: [host] inhibit_sleep, [vm NAME] user_units, [desktop] before_stop / after_start. */
static void test_bus_keys(void **state) {
        static const struct { const char *text, *message; } bad[] = {
                { "[gpu]\naddress = 0000:0d:00.0\n[host]\ninhibit_sleep = maybe\n",
                  ":4: [host] inhibit_sleep: \"maybe\" is not a boolean (expected yes or no)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\nunload_driver = 2\n",
                  ":3: [gpu] unload_driver: \"2\" is not a boolean (expected yes or no)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\n[vm win10]\nuser_units = scream\n",
                  ":6: [vm win10] user_units: \"scream\" is not a unit name (expected names like scream.service)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\n[vm win10]\nuser_units = a.service a.service\n",
                  ":6: [vm win10] user_units: a.service is listed twice\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[vm win10]\nuser_units = scream.service\n",
                  ": [vm win10] user_units is set but [desktop] user is not (expected the user whose units they are)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\nbefore_stop = gnome-session-save\n",
                  ":5: [desktop] before_stop: \"gnome-session-save\" does not start with an absolute path" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\nafter_start = /bin/echo \"a b\"\n",
                  ":5: [desktop] after_start: \"/bin/echo \"a b\"\": quotes, backslashes and shell characters are not "
                  "supported (the command runs without a shell, its words split at blanks)\n" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\nafter_start = /bin/true | x\n",
                  ":5: [desktop] after_start: \"/bin/true | x\": quotes" },
                { "[gpu]\naddress = 0000:0d:00.0\n[desktop]\nbefore_stop = /bin/true\n",
                  ": [desktop] before_stop is set but [desktop] user is not (expected the user the commands run as)\n" },
        };
        char text[512];
        struct config c;
        const struct vm_config *v;

        (void) state;
        /* The defaults: an inhibitor in the native format, none in the original one. */
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\n", &c), 0);
        assert_true(c.inhibit_sleep);
        assert_false(c.unload_driver);
        assert_null(c.before_stop[0]);
        assert_null(c.after_start[0]);
        config_free(&c);
        assert_int_equal(load_text("VIRSH_GPU_VIDEO=\"0000:0d:00.0\"\n", &c), 0);
        assert_false(c.inhibit_sleep);
        config_free(&c);

        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\nunload_driver = yes\n", &c), 0);
        assert_true(c.unload_driver);
        config_free(&c);
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\nunload_driver =\n", &c), 0);
        assert_false(c.unload_driver);
        config_free(&c);
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\n[host]\ninhibit_sleep = no\n"
                                   "[desktop]\nuser = liss\n"
                                   "before_stop = /usr/bin/gnome-session-save --save  x\n"
                                   "before_stop = /bin/true\nafter_start = /usr/bin/restore\n"
                                   "[vm win10]\nuser_units = scream.service, a.socket\nuser_units = b.service\n", &c), 0);
        assert_string_equal(messages, "");
        assert_false(c.inhibit_sleep);
        assert_string_equal(c.before_stop[0], "/usr/bin/gnome-session-save --save  x");
        assert_string_equal(c.before_stop[1], "/bin/true");
        assert_null(c.before_stop[2]);
        assert_string_equal(c.after_start[0], "/usr/bin/restore");
        assert_null(c.after_start[1]);
        v = config_vm(&c, "win10");
        assert_non_null(v);
        assert_string_equal(v->user_units[0], "scream.service");
        assert_string_equal(v->user_units[1], "a.socket");
        assert_string_equal(v->user_units[2], "b.service");
        assert_null(v->user_units[3]);
        config_free(&c);

        /* An empty value empties the list. */
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\n[desktop]\nuser = liss\n"
                                   "after_start = /bin/true\nafter_start =\n"
                                   "[vm w]\nuser_units = a.service\nuser_units =\n", &c), 0);
        assert_null(c.after_start[0]);
        assert_null(config_vm(&c, "w")->user_units[0]);
        config_free(&c);

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(load_text(bad[i].text, &c), -EINVAL);
                snprintf(text, sizeof(text), "%s%s", path, bad[i].message);
                if (!strstr(messages, text))
                        fail_msg("case %zu: expected \"%s\", got \"%s\"", i, text, messages);
                config_free(&c);
        }
}

static void test_owner(void **state) {
        char safe[] = "/run/test_config.XXXXXX", file[64], link[64], why[512];
        struct config c;
        struct stat st;

        /* The file and every directory on its way (kvm.conf decides what root unbinds): our /tmp
         * is writable by all, so a file there is refused whatever its own mode, naming /tmp. */
        write_conf("[gpu]\naddress = 0000:0d:00.0\n");
        assert_int_equal(stat("/tmp", &st), 0);
        if (st.st_mode & 022) {
                snprintf(why, sizeof(why), "/tmp is writable by group or others (mode %04o; chmod go-w /tmp)",
                         (unsigned) (st.st_mode & 07777));
                assert_refused(path, why);
        }
        /* without the check (not running as root), neither matters */
        assert_int_equal(chmod(path, 0666), 0);
        assert_int_equal(load(path, false, &c), 0);
        config_free(&c);
        if (geteuid() != 0 || access(PRIVATE_RUN_MARKER, F_OK) < 0)
                skip();         /* needs root, and a path of root's to make files in */

        /* A path of root's: the file itself decides. */
        assert_non_null(mkdtemp(safe));
        assert_int_equal(chmod(safe, 0755), 0);
        snprintf(file, sizeof(file), "%s/kvm.conf", safe);
        snprintf(link, sizeof(link), "%s/link.conf", safe);
        FILE *f = fopen(file, "we");
        assert_non_null(f);
        fputs("[gpu]\naddress = 0000:0d:00.0\n", f);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(chmod(file, 0666), 0);
        snprintf(why, sizeof(why), "%s is writable by group or others (mode 0666; chmod go-w %s)", file, file);
        assert_refused(file, why);
        assert_int_equal(chmod(file, 0620), 0);
        assert_int_equal(load(file, true, &c), -EPERM);
        assert_int_equal(chmod(file, 0644), 0);
        assert_int_equal(load(file, true, &c), 0);
        assert_string_equal(messages, "");
        config_free(&c);
        assert_int_equal(chown(file, 65534, 0), 0);
        snprintf(why, sizeof(why), "%s is owned by uid 65534, not root (chown root %s)", file, file);
        assert_refused(file, why);
        assert_int_equal(chown(file, 0, 0), 0);
        /* its directory */
        assert_int_equal(chmod(safe, 0775), 0);
        snprintf(why, sizeof(why), "%s is writable by group or others (mode 0775; chmod go-w %s)", safe, safe);
        assert_refused(file, why);
        assert_int_equal(chmod(safe, 0755), 0);
        /* a link: followed, and made by root */
        assert_int_equal(symlink("kvm.conf", link), 0);
        assert_int_equal(load(link, true, &c), 0);
        assert_string_equal(c.path, link);
        config_free(&c);
        assert_int_equal(lchown(link, 65534, 65534), 0);
        snprintf(why, sizeof(why), "the symbolic link %s is owned by uid 65534, not root (chown -h root %s)", link, link);
        assert_refused(link, why);

        unlink(link);
        unlink(file);
        rmdir(safe);
}

static void test_missing_and_not_a_file(void **state) {
        struct config c;
        char missing[sizeof(path) + 16], want[512];

        snprintf(missing, sizeof(missing), "%s/nonexistent.conf", dir);
        assert_int_equal(load(missing, true, &c), -ENOENT);
        snprintf(want, sizeof(want), "qemu-hook: config %s: No such file or directory\n", missing);
        assert_string_equal(messages, want);
        assert_null(c.path);

        assert_int_equal(load(dir, false, &c), -EINVAL);
        snprintf(want, sizeof(want), "qemu-hook: config %s: not a regular file\n", dir);
        assert_string_equal(messages, want);

        /* config_free is safe on what a failed load left, and twice */
        config_free(&c);
        config_free(&c);
        config_free(NULL);
}

/* The example with the comment marks of its settings taken away: ';' (the example's values), and
 * also '#' before a key ("#key = value": the keys unset by default) when with_unset. */
static void uncomment_example(const char *example, bool with_unset) {
        FILE *in = fopen(example, "re"), *out;
        char line[256];

        assert_non_null(in);
        snprintf(path, sizeof(path), "%s/kvm.conf", dir);
        out = fopen(path, "we");
        assert_non_null(out);
        while (fgets(line, sizeof(line), in)) {
                bool value = line[0] == ';';
                bool unset = line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && strstr(line, " = ");

                fputs(value || (unset && with_unset) ? line + 1 : line, out);
        }
        fclose(in);
        assert_int_equal(fclose(out), 0);
}

/* The documented example sets nothing as it is (a copy of it is no live config), and, uncommented,
 * stays valid and says what it documents. */
static void test_example(void **state) {
        char example[4096], want[4200];
        const char *src = __FILE__, *end = strstr(src, "tests/unit/test_config.c");
        struct config c;
        const struct vm_config *v;

        assert_non_null(end);
        snprintf(example, sizeof(example), "%.*sconf/kvm.conf", (int) (end - src), src);
        assert_int_equal(load(example, false, &c), -EINVAL);
        snprintf(want, sizeof(want), "qemu-hook: %s: [gpu] address is not set "
                 "(expected the PCI address of the GPU to pass through)\n", example);
        assert_string_equal(messages, want);
        config_free(&c);

        /* The example's values (";key = value"). */
        uncomment_example(example, false);
        assert_int_equal(load(path, false, &c), 0);
        assert_string_equal(messages, "");
        assert_false(c.original);
        assert_int_equal(c.n_gpu, 1);
        assert_addr(&c.gpu[0], "0000:0d:00.0");
        assert_int_equal(c.n_secondary, 1);
        assert_addr(&c.secondary[0], "0000:08:00.0");
        assert_null(c.secondary_driver);
        assert_string_equal(c.park_driver, "vfio-pci");
        assert_string_equal(c.user, "liss");
        assert_null(c.user_bus);
        assert_string_equal(c.display_manager, "auto");
        assert_units(&c, pipewire_wireplumber);
        assert_null(c.host_cpus);
        assert_int_equal(c.timeout_ms, 20000);
        assert_int_equal(c.script_timeout_ms, 60000);
        assert_true(c.vtconsoles);
        assert_true(c.framebuffer);
        v = config_vm(&c, "win10");
        assert_non_null(v);
        assert_int_equal(v->handle, -1);
        assert_string_equal(v->host_cpus, "0,1,6,7");
        assert_int_equal(v->timeout_ms, 0);
        config_free(&c);

        /* The keys unset by default ("#key = value") are valid too. */
        uncomment_example(example, true);
        assert_int_equal(load(path, false, &c), 0);
        assert_string_equal(messages, "");
        assert_string_equal(c.secondary_driver, "radeon");
        assert_string_equal(c.user_bus, "unix:path=/run/user/1000/bus");
        assert_string_equal(c.host_cpus, "0,1,6,7");
        assert_string_equal(c.reset_method, "auto");
        v = config_vm(&c, "win10");
        assert_non_null(v);
        assert_int_equal(v->timeout_ms, 30000);
        assert_int_equal(v->bar_sizes.n, 2);
        assert_int_equal(v->bar_sizes.bar[0].index, 0);
        assert_int_equal(v->bar_sizes.bar[0].order, 13);
        assert_int_equal(v->bar_sizes.bar[1].index, 2);
        assert_int_equal(v->bar_sizes.bar[1].order, 8);
        config_free(&c);
}

/* [gpu] reset_method and [vm NAME] bar_sizes: good values. */
static void test_pci_keys(void **state) {
        struct config c;
        const struct vm_config *v;

        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\n", &c), 0);
        assert_null(c.reset_method);
        config_free(&c);
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\nreset_method = device_specific,  bus\n"
                                   "[vm win10]\nbar_sizes = 0:8G, 2:256MiB 5:1M 4:1TB\n[vm other]\ncpus = 1\n", &c), 0);
        assert_string_equal(messages, "");
        assert_string_equal(c.reset_method, "device_specific bus");
        v = config_vm(&c, "win10");
        assert_int_equal(v->bar_sizes.n, 4);
        assert_int_equal(v->bar_sizes.bar[0].order, 13);
        assert_int_equal(v->bar_sizes.bar[1].order, 8);
        assert_int_equal(v->bar_sizes.bar[2].index, 5);
        assert_int_equal(v->bar_sizes.bar[2].order, 0);
        assert_int_equal(v->bar_sizes.bar[3].order, 20);
        assert_int_equal(config_vm(&c, "other")->bar_sizes.n, 0);
        config_free(&c);
        /* An empty value: left alone again. */
        assert_int_equal(load_text("[gpu]\naddress = 0000:0d:00.0\nreset_method = flr\nreset_method =\n"
                                   "[vm w]\nbar_sizes = 0:8G\nbar_sizes =\n", &c), 0);
        assert_null(c.reset_method);
        assert_int_equal(config_vm(&c, "w")->bar_sizes.n, 0);
        config_free(&c);
}

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        unlink(path);
        return rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_original),
                cmocka_unit_test(test_original_unknown_key_warned),
                cmocka_unit_test(test_original_variants),
                cmocka_unit_test(test_native),
                cmocka_unit_test(test_native_empty_values),
                cmocka_unit_test(test_timeouts),
                cmocka_unit_test(test_vms),
                cmocka_unit_test(test_vm_tuning),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_bus_keys),
                cmocka_unit_test(test_owner),
                cmocka_unit_test(test_missing_and_not_a_file),
                cmocka_unit_test(test_example),
                cmocka_unit_test(test_pci_keys),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
