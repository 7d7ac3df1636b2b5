/* libFuzzer target: the agent-descriptor decoder, mpixfer__desc_decode().
 *
 * Every input is decoded with a generous region limit and with small ones. When a decode
 * succeeds the result must be what the format promises (src/desc.c): the exact length,
 * a name of name_len bytes without NUL, regions non-empty, non-wrapping, of a known type,
 * strictly sorted by (addr, len, type, device); re-encoding it must give back the input
 * byte for byte; and every region must be found again by mpixfer__desc_find(). */
#include "fuzz_common.h"
#include "range_find.h"

#define DESC_HEADER 32
#define DESC_REGION 24
/* mpixfer__desc_find bounds its backwards walk at 4096 regions (hostile layouts), so the
 * "each region is found" property is only promised below that. */
#define FIND_EXACT_MAX 4096

static int wire_cmp(const mpixfer__wire_region_t *a, const mpixfer__wire_region_t *b)
{
    return MPIXFER__RANGE_CMP(a, b);
}

static void check_decoded(const uint8_t *data, size_t size, const mpixfer__desc_t *d)
{
    size_t name_len = strnlen(d->name, sizeof(d->name));
    void *blob = NULL;
    size_t blob_len = 0;

    FUZZ_CHECK(name_len >= 1 && name_len <= MPIXFER__NAME_MAX);
    FUZZ_CHECK(size == DESC_HEADER + name_len + DESC_REGION * d->nregions);
    FUZZ_CHECK(memcmp(d->name, data + DESC_HEADER, name_len) == 0);
    FUZZ_CHECK((d->nregions == 0) == (d->regions == NULL));
    for (size_t i = 0; i < d->nregions; i++) {
        const mpixfer__wire_region_t *r = &d->regions[i];
        FUZZ_CHECK(r->len > 0 && r->addr > 0);
        FUZZ_CHECK(r->addr + r->len > r->addr); /* no wrap */
        FUZZ_CHECK(r->type <= MPIXFER_MEM_FILE);
        if (i > 0)
            FUZZ_CHECK(wire_cmp(&d->regions[i - 1], r) < 0); /* sorted, unique */
    }

    /* Round trip: the format has one encoding per descriptor. */
    FUZZ_CHECK(fuzz_desc_encode(d->world_id, d->rank, d->name, d->regions, d->nregions, &blob,
                                &blob_len) == MPIXFER_OK);
    /* The encoder writes version 2 without a link section (it has no listener): the input
     * is that plus, when its flag is set, the link section (key, address) decoded. */
    {
        size_t core = size - (d->has_link ? MPIXFER__KEY_LEN + 2 + strlen(d->link_addr) : 0);
        FUZZ_CHECK(blob_len == core);
        FUZZ_CHECK(memcmp(blob, data, 4) == 0 && memcmp(blob + 8, data + 8, core - 8) == 0);
        FUZZ_CHECK(data[4] == 1 || data[4] == 2);
        if (d->has_link) {
            FUZZ_CHECK(memcmp(d->key, data + core, MPIXFER__KEY_LEN) == 0);
            FUZZ_CHECK(memcmp(d->link_addr, data + core + MPIXFER__KEY_LEN + 2,
                              strlen(d->link_addr)) == 0);
        }
    }
    free(blob);

    /* Lookups in what was decoded: each region finds itself; other queries give one of the
     * three documented answers and touch nothing out of bounds. */
    for (size_t i = 0; i < d->nregions; i++) {
        const mpixfer__wire_region_t *r = &d->regions[i];
        mpixfer_mem_desc_t q = {.addr = (uintptr_t)r->addr, .len = (size_t)r->len,
                                .device_id = r->device};
        mpixfer_status_t st = mpixfer__desc_find(d, (mpixfer_mem_type_t)r->type, &q);
        if (d->nregions <= FIND_EXACT_MAX)
            FUZZ_CHECK(st == MPIXFER_OK);
        if (r->len > 1) {
            q.addr++;
            q.len--;
            st = mpixfer__desc_find(d, (mpixfer_mem_type_t)r->type, &q);
            if (d->nregions <= FIND_EXACT_MAX)
                FUZZ_CHECK(st == MPIXFER_OK);
        }
        q.addr = (uintptr_t)r->addr;
        q.len = 1;
        q.device_id = r->device + 1;
        st = mpixfer__desc_find(d, MPIXFER_MEM_VRAM, &q);
        FUZZ_CHECK(st == MPIXFER_OK || st == MPIXFER_ERR_NOT_FOUND ||
                   st == MPIXFER_ERR_OUT_OF_RANGE);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {(size_t)1 << 20, 3, 0};
    size_t decoded_regions = 0;
    int first_ok = 0;

    for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
        mpixfer__desc_t d;
        mpixfer_status_t st;

        memset(&d, 0xa5, sizeof(d)); /* nothing may be read from out before it is written */
        st = mpixfer__desc_decode(data, size, limits[k], &d);
        if (st != MPIXFER_OK) {
            FUZZ_CHECK(st == MPIXFER_ERR_BAD_DESC || st == MPIXFER_ERR_NO_MEMORY);
            /* A smaller limit refuses exactly the descriptors with more regions. */
            if (k > 0 && first_ok)
                FUZZ_CHECK(decoded_regions > limits[k]);
            continue;
        }
        FUZZ_CHECK(d.nregions <= limits[k]);
        if (k == 0) {
            first_ok = 1;
            decoded_regions = d.nregions;
        } else {
            FUZZ_CHECK(first_ok && d.nregions == decoded_regions);
        }
        check_decoded(data, size, &d);
        mpixfer__desc_fini(&d);
        FUZZ_CHECK(d.regions == NULL && d.nregions == 0);
    }
    return 0;
}
