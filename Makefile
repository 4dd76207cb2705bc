# midge: build, run and test.
#
#   make run    build in release and start the broker on localhost:1883
#   make test   install what the tests need, then run every test
#   make bench  midge against Mosquitto side by side (about 5 minutes;
#               bench-quick: about 1); see docs/PERFORMANCE.md
#
# Only the targets below `run` and `test` need root (apt-get) on a fresh machine.

CARGO ?= cargo

.PHONY: all build run test test-deps unit bench bench-quick

all: build

build:
	$(CARGO) build --locked --release

run: build
	./target/release/midge -v

test-deps:
	bash tests/setup.sh

test: test-deps
	$(CARGO) test --locked

bench:
	$(CARGO) bench --locked --bench compare

bench-quick:
	$(CARGO) bench --locked --bench compare -- --quick
