/*
 * Helpers of the loopback tests (memory <-> files). These are plain programs: no MPI_Init,
 * no mpiexec; common.h's CHECK macros work before MPI_Init (they print rank -1 and exit 1).
 * Files live in $TMPDIR (else /tmp), made with mkstemp and unlinked as soon as the test
 * has opened what it needs, so nothing is left behind even when a CHECK fails.
 */
#ifndef MPIXFER_TEST_LOOPBACK_COMMON_H
#define MPIXFER_TEST_LOOPBACK_COMMON_H

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

static inline void lb_tmppath(char *path, size_t cap)
{
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
    snprintf(path, cap, "%s/mpixfer-loopback-XXXXXX", dir);
}

/* A new empty file open read-write; its name is written to @p path (may be NULL) and it is
 * left in place only when the caller asks for the path (it must unlink it then). */
static inline int lb_tmpfile_named(char *path, size_t cap)
{
    char buf[PATH_MAX];
    char *p = path != NULL ? path : buf;
    size_t n = path != NULL ? cap : sizeof buf;
    int fd;

    lb_tmppath(p, n);
    fd = mkstemp(p);
    CHECK_MSG(fd >= 0, "mkstemp(%s): %s", p, strerror(errno));
    if (path == NULL)
        CHECK(unlink(p) == 0);
    return fd;
}

static inline int lb_tmpfile(void)
{
    return lb_tmpfile_named(NULL, 0);
}

/* pwrite/pread everything or die: the tests' own I/O, independent of the library. */
static inline void lb_write_all(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
        CHECK_MSG(r > 0 || (r < 0 && errno == EINTR), "pwrite: %s", strerror(errno));
        if (r > 0)
            done += (size_t)r;
    }
}

static inline void lb_read_all(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        CHECK_MSG(r > 0 || (r < 0 && errno == EINTR), "pread at %llu: %s",
                  (unsigned long long)(off + done), r == 0 ? "end of file" : strerror(errno));
        if (r > 0)
            done += (size_t)r;
    }
}

static inline off_t lb_file_size(int fd)
{
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    return st.st_size;
}

/* True when all @p len bytes at @p p equal @p v; else prints the first difference. */
static inline bool lb_all_equal(const void *p, size_t len, uint8_t v)
{
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < len; i++) {
        if (b[i] != v) {
            fprintf(stderr, "byte %zu is 0x%02x, expected 0x%02x\n", i, b[i], v);
            return false;
        }
    }
    return true;
}

static inline mpixfer_file_desc_t lb_file(int fd, size_t len, uint64_t off)
{
    mpixfer_file_desc_t f;
    f.fd = fd;
    f.len = len;
    f.offset = off;
    return f;
}

static inline mpixfer_loopback_t *lb_create(bool multi, unsigned workers)
{
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_loopback_t *lb = NULL;
    cfg.multi_thread = multi;
    cfg.num_workers = workers;
    CHECK_OK(mpixfer_loopback_create(&cfg, &lb));
    CHECK(lb != NULL);
    return lb;
}

/* Fisher-Yates with a fixed seed: the same scatter on every run. */
static inline void lb_permutation(size_t *perm, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(tst_mix64(seed ^ i) % i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

#endif /* MPIXFER_TEST_LOOPBACK_COMMON_H */
