# midge: build, run and test.
#
#   make run    build in release and start the broker on localhost:1883
#   make test   install what the tests need, then run every test
#
# Only the targets below `run` and `test` need root (apt-get) on a fresh machine.

CARGO ?= cargo

.PHONY: all build run test test-deps unit

all: build

build:
	$(CARGO) build --locked --release

run: build
	./target/release/midge -v

test-deps:
	bash tests/setup.sh

test: test-deps
	$(CARGO) test --locked
