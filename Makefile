# qemu-hook: libvirt QEMU hook that hands a GPU between the Linux host and vfio-pci.
PREFIX     ?= /usr/local
# Where qemu-hook-act lives: compiled into qemu-hook, which finds it there whatever its own path
# (a copy of it as the hook works too); build/libexecdir rebuilds both when it or PREFIX changes, so
# `make install PREFIX=/usr` after a plain `make` installs a front end that finds it.
LIBEXECDIR ?= $(PREFIX)/libexec/qemu-hook
DESTDIR    ?=
HOOKS_DIR  := /etc/libvirt/hooks
VERSION    := 0.1.0
CC         ?= cc
PKGS       := libsystemd libudev inih libxml-2.0 libkmod
FRONT_PKGS := inih libxml-2.0
# Hardening, as defaults: a distribution's own CFLAGS, CPPFLAGS and LDFLAGS (dpkg-buildflags, rpm's
# optflags) replace them whole. _FORTIFY_SOURCE needs -O: with CFLAGS=-O0, pass CPPFLAGS= too.
# What the code itself needs is added to whatever they are, on the command line too (override).
CFLAGS     ?= -O2 -g -fstack-protector-strong -fPIE
CPPFLAGS   ?= -D_FORTIFY_SOURCE=3
LDFLAGS    ?= -pie -Wl,-z,relro,-z,now
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -Iinclude -DQEMU_HOOK_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) libvirt)
LDLIBS     += $(shell pkg-config --libs $(PKGS))
FRONT_LIBS := $(shell pkg-config --libs $(FRONT_PKGS))
# Where the two are installed, compiled into both: the front end execs qemu-hook-act, and --check
# (in qemu-hook-act) says whether the hook is qemu-hook and how the binaries are labelled.
override CFLAGS += -DQEMU_HOOK_ACT='"$(LIBEXECDIR)/qemu-hook-act"' -DQEMU_HOOK_FRONT='"$(PREFIX)/sbin/qemu-hook"'
# Without _FORTIFY_SOURCE, whoever set it (-Wp, to come after a -Wp,-D of CFLAGS): its checked
# copies (__memcpy_chk...) would bypass ASan's interceptors, which check more.
SAN        := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
              -Wp,-U_FORTIFY_SOURCE

# Two binaries: qemu-hook, the front end libvirt runs for every call, with only inih and libxml2,
# which hands anything with work in it to qemu-hook-act (main.c and everything).
FRONT_SRC  := src/front.c src/config.c src/decide.c src/domain.c src/journal-path.c src/log.c \
              src/scripts.c src/secure-path.c src/util.c
LIB_SRC    := $(filter-out src/main.c src/front.c,$(wildcard src/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNITS      := $(UNIT_SRC:tests/unit/%.c=build/%)
UNITS_SAN  := $(UNIT_SRC:tests/unit/%.c=build/san/%)
# The library's objects, compiled once for all the unit tests (plain and ASan) and the fuzz
# targets, instead of once per binary; the shipped binaries keep their one-command builds.
LIB_OBJ    := $(LIB_SRC:src/%.c=build/obj/%.o)
LIB_OBJ_SAN := $(LIB_SRC:src/%.c=build/obj/san/%.o)
LIB_OBJ_FUZZ := $(LIB_SRC:src/%.c=build/obj/fuzz/%.o)

all: qemu-hook qemu-hook-act

build/libexecdir: FORCE
	@mkdir -p $(@D)
	@echo '$(LIBEXECDIR) $(PREFIX)' | cmp -s - $@ || echo '$(LIBEXECDIR) $(PREFIX)' > $@

qemu-hook: $(FRONT_SRC) $(wildcard include/*.h) qemu-hook-act build/libexecdir
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(FRONT_SRC) $(LDFLAGS) $(FRONT_LIBS)

qemu-hook-act: src/main.c $(LIB_SRC) $(wildcard include/*.h) build/libexecdir
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ src/main.c $(LIB_SRC) $(LDFLAGS) $(LDLIBS)

build/san/qemu-hook: $(FRONT_SRC) $(wildcard include/*.h) build/san/qemu-hook-act build/libexecdir
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $(FRONT_SRC) $(LDFLAGS) $(FRONT_LIBS)

build/san/qemu-hook-act: src/main.c $(LIB_OBJ_SAN) $(wildcard include/*.h) build/libexecdir
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ src/main.c $(LIB_OBJ_SAN) $(LDFLAGS) $(LDLIBS)

# build/libexecdir: the paths compiled in (QEMU_HOOK_ACT...) change with PREFIX and LIBEXECDIR.
$(LIB_OBJ): build/obj/%.o: src/%.c $(wildcard include/*.h) build/libexecdir
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB_OBJ_SAN): build/obj/san/%.o: src/%.c $(wildcard include/*.h) build/libexecdir
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -c -o $@ $<

build/test_%: tests/unit/test_%.c $(LIB_OBJ) $(wildcard include/*.h tests/unit/*.h)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs cmocka)

build/san/test_%: tests/unit/test_%.c $(LIB_OBJ_SAN) $(wildcard include/*.h tests/unit/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $< $(LIB_OBJ_SAN) $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs cmocka)

build/fakesys: tests/host/fakesys.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(shell pkg-config --cflags fuse3) -o $@ $< $(LDFLAGS) \
		$(shell pkg-config --libs fuse3) -lpthread

# Every test of the emulated host runs under it: no module syscall reaches this machine's kernel.
build/kmodtrap: tests/host/kmodtrap.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDFLAGS)

# libFuzzer targets (clang) for the readers of bytes from outside: kvm.conf in both formats, the
# domain XML, the journal; tests/fuzz/run.sh runs each for FUZZ_SECONDS and prints its executions
# and coverage. The tree's corpus (tests/fuzz/corpus/) is only read: new inputs go to build/fuzz/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := config domain journal
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The library instrumented as -fsanitize=fuzzer does it (fuzzer-no-link: without libFuzzer's main).
$(LIB_OBJ_FUZZ): build/obj/fuzz/%.o: src/%.c $(wildcard include/*.h) build/libexecdir
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS) $(subst fuzzer,fuzzer-no-link,$(FUZZ_SAN)) -c -o $@ $<

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_OBJ_FUZZ) $(wildcard include/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS) $(FUZZ_SAN) -o $@ $< $(LIB_OBJ_FUZZ) $(LDFLAGS) $(LDLIBS)

fuzz: $(FUZZ_BINS)
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# make check's pass: about 20 s each, enough to catch a regression on the corpus and a bit more.
fuzz-check: $(FUZZ_BINS)
	@tests/fuzz/run.sh 20 $(FUZZ_TARGETS)

deps:
	@tests/deps.sh

unit: $(UNITS) $(UNITS_SAN)
	@tests/run-units.sh $(UNITS) $(UNITS_SAN)

# Every integration test with the plain binary, and again with the hook built with ASan+UBSan.
# The harness puts each pass's qemu-hook-act where the front end looks for it (LIBEXECDIR), in
# its private namespace. The two passes run at once (each in namespaces of its own, PID too:
# tests/integration/run.sh); each one's output is shown whole when it ends (--output-sync), and
# the target fails if either does.
integration: qemu-hook build/san/qemu-hook build/fakesys build/kmodtrap
	@echo "integration: the plain and the ASan/UBSan passes at once; each one's output when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target integration-plain integration-san

integration-plain integration-san: qemu-hook build/san/qemu-hook build/fakesys build/kmodtrap
	@echo "== $@"
	@$(PASS_HOOK) QEMU_HOOK_LIBEXECDIR=$(LIBEXECDIR) tests/integration/run.sh

integration-san: PASS_HOOK := QEMU_HOOK=build/san/qemu-hook

# Everything: unit, fuzzing (20 s per target), integration (emulated host, libvirtd) and the
# real-kernel guest; check-quick skips the guest for fast iteration. Their order fits 2 cores:
# every binary first, built in parallel; the Debian package before the integration tests, which
# use it as the guest does; the fuzz targets and the guest image (built only when its inputs
# change) beside the two integration passes, which leave about a core idle; the guest's boots
# alone at the end (a TCG guest beside other work boots 2-3 times slower).
CHECK_BINS := qemu-hook qemu-hook-act build/san/qemu-hook build/san/qemu-hook-act build/fakesys build/kmodtrap \
              $(UNITS) $(UNITS_SAN) $(FUZZ_BINS)

check: deps
	@$(MAKE) --no-print-directory -j$(shell nproc) $(CHECK_BINS)
	@$(MAKE) --no-print-directory unit deb
	@echo "check: integration (plain and ASan/UBSan), fuzzing and the guest image at once; each one's output when it ends"
	@$(MAKE) --no-print-directory -j3 --output-sync=target integration-plain integration-san \
		fuzz-check guest-image
	@$(MAKE) --no-print-directory guest-boots

check-quick: deps
	@$(MAKE) --no-print-directory -j$(shell nproc) $(CHECK_BINS)
	@$(MAKE) --no-print-directory unit fuzz-check integration

demo: deps
	@$(MAKE) --no-print-directory qemu-hook build/fakesys build/kmodtrap
	@tests/demo.sh

bench: deps
	@$(MAKE) --no-print-directory qemu-hook build/fakesys build/kmodtrap
	@tests/bench.sh
	@$(MAKE) --no-print-directory guest-bench

# The same on the real kernel: the test guest's group "bench" (tests/guest/bench.py), with the
# Debian package and the image as make check's guest pass gets them.
guest-bench: deps
	@$(MAKE) --no-print-directory deb
	@tests/guest/build-image.sh
	@tests/guest/bench.py

.PHONY: guest-bench

# The real-kernel tests (tests/guest/README.md): a Debian guest booted under qemu TCG, its image
# cached in build/guest/ (rebuilt only when its inputs change). QEMU_HOOK_SAN=1: ASan/UBSan build.
guest-image: deps
	@tests/guest/build-image.sh

guest-check: deps
	@$(MAKE) --no-print-directory qemu-hook qemu-hook-act \
		$(if $(filter 1,$(QEMU_HOOK_SAN)),build/san/qemu-hook build/san/qemu-hook-act)
	@tests/guest/build-image.sh
	@tests/guest/run.py

# make check's guest pass: the Debian package installed with dpkg in the guest, every group; then
# the main group again with the ASan/UBSan binaries over the package's.
# (guest-boots: the boots alone, for make check, which has made the rest.) The boots one after
# the other: two TCG guests at once on 2 cores each take 2-3 times as long.
guest: deb build/san/qemu-hook build/san/qemu-hook-act
	@tests/guest/build-image.sh
	@$(MAKE) --no-print-directory guest-boots

guest-boots:
	@tests/guest/run.py
	@tests/guest/run.py --san main

.PHONY: guest-image guest-check guest guest-boots check-quick

# The files alone, without the hook (the Debian package's postinst makes the link).
# qemu-hook-act goes in first and out last: a libvirt call in between must find it.
install-files: qemu-hook qemu-hook-act
	install -D -m 0755 qemu-hook-act $(DESTDIR)$(LIBEXECDIR)/qemu-hook-act
	rm -f $(DESTDIR)$(PREFIX)/sbin/qemu-hook-act   # 0.1.0 kept it beside qemu-hook
	install -D -m 0755 qemu-hook $(DESTDIR)$(PREFIX)/sbin/qemu-hook
	install -D -m 0644 man/qemu-hook.8 $(DESTDIR)$(PREFIX)/share/man/man8/qemu-hook.8
	install -D -m 0644 conf/kvm.conf $(DESTDIR)$(PREFIX)/share/doc/qemu-hook/kvm.conf
	install -D -m 0644 completion/qemu-hook.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/qemu-hook

# /etc/libvirt/hooks/qemu becomes a link to the binary; tools/hook-link keeps what was there,
# and never writes kvm.conf (it names the example, conf/kvm.conf, every setting commented out).
install: install-files
	@tools/hook-link install "$(DESTDIR)" $(HOOKS_DIR) $(PREFIX)/sbin/qemu-hook \
		$(PREFIX)/share/doc/qemu-hook/kvm.conf

uninstall:
	@tools/hook-link uninstall "$(DESTDIR)" $(HOOKS_DIR) $(PREFIX)/sbin/qemu-hook \
		$(PREFIX)/share/doc/qemu-hook/kvm.conf
	rm -f $(DESTDIR)$(PREFIX)/sbin/qemu-hook $(DESTDIR)$(LIBEXECDIR)/qemu-hook-act \
		$(DESTDIR)$(PREFIX)/sbin/qemu-hook-act
	-rmdir $(DESTDIR)$(LIBEXECDIR) 2>/dev/null
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/qemu-hook.8
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/qemu-hook
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/qemu-hook

# The Debian package of the committed tree with the working tree's changes to tracked files (DEB_REV,
# a commit or tree; default: git stash create, or HEAD when clean), built from its copy in
# build/deb/src: build/deb/qemu-hook_$(VERSION)_ARCH.deb, with no error from lintian.
DEB_REV  ?= $(or $(shell git stash create 2>/dev/null),HEAD)
DEB_ARCH  = $(shell dpkg --print-architecture)
deb:
	rm -rf build/deb
	mkdir -p build/deb/src
	git archive $(DEB_REV) | tar -x -f - -C build/deb/src
	cd build/deb/src && dpkg-buildpackage -b -us -uc
	lintian --fail-on error build/deb/qemu-hook_$(VERSION)_$(DEB_ARCH).deb

# The RPM package (packaging/qemu-hook.spec) of the same tree as `make deb` (DEB_REV):
# build/rpm/RPMS/ARCH/qemu-hook-$(VERSION)-1.ARCH.rpm, from the tarball the spec's Source0 names.
# --nodeps by default: on Debian (where the tests build it), rpm knows none of the BuildRequires
# (Fedora's names; dpkg installed them). On Fedora: `make rpm RPM_NODEPS=`, after
# `dnf builddep packaging/qemu-hook.spec`. RPM_TOP=DIR (absolute) builds there instead of build/rpm.
RPM_TOP    ?= $(CURDIR)/build/rpm
RPM_NODEPS ?= --nodeps
rpm:
	rm -rf $(RPM_TOP)
	mkdir -p $(RPM_TOP)/SOURCES
	git archive --format=tar.gz --prefix=qemu-hook-$(VERSION)/ \
		-o $(RPM_TOP)/SOURCES/qemu-hook-$(VERSION).tar.gz $(DEB_REV)
	rpmbuild -bb $(RPM_NODEPS) --define "_topdir $(RPM_TOP)" packaging/qemu-hook.spec

clean:
	rm -rf qemu-hook qemu-hook-act build

.PHONY: FORCE all deps unit fuzz fuzz-check integration integration-plain integration-san check demo bench install install-files uninstall deb rpm clean
