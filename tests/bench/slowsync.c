/* LD_PRELOAD shim for `make bench` (tests/bench/wear.rs): every fsync and
 * fdatasync takes SLOWSYNC_US microseconds longer (an SD card's latency),
 * and is counted in the 8-byte file SLOWSYNC_COUNT (on tmpfs, so counting
 * writes nothing to storage). Built at bench time with cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned long long *count;

static void slow(void) {
    const char *us = getenv("SLOWSYNC_US");
    const char *path = getenv("SLOWSYNC_COUNT");
    if (!count && path) {
        int fd = open(path, O_RDWR);
        if (fd >= 0) {
            void *m = mmap(0, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (m != MAP_FAILED) count = m;
        }
    }
    if (count) __atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
    if (us && atoi(us) > 0) usleep(atoi(us));
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
