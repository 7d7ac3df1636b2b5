/* Agent descriptor codec and connection-info strings.
 *
 * Descriptor, little-endian, exactly 32 + name_len + 24 * nregions bytes:
 *    0  magic "MPXF"          4  version u16 (1)      6  flags u16 (0)
 *    8  world id u64         16  rank u32            20  name_len u16 (1..255)
 *   22  reserved u16 (0)     24  nregions u32        28  reserved u32 (0)
 *   32  name bytes (no NUL)
 *   then per region: addr u64, len u64, type u32, device u32
 * Regions are sorted by (addr, len, type, device) without duplicates, so the decoder can
 * reject duplicates in one pass and lookups can binary-search.
 *
 * The decoder is the front door for bytes from other processes: nothing is trusted. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "range_find.h"
#include "wire.h"

#define DESC_MAGIC "MPXF"
#define DESC_VERSION 1
#define DESC_HEADER 32
#define DESC_REGION 24







mpixfer_status_t mpixfer__desc_encode(const mpixfer_agent_t *agent, void **blob_p, size_t *len_p)
{
    size_t name_len = strlen(agent->name);
    size_t len = DESC_HEADER + name_len + DESC_REGION * agent->nregions;
    unsigned char *b, *p;

    if (agent->nregions > UINT32_MAX)
        return MPIXFER_ERR_TOO_LARGE;
    b = malloc(len);
    if (b == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    memcpy(b, DESC_MAGIC, 4);
    mpixfer__put16(b + 4, DESC_VERSION);
    mpixfer__put16(b + 6, 0);
    mpixfer__put64(b + 8, agent->ctx->world_id);
    mpixfer__put32(b + 16, (uint32_t)agent->ctx->rank);
    mpixfer__put16(b + 20, (uint16_t)name_len);
    mpixfer__put16(b + 22, 0);
    mpixfer__put32(b + 24, (uint32_t)agent->nregions);
    mpixfer__put32(b + 28, 0);
    memcpy(b + DESC_HEADER, agent->name, name_len);
    p = b + DESC_HEADER + name_len;
    /* The agent keeps its regions in the order the format requires. */
    for (size_t i = 0; i < agent->nregions; i++, p += DESC_REGION) {
        const mpixfer__region_t *r = agent->regions[i];
        mpixfer__put64(p, (uint64_t)r->addr);
        mpixfer__put64(p + 8, (uint64_t)r->len);
        mpixfer__put32(p + 16, (uint32_t)r->type);
        mpixfer__put32(p + 20, r->device);
    }
    *blob_p = b;
    *len_p = len;
    return MPIXFER_OK;
}

static int wire_cmp(const mpixfer__wire_region_t *a, const mpixfer__wire_region_t *b)
{
    return MPIXFER__RANGE_CMP(a, b);
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        LOG_WARN("bad agent descriptor: " __VA_ARGS__);                                            \
        return MPIXFER_ERR_BAD_DESC;                                                               \
    } while (0)

mpixfer_status_t mpixfer__desc_decode(const void *blob, size_t len, size_t max_regions,
                                      mpixfer__desc_t *out)
{
    const unsigned char *b = blob;
    size_t name_len, nregions, rest;
    mpixfer__wire_region_t *regions = NULL;

    if (blob == NULL || len < DESC_HEADER)
        BAD("%zu bytes, shorter than the %d-byte header", len, DESC_HEADER);
    if (memcmp(b, DESC_MAGIC, 4) != 0)
        BAD("wrong magic");
    if (mpixfer__get16(b + 4) != DESC_VERSION)
        BAD("version %u, this library reads version %d", mpixfer__get16(b + 4), DESC_VERSION);
    if (mpixfer__get16(b + 6) != 0 || mpixfer__get16(b + 22) != 0 || mpixfer__get32(b + 28) != 0)
        BAD("unknown flags or non-zero reserved fields");
    name_len = mpixfer__get16(b + 20);
    nregions = mpixfer__get32(b + 24);
    if (name_len < 1 || name_len > MPIXFER__NAME_MAX)
        BAD("name length %zu", name_len);
    if (nregions > max_regions)
        BAD("%zu regions, more than the limit %zu", nregions, max_regions);
    rest = len - DESC_HEADER;
    /* nregions is bounded by a u32, so this product cannot overflow a 64-bit size_t. */
    if (rest != name_len + DESC_REGION * nregions)
        BAD("%zu bytes, expected %zu", len, DESC_HEADER + name_len + DESC_REGION * nregions);
    if (memchr(b + DESC_HEADER, '\0', name_len) != NULL)
        BAD("NUL in the agent name");

    if (nregions > 0) {
        const unsigned char *p = b + DESC_HEADER + name_len;
        regions = malloc(nregions * sizeof(*regions));
        if (regions == NULL)
            return MPIXFER_ERR_NO_MEMORY;
        for (size_t i = 0; i < nregions; i++, p += DESC_REGION) {
            mpixfer__wire_region_t *r = &regions[i];
            r->addr = mpixfer__get64(p);
            r->len = mpixfer__get64(p + 8);
            r->type = mpixfer__get32(p + 16);
            r->device = mpixfer__get32(p + 20);
            if (r->len == 0 || r->addr == 0 || r->addr + r->len < r->addr ||
                r->addr + r->len > (uint64_t)UINTPTR_MAX || r->type > MPIXFER_MEM_FILE ||
                (i > 0 && wire_cmp(&regions[i - 1], r) >= 0)) {
                LOG_WARN("bad agent descriptor: region %zu [%#" PRIx64 ", +%" PRIu64
                         ") type %" PRIu32 " is empty, wraps, has an unknown type, or is out "
                         "of order/duplicated",
                         i, r->addr, r->len, r->type);
                free(regions);
                return MPIXFER_ERR_BAD_DESC;
            }
        }
    }
    out->world_id = mpixfer__get64(b + 8);
    out->rank = mpixfer__get32(b + 16);
    memcpy(out->name, b + DESC_HEADER, name_len);
    out->name[name_len] = '\0';
    out->nregions = nregions;
    out->regions = regions;
    return MPIXFER_OK;
}

void mpixfer__desc_fini(mpixfer__desc_t *desc)
{
    free(desc->regions);
    desc->regions = NULL;
    desc->nregions = 0;
}

#define DESC_REGION_AT(desc, i) (&(desc)->regions[i])
#define DESC_NREGIONS(desc) ((desc)->nregions)
MPIXFER__DEFINE_RANGE_FIND(find_advertised, const mpixfer__desc_t, DESC_REGION_AT,
                           DESC_NREGIONS)

mpixfer_status_t mpixfer__desc_find(const mpixfer__desc_t *desc, mpixfer_mem_type_t type,
                                    const mpixfer_mem_desc_t *d)
{
    size_t i;
    return find_advertised(desc, type, d, &i);
}

/* -------------------------------------------------------- connection info
 *
 * Version 1: "mpixfer:1:<world id, 16 hex>:<rank>:<agent name>"
 * Version 2: "mpixfer:2:<world id, 16 hex>:<rank>:<MPI port, hex-encoded>:<agent name>"
 * The name comes last because it may hold any byte but NUL; the port is hex-encoded
 * because MPI port names contain ':' and ';'. */

#define CONN_V1 "mpixfer:1:"
#define CONN_V2 "mpixfer:2:"
#define PORT_HEX_MAX (2 * MPI_MAX_PORT_NAME)

mpixfer_status_t mpixfer__conninfo_format(uint64_t world_id, int rank, const char *port,
                                          const char *name, char **info_p)
{
    size_t plen = port ? strlen(port) : 0;
    size_t n = sizeof(CONN_V2) + 16 + 1 + 11 + 1 + 2 * plen + 1 + strlen(name) + 1;
    char *s = malloc(n), *p;

    if (s == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    if (port == NULL) {
        snprintf(s, n, CONN_V1 "%016" PRIx64 ":%d:%s", world_id, rank, name);
    } else {
        p = s + snprintf(s, n, CONN_V2 "%016" PRIx64 ":%d:", world_id, rank);
        for (size_t i = 0; i < plen; i++)
            p += sprintf(p, "%02x", (unsigned char)port[i]);
        snprintf(p, n - (size_t)(p - s), ":%s", name);
    }
    *info_p = s;
    return MPIXFER_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

mpixfer_status_t mpixfer__conninfo_parse(const char *info, uint64_t *world_id_p, int *rank_p,
                                         char **port_p, char name[MPIXFER__NAME_MAX + 1])
{
    const char *p = info;
    uint64_t wid = 0;
    long long rank = 0;
    size_t digits = 0, name_len, hex_len = 0;
    char *port = NULL;
    bool v2;

    if (info == NULL)
        goto bad;
    if (strncmp(p, CONN_V1, sizeof(CONN_V1) - 1) == 0)
        v2 = false;
    else if (strncmp(p, CONN_V2, sizeof(CONN_V2) - 1) == 0)
        v2 = true;
    else
        goto bad;
    p += sizeof(CONN_V1) - 1;
    for (int i = 0; i < 16; i++, p++) {
        int v = hexval(*p);
        if (v < 0)
            goto bad;
        wid = wid << 4 | (uint64_t)v;
    }
    if (*p++ != ':')
        goto bad;
    while (*p >= '0' && *p <= '9' && digits < 10) {
        rank = rank * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || rank > INT32_MAX || *p++ != ':')
        goto bad;
    if (v2) {
        while (hex_len <= PORT_HEX_MAX && hexval(p[hex_len]) >= 0)
            hex_len++;
        if (hex_len == 0 || hex_len % 2 != 0 || hex_len > PORT_HEX_MAX || p[hex_len] != ':')
            goto bad;
        port = malloc(hex_len / 2 + 1);
        if (port == NULL)
            return MPIXFER_ERR_NO_MEMORY;
        for (size_t i = 0; i < hex_len / 2; i++) {
            port[i] = (char)(hexval(p[2 * i]) << 4 | hexval(p[2 * i + 1]));
            if (port[i] == '\0')
                goto bad;
        }
        port[hex_len / 2] = '\0';
        p += hex_len + 1;
    }
    name_len = strnlen(p, MPIXFER__NAME_MAX + 1);
    if (name_len < 1 || name_len > MPIXFER__NAME_MAX)
        goto bad;
    memcpy(name, p, name_len + 1);
    *world_id_p = wid;
    *rank_p = (int)rank;
    *port_p = port;
    return MPIXFER_OK;
bad:
    free(port);
    LOG_WARN("connection info '%.80s' is not of the form mpixfer:1:<16 hex>:<rank>:<name> or "
             "mpixfer:2:<16 hex>:<rank>:<hex port>:<name>",
             info ? info : "(null)");
    return MPIXFER_ERR_BAD_DESC;
}
