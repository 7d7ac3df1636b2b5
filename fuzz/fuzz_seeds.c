/* Seed-corpus generator for the fuzz targets: fuzz_seeds SEED_DIR [WORK_DIR]
 *
 * Writes valid inputs, made with the library's own encoders, to SEED_DIR/desc,
 * SEED_DIR/ctrl, SEED_DIR/conninfo and SEED_DIR/handshake, and checks that each one decodes (exit 1 if not,
 * which also makes it a test of the encoders against the decoders). With WORK_DIR it also
 * creates WORK_DIR/desc, ... empty: libFuzzer writes what it finds into the first corpus
 * directory it is given, so the bounded runs of the test suite start from the seeds alone
 * every time. */
#include "fuzz_common.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *seed_dir;
static int nseeds;

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "fuzz_seeds: %s %s: %s\n", what, arg, errno ? strerror(errno) : "");
    exit(1);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        die("cannot create", path);
    errno = 0;
}

/* Empty @p path of plain files (a corpus directory has nothing else). */
static void clear_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char file[4096];

    if (d == NULL)
        die("cannot open", path);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        if (unlink(file) != 0)
            die("cannot remove", file);
    }
    closedir(d);
}

static void write_seed(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s/%s", seed_dir, target, name);
    f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
        die("cannot write", path);
    nseeds++;
}

/* ------------------------------------------------------------- descriptors */

static void desc_seed(const char *file, uint64_t world_id, uint32_t rank, const char *name,
                      const mpixfer__wire_region_t *regions, size_t n)
{
    void *blob;
    size_t len;
    mpixfer__desc_t d;

    if (fuzz_desc_encode(world_id, rank, name, regions, n, &blob, &len) != MPIXFER_OK)
        die("cannot encode descriptor", file);
    if (mpixfer__desc_decode(blob, len, (size_t)1 << 20, &d) != MPIXFER_OK)
        die("descriptor seed does not decode:", file);
    if (d.nregions != n || strcmp(d.name, name) != 0 || d.world_id != world_id || d.rank != rank)
        die("descriptor seed decodes to something else:", file);
    mpixfer__desc_fini(&d);
    write_seed("desc", file, blob, len);
    free(blob);
}

static void desc_seeds(void)
{
    char long_name[MPIXFER__NAME_MAX + 1];
    mpixfer__wire_region_t many[64];
    const mpixfer__wire_region_t one[] = {{0x7f0000001000, 4096, MPIXFER_MEM_DRAM, 0}};
    /* Sorted by (addr, len, type, device), overlapping, every memory type. */
    const mpixfer__wire_region_t mixed[] = {
        {0x1000, 0x100, MPIXFER_MEM_DRAM, 0},  {0x1000, 0x100, MPIXFER_MEM_VRAM, 0},
        {0x1000, 0x100, MPIXFER_MEM_VRAM, 1},  {0x1000, 0x2000, MPIXFER_MEM_DRAM, 0},
        {0x1800, 0x10, MPIXFER_MEM_BLK, 0},    {0x2000, 0x1, MPIXFER_MEM_OBJ, 7},
        {0x3000, 0x1000, MPIXFER_MEM_FILE, 3},
    };
    /* The last byte of the address space: addr + len == 2^64 - 1 does not wrap. */
    const mpixfer__wire_region_t top[] = {
        {1, 1, MPIXFER_MEM_DRAM, 0},
        {UINT64_MAX - 0x1000, 0x1000, MPIXFER_MEM_DRAM, 0},
    };

    memset(long_name, 'n', MPIXFER__NAME_MAX);
    long_name[MPIXFER__NAME_MAX] = '\0';
    for (size_t i = 0; i < 64; i++)
        many[i] = (mpixfer__wire_region_t){0x10000 + i * 0x1000, 0x800 + i, MPIXFER_MEM_DRAM, 0};

    desc_seed("empty", 0, 0, "a", NULL, 0);
    desc_seed("one_region", 0x0123456789abcdefULL, 1, "prefill-0", one, 1);
    desc_seed("mixed_types", 42, 3, "decode-1", mixed, sizeof(mixed) / sizeof(mixed[0]));
    desc_seed("top_of_memory", UINT64_MAX, UINT32_MAX, "top", top, 2);
    desc_seed("long_name", 7, 0, long_name, one, 1);
    desc_seed("many_regions", 99, 2, "kv-cache", many, 64);
}

/* -------------------------------------------------------- control messages */

static void ctrl_seed(const char *file, mpixfer__ctrl_kind_t kind, const char *sender,
                      const char *receiver, const void *payload, size_t len)
{
    unsigned char *buf;
    size_t n;
    void *dst;
    mpixfer__ctrl_t c;

    if (mpixfer__ctrl_alloc(kind, sender, receiver, len, false, &buf, &n, &dst) != MPIXFER_OK)
        die("cannot encode control message", file);
    if (len)
        memcpy(dst, payload, len);
    if (mpixfer__ctrl_decode(buf, n, &c) != MPIXFER_OK || c.kind != kind ||
        strcmp(c.sender, sender) != 0 || strcmp(c.receiver, receiver) != 0 ||
        c.payload_len != len)
        die("control-message seed does not decode back:", file);
    write_seed("ctrl", file, buf, n);
    free(buf);
}

static void ctrl_seeds(void)
{
    char long_name[MPIXFER__NAME_MAX + 1];
    unsigned char chunk[256];
    const mpixfer__wire_region_t one[] = {{0x7f0000001000, 4096, MPIXFER_MEM_DRAM, 0}};
    void *blob;
    size_t len;

    memset(long_name, 'r', MPIXFER__NAME_MAX);
    long_name[MPIXFER__NAME_MAX] = '\0';
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (unsigned char)i;

    ctrl_seed("sync", MPIXFER__CTRL_SYNC, "prefill-0", "decode-0", "kv blocks 0-15 ready", 20);
    ctrl_seed("sync_empty", MPIXFER__CTRL_SYNC, "a", "b", NULL, 0);
    ctrl_seed("sync_long_names", MPIXFER__CTRL_SYNC, long_name, long_name, "x", 1);
    ctrl_seed("desc_req", MPIXFER__CTRL_DESC_REQ, "decode-0", "prefill-0", NULL, 0);
    ctrl_seed("desc_nak", MPIXFER__CTRL_DESC_NAK, "prefill-0", "decode-0", NULL, 0);
    if (fuzz_desc_encode(0x0123456789abcdefULL, 1, "prefill-0", one, 1, &blob, &len) !=
        MPIXFER_OK)
        die("cannot encode descriptor", "for desc_rep");
    ctrl_seed("desc_rep", MPIXFER__CTRL_DESC_REP, "prefill-0", "decode-0", blob, len);
    free(blob);
    ctrl_seed("xwrite", MPIXFER__CTRL_XWRITE, "gpu-0", "gpu-1", chunk, sizeof(chunk));
    ctrl_seed("xack", MPIXFER__CTRL_XACK, "gpu-1", "gpu-0", chunk, 16);
    ctrl_seed("xread", MPIXFER__CTRL_XREAD, "gpu-0", "gpu-1", chunk, 32);
    ctrl_seed("xdata", MPIXFER__CTRL_XDATA, "gpu-1", "gpu-0", chunk, sizeof(chunk));
}

/* ------------------------------------------------------- connection info */

static void conninfo_seed(const char *file, uint64_t world_id, int rank, const char *name)
{
    char *info, parsed[MPIXFER__NAME_MAX + 1], *addr2 = NULL;
    unsigned char key[MPIXFER__KEY_LEN], key2[MPIXFER__KEY_LEN];
    uint64_t wid;
    int r;
    /* Every other seed carries a link address and key (version 3). */
    const char *addr = (rank & 1) ? "10.1.2.3:40123" : NULL;

    for (int i = 0; i < MPIXFER__KEY_LEN; i++)
        key[i] = (unsigned char)(17u * (unsigned)i + (unsigned)rank);
    if (mpixfer__conninfo_format(world_id, rank, addr, key, name, &info) != MPIXFER_OK)
        die("cannot format connection info", file);
    if (mpixfer__conninfo_parse(info, &wid, &r, &addr2, key2, parsed) != MPIXFER_OK ||
        wid != world_id || r != rank || strcmp(parsed, name) != 0 ||
        (addr == NULL) != (addr2 == NULL) ||
        (addr != NULL && (strcmp(addr, addr2) != 0 || memcmp(key, key2, sizeof key) != 0)))
        die("connection-info seed does not parse back:", file);
    free(addr2);
    write_seed("conninfo", file, info, strlen(info)); /* no NUL: the target adds it */
    free(info);
}

/* Handshake messages: a 1-byte selector (0 hello, 1 auth), then the message. */
static void handshake_seeds(void)
{
    unsigned char buf[1 + MPIXFER__HS_MAX], nonce[MPIXFER__HS_NONCE], mac[MPIXFER__HS_MAC];
    size_t n;

    memset(nonce, 0x5a, sizeof nonce);
    memset(mac, 0xc3, sizeof mac);
    buf[0] = 0;
    n = mpixfer__hs_hello_encode(nonce, "prefill-0", buf + 1);
    write_seed("handshake", "hello", buf, n + 1);
    buf[0] = 1;
    n = mpixfer__hs_auth_encode(mac, 0x0123456789abcdefULL, 1, 4242, "decode-0", buf + 1);
    write_seed("handshake", "auth", buf, n + 1);
}

static void conninfo_seeds(void)
{
    char long_name[MPIXFER__NAME_MAX + 1];
    static const char upper[] = "mpixfer:1:0123456789ABCDEF:0012:Agent";

    memset(long_name, 'c', MPIXFER__NAME_MAX);
    long_name[MPIXFER__NAME_MAX] = '\0';
    conninfo_seed("minimal", 0, 0, "a");
    conninfo_seed("typical", 0x0123456789abcdefULL, 1, "prefill-0");
    conninfo_seed("limits", UINT64_MAX, INT32_MAX, long_name);
    conninfo_seed("colon_in_name", 0xfeedfacecafebeefULL, 3, "host:agent:7");
    write_seed("conninfo", "upper_hex_leading_zeros", upper, strlen(upper));
}

int main(int argc, char **argv)
{
    static const char *const targets[] = {"desc", "ctrl", "conninfo", "handshake"};
    char path[4096];

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SEED_DIR [WORK_DIR]\n", argv[0]);
        return 2;
    }
    seed_dir = argv[1];
    make_dir(seed_dir);
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", seed_dir, targets[i]);
        make_dir(path);
        clear_dir(path);
    }
    if (argc == 3) {
        make_dir(argv[2]);
        for (size_t i = 0; i < 4; i++) {
            snprintf(path, sizeof(path), "%s/%s", argv[2], targets[i]);
            make_dir(path);
            clear_dir(path);
        }
    }
    desc_seeds();
    ctrl_seeds();
    conninfo_seeds();
    handshake_seeds();
    printf("fuzz_seeds: wrote %d seeds under %s\n", nseeds, seed_dir);
    return 0;
}
