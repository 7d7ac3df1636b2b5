/*
 * mpixfer-loopback-bench: throughput of a loopback agent (memory <-> file) against fio
 * doing the same pattern in the same run.
 *
 * Pattern: --total bytes as blocks of --block bytes; block i of a host buffer goes to
 * offset i * block of one file (offload), then comes back (load), sequentially, --iters
 * times each. mpixfer: one request of all blocks per iteration, on an agent with
 * --workers threads. fio: --rw=write then --rw=read with --bs=block, --size=total,
 * --loops=iters, --ioengine=psync, --direct=0 --invalidate=0 (the same pread/pwrite
 * syscalls, on the page cache); with
 * --workers N, N jobs each own a contiguous 1/N of the file (--offset_increment).
 *
 * Both go through the page cache (buffered I/O): the numbers are memory-to-page-cache
 * rates, which is what spilling KV cache to a local file costs until writeback; the page
 * cache is not dropped between runs, for either. The file is preallocated before the
 * timed writes (fio does the same by default with fallocate), and the file system is
 * synced before each timed write phase so neither inherits the other's writeback.
 * Both write the whole file once, untimed, before the timed passes: the first write of
 * fresh page-cache pages costs far more than any later one on a virtual machine that
 * hands freed memory back to its host (page reporting), and would otherwise favour
 * whichever of the two runs second, on pages the other one just freed. The timed passes
 * overwrite cached pages: the steady state of a spill file that is rewritten.
 *
 * GB/s = bytes moved / wall time, 1 GB = 1e9 bytes. fio's own bandwidth is read from its
 * JSON output (jobs[0].write.bw_bytes / jobs[0].read.bw_bytes, with --group_reporting).
 * Without fio in PATH (Debian package "fio") the comparison is skipped. MPI is not used.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpixfer.h"

extern char **environ;

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define GIB (KIB * MIB)

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "mpixfer-loopback-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "64K", "1M", "2G", "4096" -> bytes; 0 on a malformed value. */
static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return 0;
    switch (*end) {
    case 'k':
    case 'K':
        v *= KIB;
        end++;
        break;
    case 'm':
    case 'M':
        v *= MIB;
        end++;
        break;
    case 'g':
    case 'G':
        v *= GIB;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    return *end == '\0' ? (size_t)v : 0;
}

static void human(char *buf, size_t cap, size_t bytes)
{
    if (bytes % GIB == 0)
        snprintf(buf, cap, "%zu GiB", bytes / GIB);
    else if (bytes % MIB == 0)
        snprintf(buf, cap, "%zu MiB", bytes / MIB);
    else if (bytes % KIB == 0)
        snprintf(buf, cap, "%zu KiB", bytes / KIB);
    else
        snprintf(buf, cap, "%zu B", bytes);
}

static uint64_t word_at(size_t i)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29);
}

/* Flush the file system's dirty pages before a timed write phase: otherwise whichever of
 * mpixfer and fio writes second is throttled by the writeback of what the first left
 * dirty, and the order of the runs decides the ratio. */
static void settle(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

/* ----------------------------------------------------------------- mpixfer */

typedef struct {
    double offload_gbs, load_gbs;
} result_t;

static void check(mpixfer_status_t st, const char *what)
{
    if (st != MPIXFER_OK)
        die("%s: %s (%s)", what, mpixfer_status_name(st), mpixfer_strerror(st));
}

static result_t run_mpixfer(const char *dir, size_t total, size_t block, unsigned workers,
                            unsigned iters)
{
    char path[PATH_MAX];
    size_t n = total / block;
    uint64_t *buf = NULL;
    mpixfer_mem_desc_t *d = calloc(n, sizeof *d);
    mpixfer_file_desc_t *f = calloc(n, sizeof *f);
    mpixfer_agent_config_t cfg = MPIXFER_AGENT_CONFIG_INIT;
    mpixfer_loopback_t *lb = NULL;
    result_t r;
    double t;
    int fd, rc;

    if (d == NULL || f == NULL || posix_memalign((void **)&buf, 4096, total) != 0)
        die("out of memory for %zu bytes", total);
    for (size_t i = 0; i < total / 8; i++)
        buf[i] = word_at(i);
    snprintf(path, sizeof path, "%s/mpixfer-loopback-bench-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0)
        die("mkstemp(%s): %s", path, strerror(errno));
    unlink(path);
    rc = posix_fallocate(fd, 0, (off_t)total);
    if (rc != 0 && rc != EOPNOTSUPP)
        die("posix_fallocate: %s", strerror(rc));

    cfg.multi_thread = workers > 1;
    cfg.num_workers = workers;
    check(mpixfer_loopback_create(&cfg, &lb), "mpixfer_loopback_create");
    for (size_t i = 0; i < n; i++) {
        d[i].addr = (uintptr_t)buf + i * block;
        d[i].len = block;
        d[i].device_id = 0;
        f[i].fd = fd;
        f[i].len = block;
        f[i].offset = (uint64_t)i * block;
    }
    mpixfer_mem_descs_t l = {MPIXFER_MEM_DRAM, d, n};

    /* Untimed warm-up pass: see the header. */
    check(mpixfer_loopback_execute(lb, &l, f, n, true), "warm-up offload");
    settle(dir);
    t = now();
    for (unsigned it = 0; it < iters; it++)
        check(mpixfer_loopback_execute(lb, &l, f, n, true), "offload");
    r.offload_gbs = (double)total * iters / (now() - t) / 1e9;

    memset(buf, 0, total);
    t = now();
    for (unsigned it = 0; it < iters; it++)
        check(mpixfer_loopback_execute(lb, &l, f, n, false), "load");
    r.load_gbs = (double)total * iters / (now() - t) / 1e9;

    /* Not timed: what came back is what went out. */
    for (size_t i = 0; i < total / 8; i++)
        if (buf[i] != word_at(i))
            die("data mismatch at byte %zu after load", i * 8);

    check(mpixfer_loopback_destroy(lb), "mpixfer_loopback_destroy");
    close(fd);
    free(buf);
    free(d);
    free(f);
    return r;
}

/* --------------------------------------------------------------------- fio */

static bool find_in_path(const char *prog)
{
    const char *p = getenv("PATH");
    char full[PATH_MAX];

    if (p == NULL)
        p = "/usr/local/bin:/usr/bin:/bin";
    while (*p) {
        size_t len = strcspn(p, ":");
        if (len > 0 && len + strlen(prog) + 2 <= sizeof full) {
            memcpy(full, p, len);
            full[len] = '/';
            strcpy(full + len + 1, prog);
            if (access(full, X_OK) == 0)
                return true;
        }
        p += len;
        if (*p == ':')
            p++;
    }
    return false;
}

/* Reads the whole file into a NUL-terminated string. */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *s;
    long len;

    if (fp == NULL)
        return NULL;
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    s = malloc((size_t)len + 1);
    if (s != NULL) {
        size_t got = fread(s, 1, (size_t)len, fp);
        s[got] = '\0';
    }
    fclose(fp);
    return s;
}

/* jobs[0].<dir>.bw_bytes from fio's JSON, without a JSON library: the first key "<dir>"
 * whose value is an object ("rw" : "write" in the job options is not one) holds the first
 * "bw_bytes" after it. -1 when absent. */
static double fio_bw(const char *json, const char *dir)
{
    char key[32];
    const char *p = strstr(json, "\"jobs\"");

    snprintf(key, sizeof key, "\"%s\"", dir);
    while (p != NULL && (p = strstr(p, key)) != NULL) {
        const char *q = p + strlen(key);
        q += strspn(q, " \t\r\n");
        if (*q == ':') {
            q++;
            q += strspn(q, " \t\r\n");
            if (*q == '{') {
                p = strstr(q, "\"bw_bytes\"");
                if (p == NULL || (p = strchr(p, ':')) == NULL)
                    return -1;
                return strtod(p + 1, NULL);
            }
        }
        p = q;
    }
    return -1;
}

/* One fio job (rw = "write" or "read") on @p file; bytes per second, -1 on failure. */
static double run_fio(const char *file, const char *rw, size_t total, size_t block,
                      unsigned workers, unsigned iters, const char *json_path)
{
    char a_file[PATH_MAX + 16], a_bs[64], a_size[64], a_loops[64], a_jobs[64], a_incr[64],
        a_out[PATH_MAX + 16], a_rw[32];
    char *argv[32];
    int argc = 0, status;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    double bw;
    char *json;

    snprintf(a_file, sizeof a_file, "--filename=%s", file);
    snprintf(a_rw, sizeof a_rw, "--rw=%s", rw);
    snprintf(a_bs, sizeof a_bs, "--bs=%zu", block);
    snprintf(a_size, sizeof a_size, "--size=%zu", total / workers);
    snprintf(a_loops, sizeof a_loops, "--loops=%u", iters);
    snprintf(a_jobs, sizeof a_jobs, "--numjobs=%u", workers);
    snprintf(a_incr, sizeof a_incr, "--offset_increment=%zu", total / workers);
    snprintf(a_out, sizeof a_out, "--output=%s", json_path);
    argv[argc++] = "fio";
    argv[argc++] = "--name=mpixfer-loopback";
    argv[argc++] = a_file;
    argv[argc++] = a_rw;
    argv[argc++] = a_bs;
    argv[argc++] = a_size;
    argv[argc++] = a_loops;
    argv[argc++] = a_jobs;
    argv[argc++] = a_incr;
    argv[argc++] = "--group_reporting";
    argv[argc++] = "--ioengine=psync";
    argv[argc++] = "--direct=0";
    /* fio drops the file's cached pages before each job by default; mpixfer's load reads
     * what its offload left in the page cache, so fio must too. */
    argv[argc++] = "--invalidate=0";
    argv[argc++] = "--thread";
    argv[argc++] = "--output-format=json";
    argv[argc++] = a_out;
    argv[argc] = NULL;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, "fio", &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fio --rw=%s failed (status %d)\n", rw, status);
        return -1;
    }
    json = slurp(json_path);
    if (json == NULL)
        return -1;
    bw = fio_bw(json, rw);
    free(json);
    return bw;
}

/* ---------------------------------------------------------------------- main */

static void usage(FILE *out)
{
    fprintf(out, "usage: mpixfer-loopback-bench [options]\n"
                 "  --total SIZE    bytes per iteration (default 256M)\n"
                 "  --block SIZE    block size, one descriptor each (default 64K)\n"
                 "  --workers N     loopback worker threads and fio jobs (default 1)\n"
                 "  --iters N       timed offloads and loads each (default 5)\n"
                 "  --dir DIR       where the files go (default $TMPDIR or /tmp)\n"
                 "  --no-fio        skip the fio comparison\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"total", required_argument, NULL, 't'},   {"block", required_argument, NULL, 'b'},
        {"workers", required_argument, NULL, 'w'}, {"iters", required_argument, NULL, 'i'},
        {"dir", required_argument, NULL, 'd'},     {"no-fio", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    size_t total = 256 * MIB, block = 64 * KIB;
    unsigned workers = 1, iters = 5;
    const char *dir = getenv("TMPDIR");
    bool use_fio = true;
    char tot_s[32], blk_s[32];
    int c;

    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            total = parse_size(optarg);
            break;
        case 'b':
            block = parse_size(optarg);
            break;
        case 'w':
            workers = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'i':
            iters = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            dir = optarg;
            break;
        case 'n':
            use_fio = false;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (total == 0 || block == 0 || block % 8 != 0 || total % block != 0)
        die("--total must be a non-zero multiple of --block, --block a multiple of 8");
    if (workers == 0 || iters == 0 || (total / block) % workers != 0)
        die("--workers and --iters must be >= 1, and the block count a multiple of --workers");
    setvbuf(stdout, NULL, _IOLBF, 0);

    human(tot_s, sizeof tot_s, total);
    human(blk_s, sizeof blk_s, block);
    printf("# mpixfer-loopback-bench %s: %s as %zu blocks of %s, sequential, %u worker(s), "
           "%u iteration(s), in %s\n",
           mpixfer_version(), tot_s, total / block, blk_s, workers, iters, dir);
    printf("# both mpixfer and fio run through the page cache (buffered pread/pwrite, fio "
           "--direct=0 --ioengine=psync --invalidate=0), after one untimed write pass each; "
           "GB = 1e9 bytes\n");
    printf("# fio moves every block through one block-sized buffer (it stays in the CPU "
           "cache); mpixfer moves a %s buffer\n",
           tot_s);

    result_t m = run_mpixfer(dir, total, block, workers, iters);

    double fw = -1, fr = -1;
    const char *why = NULL;
    if (!use_fio) {
        why = "fio comparison skipped (--no-fio)";
    } else if (!find_in_path("fio")) {
        why = "fio not found (Debian package \"fio\"): comparison skipped";
    } else {
        char file[PATH_MAX], json[PATH_MAX];
        int fd;
        snprintf(file, sizeof file, "%s/mpixfer-loopback-fio-XXXXXX", dir);
        snprintf(json, sizeof json, "%s/mpixfer-loopback-fio-json-XXXXXX", dir);
        fd = mkstemp(file);
        if (fd < 0)
            die("mkstemp(%s): %s", file, strerror(errno));
        close(fd);
        fd = mkstemp(json);
        if (fd < 0)
            die("mkstemp(%s): %s", json, strerror(errno));
        close(fd);
        fw = run_fio(file, "write", total, block, workers, 1, json); /* warm-up */
        settle(dir);
        if (fw >= 0)
            fw = run_fio(file, "write", total, block, workers, iters, json);
        if (fw >= 0)
            fr = run_fio(file, "read", total, block, workers, iters, json);
        unlink(file);
        unlink(json);
        if (fw < 0 || fr < 0)
            why = "fio failed: comparison skipped";
    }

    printf("%-8s %14s %14s %12s\n", "op", "mpixfer GB/s", "fio GB/s", "mpixfer/fio");
    if (why == NULL) {
        printf("%-8s %14.2f %14.2f %12.2f\n", "offload", m.offload_gbs, fw / 1e9,
               m.offload_gbs / (fw / 1e9));
        printf("%-8s %14.2f %14.2f %12.2f\n", "load", m.load_gbs, fr / 1e9,
               m.load_gbs / (fr / 1e9));
    } else {
        printf("%-8s %14.2f %14s %12s\n", "offload", m.offload_gbs, "-", "-");
        printf("%-8s %14.2f %14s %12s\n", "load", m.load_gbs, "-", "-");
        printf("# %s\n", why);
    }
    return 0;
}
