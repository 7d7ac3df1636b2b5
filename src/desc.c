/* Agent descriptor codec and connection-info strings.
 *
 * Descriptor, little-endian, 32 + name_len + 24 * nregions bytes, then the link section:
 *    0  magic "MPXF"          4  version u16 (2)      6  flags u16 (bit 0: link section)
 *    8  world id u64         16  rank u32            20  name_len u16 (1..255)
 *   22  reserved u16 (0)     24  nregions u32        28  reserved u32 (0)
 *   32  name bytes (no NUL)
 *   then per region: addr u64, len u64, type u32, device u32
 * Link section (flag bit 0): key[16], addr_len u16 (1..63), "<ipv4>:<port>" (no NUL).
 * It is how an agent of another process reaches this one (link.c); the key is the
 * capability, so a blob is to be kept like a password. Version 1 (no flags) still loads.
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
#define DESC_VERSION 2
#define DESC_FLAG_LINK 1
#define DESC_HEADER 32
#define DESC_REGION 24







mpixfer_status_t mpixfer__desc_encode(const mpixfer_agent_t *agent, bool with_link, void **blob_p,
                                      size_t *len_p)
{
    size_t name_len = strlen(agent->name);
    const char *addr = with_link && agent->reachable ? mpixfer__listen_addr(agent->ctx) : NULL;
    size_t alen = addr ? strlen(addr) : 0;
    size_t len = DESC_HEADER + name_len + DESC_REGION * agent->nregions +
                 (addr ? MPIXFER__KEY_LEN + 2 + alen : 0);
    unsigned char *b, *p;

    if (agent->nregions > UINT32_MAX)
        return MPIXFER_ERR_TOO_LARGE;
    b = malloc(len);
    if (b == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    memcpy(b, DESC_MAGIC, 4);
    mpixfer__put16(b + 4, DESC_VERSION);
    mpixfer__put16(b + 6, addr ? DESC_FLAG_LINK : 0);
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
    if (addr != NULL) {
        memcpy(p, agent->key, MPIXFER__KEY_LEN);
        mpixfer__put16(p + MPIXFER__KEY_LEN, (uint16_t)alen);
        memcpy(p + MPIXFER__KEY_LEN + 2, addr, alen);
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
    size_t name_len, nregions, rest, fixed, alen = 0;
    unsigned version, flags;
    mpixfer__wire_region_t *regions = NULL;

    if (blob == NULL || len < DESC_HEADER)
        BAD("%zu bytes, shorter than the %d-byte header", len, DESC_HEADER);
    if (memcmp(b, DESC_MAGIC, 4) != 0)
        BAD("wrong magic");
    version = mpixfer__get16(b + 4);
    flags = mpixfer__get16(b + 6);
    if (version != 1 && version != DESC_VERSION)
        BAD("version %u, this library reads versions 1 and %d", version, DESC_VERSION);
    if ((flags & ~(version == 1 ? 0u : (unsigned)DESC_FLAG_LINK)) != 0 ||
        mpixfer__get16(b + 22) != 0 || mpixfer__get32(b + 28) != 0)
        BAD("unknown flags or non-zero reserved fields");
    name_len = mpixfer__get16(b + 20);
    nregions = mpixfer__get32(b + 24);
    if (name_len < 1 || name_len > MPIXFER__NAME_MAX)
        BAD("name length %zu", name_len);
    if (nregions > max_regions)
        BAD("%zu regions, more than the limit %zu", nregions, max_regions);
    rest = len - DESC_HEADER;
    /* nregions is bounded by a u32, so this product cannot overflow a 64-bit size_t. */
    fixed = name_len + DESC_REGION * nregions;
    if (flags & DESC_FLAG_LINK) {
        const unsigned char *ls = b + DESC_HEADER + fixed;
        if (rest < fixed + MPIXFER__KEY_LEN + 2)
            BAD("%zu bytes, too short for its link section", len);
        alen = mpixfer__get16(ls + MPIXFER__KEY_LEN);
        if (alen < 1 || alen >= sizeof out->link_addr)
            BAD("link address of %zu bytes", alen);
        fixed += MPIXFER__KEY_LEN + 2 + alen;
    }
    if (rest != fixed)
        BAD("%zu bytes, expected %zu", len, DESC_HEADER + fixed);
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
    out->has_link = (flags & DESC_FLAG_LINK) != 0;
    if (out->has_link) {
        const unsigned char *ls = b + DESC_HEADER + name_len + DESC_REGION * nregions;
        memcpy(out->key, ls, MPIXFER__KEY_LEN);
        memcpy(out->link_addr, ls + MPIXFER__KEY_LEN + 2, alen);
        out->link_addr[alen] = '\0';
        for (size_t i = 0; i < alen; i++)
            if (!((out->link_addr[i] >= '0' && out->link_addr[i] <= '9') ||
                  out->link_addr[i] == '.' || out->link_addr[i] == ':')) {
                free(regions);
                BAD("link address is not <ipv4>:<port>");
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
 * Version 1: "mpixfer:1:<world id, 16 hex>:<rank>:<agent name>"  (its own job only)
 * Version 3: "mpixfer:3:<world id, 16 hex>:<rank>:<ipv4>:<port>:key=<32 hex>:<agent name>"
 * The name comes last because it may hold any byte but NUL. The key is the agent's link
 * secret: whoever holds the string may reach the agent (keep it like a password). */

#define CONN_V1 "mpixfer:1:"
#define CONN_V3 "mpixfer:3:"

mpixfer_status_t mpixfer__conninfo_format(uint64_t world_id, int rank, const char *addr,
                                          const unsigned char *key, const char *name,
                                          char **info_p)
{
    size_t n = sizeof(CONN_V3) + 16 + 1 + 11 + 1 + (addr ? strlen(addr) : 0) + 5 +
               2 * MPIXFER__KEY_LEN + 1 + strlen(name) + 1;
    char *s = malloc(n), *p;

    if (s == NULL)
        return MPIXFER_ERR_NO_MEMORY;
    if (addr == NULL) {
        snprintf(s, n, CONN_V1 "%016" PRIx64 ":%d:%s", world_id, rank, name);
    } else {
        p = s + snprintf(s, n, CONN_V3 "%016" PRIx64 ":%d:%s:key=", world_id, rank, addr);
        for (size_t i = 0; i < MPIXFER__KEY_LEN; i++)
            p += sprintf(p, "%02x", key[i]);
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
    return -1;
}

mpixfer_status_t mpixfer__conninfo_parse(const char *info, uint64_t *world_id_p, int *rank_p,
                                         char **addr_p, unsigned char key_p[MPIXFER__KEY_LEN],
                                         char name[MPIXFER__NAME_MAX + 1])
{
    const char *p = info;
    uint64_t wid = 0;
    long long rank = 0;
    size_t digits = 0, name_len, alen = 0;
    unsigned char key[MPIXFER__KEY_LEN];
    char *addr = NULL;
    bool v3;

    if (info == NULL)
        goto bad;
    if (strncmp(p, CONN_V1, sizeof(CONN_V1) - 1) == 0)
        v3 = false;
    else if (strncmp(p, CONN_V3, sizeof(CONN_V3) - 1) == 0)
        v3 = true;
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
    if (v3) {
        /* <ipv4>:<port> up to ":key=": digits and dots, one colon, 1..5 port digits */
        size_t ip = strspn(p, "0123456789."), port;
        if (ip < 1 || ip > 15 || p[ip] != ':')
            goto bad;
        port = strspn(p + ip + 1, "0123456789");
        if (port < 1 || port > 5 || strncmp(p + ip + 1 + port, ":key=", 5) != 0)
            goto bad;
        alen = ip + 1 + port;
        addr = strndup(p, alen);
        if (addr == NULL)
            return MPIXFER_ERR_NO_MEMORY;
        p += alen + 5;
        for (size_t i = 0; i < MPIXFER__KEY_LEN; i++) {
            int hi = hexval(p[2 * i]), lo = hi < 0 ? -1 : hexval(p[2 * i + 1]);
            if (hi < 0 || lo < 0)
                goto bad;
            key[i] = (unsigned char)(hi << 4 | lo);
        }
        p += 2 * MPIXFER__KEY_LEN;
        if (*p++ != ':')
            goto bad;
    }
    name_len = strnlen(p, MPIXFER__NAME_MAX + 1);
    if (name_len < 1 || name_len > MPIXFER__NAME_MAX)
        goto bad;
    memcpy(name, p, name_len + 1);
    *world_id_p = wid;
    *rank_p = (int)rank;
    *addr_p = addr;
    if (addr != NULL)
        memcpy(key_p, key, MPIXFER__KEY_LEN);
    return MPIXFER_OK;
bad:
    free(addr);
    LOG_WARN("connection info '%.80s' is not of the form mpixfer:1:<16 hex>:<rank>:<name> or "
             "mpixfer:3:<16 hex>:<rank>:<ipv4>:<port>:key=<32 hex>:<name>",
             info ? info : "(null)");
    return MPIXFER_ERR_BAD_DESC;
}
