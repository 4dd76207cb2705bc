#!/usr/bin/env bash
# `make board-test`: the armhf package on an emulated armv7 board. Builds
# the board once (tests/board/image.sh, cached in $BOARD_CACHE), then runs
# tests/board/board.py against it with the package of `make deb-armhf`.
#
#   tests/board/run.sh              build the board if needed, then test
#   tests/board/run.sh --if-cached  test only if the board is already built;
#                                   otherwise say so and exit 0 (CI)
#
# The board's console is kept in target/board/console.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf 'tests/board/run.sh: %s\n' "$*"; }

deb=$(ls target/deb/midge_*_armhf.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { log "no target/deb/midge_*_armhf.deb: run make deb-armhf" >&2; exit 1; }
[ -x .venv/bin/python ] || { log "no .venv: run make test-deps" >&2; exit 1; }

if [ "${1:-}" = --if-cached ]; then
    if ! image=$(bash tests/board/image.sh --cached); then
        log "SKIPPED: no board image for this recipe in ${BOARD_CACHE:-/var/cache/midge-board}; make board-test builds it"
        exit 0
    fi
fi

bash tests/board/setup.sh
t0=$(date +%s)
image=$(bash tests/board/image.sh)
log "board: $image ($(cat "$image/READY"); ready for this run in $(($(date +%s) - t0)) s)"
mkdir -p target/board
t1=$(date +%s)
status=0
BOARD_QEMU=$(bash tests/board/qemu.sh) BOARD_LOG=$PWD/target/board/console.log \
    .venv/bin/python tests/board/board.py "$image" "$deb" || status=$?
log "tests on the board took $(($(date +%s) - t1)) s"
exit "$status"
