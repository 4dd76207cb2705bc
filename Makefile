# midge: build, run and test.
#
#   make run    build in release and start the broker on localhost:1883
#   make test   install what is needed, then build and test everything:
#               amd64 tests, Mosquitto's broker tests (conformance), the
#               Rust 1.85 build, armv7 under qemu, both
#               .deb packages, lintian and an install into a bookworm chroot
#   make bench  midge against Mosquitto and rumqttd side by side (about 5
#               minutes; bench-quick: about 1; the first run also builds
#               rumqttd, 5-9 minutes); see docs/PERFORMANCE.md
#   make fuzz   every fuzz target for FUZZ_SECONDS (60) each; installs
#               cargo-fuzz if missing; see docs/SECURITY.md
#   make soak   mixed load for SOAK_SECONDS (600), clients joining and
#               leaving; reports memory, descriptors, threads and losses
#               (soak-short: 60 seconds)
#   make conformance
#               Mosquitto's own broker tests (test/broker of Debian's
#               mosquitto source package) against the release binary, one
#               at a time in a loopback-only network namespace, checked
#               against tests/conformance/expected.txt; with
#               CONFORMANCE_BROKER=/usr/sbin/mosquitto, against Debian's
#               mosquitto instead; see docs/CONFORMANCE.md
#
# Single steps (each installs what it needs first):
#   make test-amd64         unit and integration tests, default toolchain
#   make msrv               the same with Debian's Rust 1.85 (rust-version),
#                           after checking that the compiler is that version
#   make armv7              release binary for armv7-unknown-linux-gnueabihf
#   make qemu-test          the armv7 tests, broker included, under qemu-arm
#   make arm64              release binary for aarch64-unknown-linux-gnu
#   make qemu-test-arm64    the arm64 tests, broker included, under qemu-aarch64
#   make deb / deb-armhf / deb-arm64
#                           target/deb/midge_<version>_<arch>.deb
#   make lint               lintian on the three packages
#   make deb-install-test   install, run and purge the amd64 package in a
#                           throwaway bookworm chroot (under target/), then
#                           switch from Debian's mosquitto to it and back
#                           as docs/MIGRATING.md says
#   make cross-armv7        the armv7 build with cross-rs and Docker
#   make board-test         the armhf package installed and run under systemd
#                           on an emulated armv7 board (qemu-system-arm, 256 MB,
#                           Debian bookworm armhf); the seeds' walkthroughs
#                           against it from this machine; its memory per
#                           client beside Debian's mosquitto. The board is
#                           built once into /var/cache/midge-board; see
#                           tests/board/run.sh
#
# The targets that install (setup, test-deps, and those that use them) need
# root or passwordless sudo for apt-get on a fresh Debian 12 machine.

CARGO ?= cargo

# The pinned Debian toolchain (DEB_RUST_VERSION), shared with cross/setup.sh.
include cross/toolchain.env

# Debian's Rust 1.85 (rustc-web at DEB_RUST_VERSION): the minimum supported
# version, and the compiler that matches the armhf standard library of
# .cross/sysroot. cross/check-rust.sh refuses any other before a build.
DEB_CARGO ?= /usr/bin/cargo
DEB_RUSTC ?= /usr/bin/rustc
DEB_RUSTDOC ?= /usr/bin/rustdoc
DEB_ENV := RUSTC=$(DEB_RUSTC) RUSTDOC=$(DEB_RUSTDOC)
CHECK_RUST := bash cross/check-rust.sh $(DEB_RUSTC) $(DEB_RUSTDOC) $(DEB_CARGO)

ARMV7 := armv7-unknown-linux-gnueabihf
ARMV7_BIN := target/$(ARMV7)/release/midge
# No binfmt_misc needed: every armv7 program runs through this command. The
# library path keeps the cross sysroot's glibc even where an armhf libc6 is
# installed on the machine (a mix of the two crashes).
QEMU := qemu-arm -L /usr/arm-linux-gnueabihf -E LD_LIBRARY_PATH=/usr/arm-linux-gnueabihf/lib
ARMV7_ENV := $(DEB_ENV) \
	CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
	CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
	AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
	CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="--sysroot=$(CURDIR)/.cross/sysroot/usr" \
	CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="$(QEMU)"

# The armv7 doc tests, built and run under qemu like the other tests.
# Cargo 1.85 runs a cross target's doc tests only with -Zdoctest-xcompile
# (stable from cargo 1.89 on), so the test step sets RUSTC_BOOTSTRAP=1 for
# that flag; rustdoc gets the armhf sysroot, which RUSTFLAGS do not reach,
# and cargo hands it the runner as --runtool. The shipped release build
# (`make armv7`) uses neither.
ARMV7_DOCTEST_ENV := RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--sysroot=$(CURDIR)/.cross/sysroot/usr"

AARCH64 := aarch64-unknown-linux-gnu
ARM64_BIN := target/$(AARCH64)/release/midge
QEMU_ARM64 := qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib
ARM64_ENV := $(DEB_ENV) \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
	AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--sysroot=$(CURDIR)/.cross/sysroot-arm64/usr" \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(QEMU_ARM64)"
ARM64_DOCTEST_ENV := RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--sysroot=$(CURDIR)/.cross/sysroot-arm64/usr"

# Under qemu, tests/load.rs (1,000 clients, each a thread of an emulated
# process) measures the emulator, not the broker, and so do the memory
# bounds of tests/hostile.rs with hundreds of threads (RSS of qemu-arm,
# which gives each emulated thread host memory of its own: 2,000 silent
# connections took 33 -> 398 MB there, +7 MB natively; 100 half-sent
# CONNECTs +33 MB in one run, +19 MB natively; a SUBSCRIBE of 2,000 '#'
# +4,132 KiB under qemu-aarch64 against a 4,096 KiB bound): they run
# natively only.
QEMU_SKIP := a_thousand_clients an_announced_256_mb_packet_allocates_nothing_before_its_bytes \
	a_client_id_takeover_storm_leaks_neither_memory_nor_threads \
	persistent_sessions_with_random_ids_are_held_by_the_queue_limits \
	two_thousand_connections_without_connect_hold_few_threads_and_let_a_client_in \
	half_sent_connects_announcing_200_mb_are_held_within_the_connect_buffer \
	a_filter_named_2000_times_costs_bounded_memory

# Client tools installed as symbolic links to the broker binary, which
# picks its role from argv[0] (src/tools/mod.rs).
TOOLS := midge_passwd midge_cert midge_pub midge_sub midge_rr

# The steps of `make test`, in order; tests/ci.sh times each one.
CI_STEPS := test-deps setup test-amd64 conformance msrv armv7 qemu-test arm64 qemu-test-arm64 deb deb-armhf deb-arm64 lint deb-install-test board-test-if-cached

.PHONY: all build run test test-deps setup test-amd64 msrv armv7 qemu-test \
	arm64 qemu-test-arm64 deb deb-armhf deb-arm64 lint deb-install-test cross-armv7 clean-cross bench bench-deps bench-quick bench-rumqttd bench-wear bench-retained \
	board-deps board-test board-test-if-cached \
	fuzz soak soak-short conformance

all: build

build:
	$(CARGO) build --locked --release

run: build
	./target/release/midge -v

test:
	bash tests/ci.sh $(CI_STEPS)

test-deps:
	bash tests/setup.sh

setup:
	bash cross/setup.sh

test-amd64: test-deps
	$(CARGO) test --locked

msrv: setup test-deps
	$(CHECK_RUST)
	$(DEB_ENV) CARGO_TARGET_DIR=target/msrv $(DEB_CARGO) test --locked

armv7: setup
	$(CHECK_RUST)
	$(ARMV7_ENV) $(DEB_CARGO) build --locked --release --target $(ARMV7)

# The armv7 tests under qemu (debug build), then the shipped armv7 release
# binary under qemu against the native tests of its service behaviour and
# of MQTT with the Mosquitto clients and paho.
qemu-test: setup test-deps armv7
	@echo "qemu-test: skipping $(QEMU_SKIP): under qemu they measure the emulator (threads, memory), not midge"
	MIDGE_TEST_TIME_SCALE=3 MIDGE_TEST_RUNNER="$(QEMU)" $(ARMV7_ENV) $(ARMV7_DOCTEST_ENV) \
		$(DEB_CARGO) test --locked --target $(ARMV7) -Zdoctest-xcompile -- $(addprefix --skip ,$(QEMU_SKIP))
	MIDGE_TEST_TIME_SCALE=3 MIDGE_TEST_RUNNER="$(QEMU)" MIDGE_TEST_BINARY=$(CURDIR)/$(ARMV7_BIN) \
		$(CARGO) test --locked --test service --test seeds --test pubsub --test will

arm64: setup
	$(CHECK_RUST)
	$(ARM64_ENV) $(DEB_CARGO) build --locked --release --target $(AARCH64)

# The same as qemu-test, for 64-bit ARM boards (Raspberry Pi 3/4/5,
# Orange Pi with H6, H616 or RK35xx running a 64-bit system).
qemu-test-arm64: setup test-deps arm64
	@echo "qemu-test-arm64: skipping $(QEMU_SKIP): under qemu they measure the emulator (threads, memory), not midge"
	MIDGE_TEST_TIME_SCALE=3 MIDGE_TEST_RUNNER="$(QEMU_ARM64)" $(ARM64_ENV) $(ARM64_DOCTEST_ENV) \
		$(DEB_CARGO) test --locked --target $(AARCH64) -Zdoctest-xcompile -- $(addprefix --skip ,$(QEMU_SKIP))
	MIDGE_TEST_TIME_SCALE=3 MIDGE_TEST_RUNNER="$(QEMU_ARM64)" MIDGE_TEST_BINARY=$(CURDIR)/$(ARM64_BIN) \
		$(CARGO) test --locked --test service --test seeds --test pubsub --test will

deb: build
	TOOLS="$(TOOLS)" bash debian/mkdeb.sh amd64 target/release/midge

deb-armhf: armv7
	TOOLS="$(TOOLS)" bash debian/mkdeb.sh armhf $(ARMV7_BIN)

deb-arm64: arm64
	TOOLS="$(TOOLS)" bash debian/mkdeb.sh arm64 $(ARM64_BIN)

lint: setup deb deb-armhf deb-arm64
	bash debian/lint.sh

deb-install-test: setup deb
	bash debian/install-test.sh

# The emulated armv7 board (tests/board/): tests/board/run.sh installs what
# builds and boots it (tests/board/setup.sh), builds the board if its cache
# lacks it (12 to 18 minutes on 2 busy cores), then runs the test (about
# 19 minutes, most of it 1,000 clients connecting to each broker).
# CI runs board-test-if-cached: the test when the board of the current
# recipe is in the cache, otherwise a line saying it skipped (building the
# board would take `make test` past its time).
board-deps:
	bash tests/board/setup.sh

board-test: test-deps deb-armhf
	bash tests/board/run.sh

board-test-if-cached: test-deps deb-armhf
	bash tests/board/run.sh --if-cached

cross-armv7:
	CROSS_CONFIG=cross/Cross.toml cross build --locked --release --target $(ARMV7)

clean-cross:
	rm -rf .cross

# rumqttd, the third broker of `make bench`: built once from crates.io at a
# pinned version into a cache outside the tree (none of its code is part of
# midge; tests/bench/rumqttd.sh says why one dependency is moved), and
# handed to the benchmark by path.
RUMQTTD_VERSION := 0.20.0
RUMQTTD_CACHE ?= $(HOME)/.cache/midge-bench
RUMQTTD_ROOT := $(RUMQTTD_CACHE)/rumqttd-$(RUMQTTD_VERSION)
RUMQTTD := $(RUMQTTD_ROOT)/bin/rumqttd

$(RUMQTTD):
	CARGO="$(CARGO)" sh tests/bench/rumqttd.sh $(RUMQTTD_VERSION) $(RUMQTTD_ROOT)

bench-rumqttd: $(RUMQTTD)

# What the benchmarks run beside midge: Debian's mosquitto (test-deps) and
# linux-perf, whose `perf stat` counts the system calls per message.
bench-deps: test-deps
	@command -v perf >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }

bench: bench-deps $(RUMQTTD)
	MIDGE_BENCH_RUMQTTD=$(RUMQTTD) $(CARGO) bench --locked --bench compare
	$(CARGO) bench --locked --bench acl
	$(CARGO) bench --locked --bench wear
	$(CARGO) bench --locked --bench retained

bench-quick: bench-deps $(RUMQTTD)
	MIDGE_BENCH_RUMQTTD=$(RUMQTTD) $(CARGO) bench --locked --bench compare -- --quick
	$(CARGO) bench --locked --bench acl
	$(CARGO) bench --locked --bench wear -- --quick
	$(CARGO) bench --locked --bench retained -- --quick

# Only the persistence wear scenario (about 4 minutes; full: about 20).
bench-wear:
	$(CARGO) bench --locked --bench wear -- --quick

# Only the retained burst (5,000 messages; full: 5,000 and 50,000).
bench-retained:
	$(CARGO) bench --locked --bench retained -- --quick

# Coverage-guided fuzzing (fuzz/, its own workspace): cargo-fuzz on the
# stable toolchain with RUSTC_BOOTSTRAP=1. Crashes land in fuzz/seeds,
# which `cargo test` replays.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh

# The soak run (tests/soak.rs): a release broker under mixed load.
SOAK_SECONDS ?= 600
soak:
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) bench --locked --bench soak

soak-short:
	SOAK_SECONDS=60 $(CARGO) bench --locked --bench soak

# Mosquitto's test/broker suite as an oracle (tests/conformance/run.sh):
# fetches the source package once into target/conformance, builds the
# release binary unless CONFORMANCE_BROKER names another broker.
conformance:
	CARGO="$(CARGO)" CONFORMANCE_BROKER="$(CONFORMANCE_BROKER)" bash tests/conformance/run.sh
