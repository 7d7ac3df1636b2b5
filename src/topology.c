/* Topology: which NIC and which CPUs belong to each GPU, from hwloc.
 *
 * The rule is NCCL's and UCX's: classify every GPU/NIC pair by the lowest object of the
 * hwloc tree they share (PIX, PXB, PHB, NODE, SYS; see mpixfer/topology.h), break ties by
 * the number of tree hops between them, prefer RDMA devices to plain network interfaces
 * outright, and spread GPUs over NICs that are equally close. Everything is computed once
 * at load time, so the query functions only copy out.
 *
 * hwloc pitfalls this file works around (see ../shared/topologies/README.md):
 *  - PCI and OS devices are dropped by the default I/O filter, in XML imports too;
 *  - I/O objects all have the same negative depth per type, so ancestors are found by
 *    walking parents (hwloc_get_common_ancestor_obj compares depths);
 *  - hwloc_*_get_device_cpuset() read sysfs and fail on XML; the CPUs of a device are the
 *    cpuset of its first non-I/O ancestor. */
#define _GNU_SOURCE
#include <errno.h>
#include <hwloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpixfer/topology.h>

#include "log.h"

#if HWLOC_API_VERSION < 0x00020000 || HWLOC_API_VERSION >= 0x00030000
#error "mpixfer's topology module is written for the hwloc 2.x API"
#endif

#define PCI_VENDOR_NVIDIA 0x10de
/* PCI base class 0x03 is "display controller": VGA (0300) and 3D (0302). NVIDIA's other
 * functions (HDMI audio 0403, NVSwitch 0680) are not GPUs. */
#define PCI_BASE_CLASS_DISPLAY 0x03
/* IB_PORT_ACTIVE in the Linux RDMA stack, as hwloc reports it in "Port<N>State". */
#define IB_PORT_STATE_ACTIVE 4

typedef struct {
    hwloc_obj_t pci;
    int index;
    bool index_from_os;
    int os_index; /* from cudaN/nvmlN, -1 when none (used while numbering) */
    int nic;      /* chosen NIC, -1 when there is none */
} topo_gpu_t;

typedef struct {
    hwloc_obj_t osdev;
    hwloc_obj_t pci; /* the PCI function above it; NULL for a device without one */
    bool rdma;
    int port;
} topo_nic_t;

typedef struct {
    mpixfer_link_t link;
    int hops;
} topo_link_t;

struct mpixfer_topology {
    hwloc_topology_t hw;
    topo_gpu_t *gpus; /* gpus[i].index == i */
    int ngpus;
    topo_nic_t *nics; /* RDMA devices first, then PCI order */
    int nnics;
    topo_link_t *links; /* ngpus rows of nnics */
};

/* ------------------------------------------------------------------ helpers */

static void copy_string(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src != NULL ? src : "");
}

static void busid_string(hwloc_obj_t pci, char *buf, size_t len)
{
    if (pci == NULL) {
        copy_string(buf, len, "");
        return;
    }
    snprintf(buf, len, "%04x:%02x:%02x.%01x", (unsigned)pci->attr->pcidev.domain,
             (unsigned)pci->attr->pcidev.bus, (unsigned)pci->attr->pcidev.dev,
             (unsigned)pci->attr->pcidev.func);
}

static int pci_compare(hwloc_obj_t a, hwloc_obj_t b)
{
    const struct hwloc_pcidev_attr_s *x = &a->attr->pcidev, *y = &b->attr->pcidev;
    if (x->domain != y->domain)
        return x->domain < y->domain ? -1 : 1;
    if (x->bus != y->bus)
        return x->bus < y->bus ? -1 : 1;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->func != y->func)
        return x->func < y->func ? -1 : 1;
    return 0;
}

/* The PCI function an OS device belongs to, or NULL. */
static hwloc_obj_t pci_of(hwloc_obj_t obj)
{
    for (; obj != NULL; obj = obj->parent)
        if (obj->type == HWLOC_OBJ_PCI_DEVICE)
            return obj;
    return NULL;
}

static bool is_bridge(hwloc_obj_t obj, hwloc_obj_bridge_type_t upstream)
{
    return obj->type == HWLOC_OBJ_BRIDGE && obj->attr->bridge.upstream_type == upstream;
}

/* The CPUs and NUMA node of an I/O object are those of its first normal ancestor. */
static hwloc_obj_t locality(hwloc_topology_t hw, hwloc_obj_t obj)
{
    return hwloc_get_non_io_ancestor_obj(hw, obj);
}

static int numa_of(hwloc_topology_t hw, hwloc_obj_t obj)
{
    hwloc_obj_t where = locality(hw, obj);
    if (where == NULL || where->nodeset == NULL || hwloc_bitmap_weight(where->nodeset) != 1)
        return -1;
    return hwloc_bitmap_first(where->nodeset);
}

/* A list ("0-7,16-23") reads best and is what taskset -c and numactl take; a set too
 * scattered for the buffer falls back to the shorter hex mask. */
static void cpuset_string(hwloc_const_bitmap_t set, char *buf, size_t len)
{
    int n;
    if (set == NULL) {
        copy_string(buf, len, "");
        return;
    }
    n = hwloc_bitmap_list_snprintf(buf, len, set);
    if (n < 0 || (size_t)n >= len)
        hwloc_bitmap_snprintf(buf, len, set);
}

/* "cuda3" with prefix "cuda" -> 3; -1 when the name is not prefix + digits. */
static int parse_indexed_name(const char *name, const char *prefix)
{
    size_t plen = strlen(prefix);
    long v = 0;
    const char *p;
    if (name == NULL || strncmp(name, prefix, plen) != 0 || name[plen] == '\0')
        return -1;
    for (p = name + plen; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > 100000)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

/* ---------------------------------------------------------- classification */

/* The lowest object above both; parents are walked because I/O objects cannot be compared
 * by depth. The tree is shallow, so the quadratic walk costs nothing. */
static hwloc_obj_t common_ancestor(hwloc_obj_t a, hwloc_obj_t b)
{
    hwloc_obj_t x, y;
    for (x = a; x != NULL; x = x->parent)
        for (y = b; y != NULL; y = y->parent)
            if (x == y)
                return x;
    return NULL;
}

/* Parent links from @p obj up to its ancestor @p top, and how many bridges lie strictly
 * between them. */
static void path_up(hwloc_obj_t obj, hwloc_obj_t top, int *hops_p, int *bridges_p)
{
    hwloc_obj_t o;
    *hops_p = 0;
    *bridges_p = 0;
    for (o = obj; o != NULL && o != top; o = o->parent) {
        (*hops_p)++;
        if (o != obj && o->type == HWLOC_OBJ_BRIDGE)
            (*bridges_p)++;
    }
}

/* How close two I/O objects are. The lowest shared object decides the class; the bridges
 * below it tell one switch from a deeper tree: a PCIe switch appears in hwloc as an
 * upstream-port bridge whose children are downstream-port bridges, so two devices of one
 * switch each have at most one bridge (their downstream port) below the shared one. */
static topo_link_t classify(hwloc_topology_t hw, hwloc_obj_t a, hwloc_obj_t b)
{
    topo_link_t r = {MPIXFER_LINK_SYS, 0};
    hwloc_obj_t common = common_ancestor(a, b);
    int hops_a, hops_b, bridges_a, bridges_b;

    if (common == NULL)
        return r; /* cannot happen within one topology; treat as farthest */
    path_up(a, common, &hops_a, &bridges_a);
    path_up(b, common, &hops_b, &bridges_b);
    r.hops = hops_a + hops_b;

    if (common->type == HWLOC_OBJ_PCI_DEVICE || is_bridge(common, HWLOC_OBJ_BRIDGE_PCI)) {
        r.link = (bridges_a <= 1 && bridges_b <= 1) ? MPIXFER_LINK_PIX : MPIXFER_LINK_PXB;
    } else if (is_bridge(common, HWLOC_OBJ_BRIDGE_HOST)) {
        r.link = MPIXFER_LINK_PHB;
    } else {
        /* Different host bridges: within one NUMA node or across. */
        hwloc_obj_t la = locality(hw, a), lb = locality(hw, b);
        bool same = la != NULL && lb != NULL && la->nodeset != NULL && lb->nodeset != NULL &&
                    hwloc_bitmap_isequal(la->nodeset, lb->nodeset);
        r.link = same ? MPIXFER_LINK_NODE : MPIXFER_LINK_SYS;
    }
    return r;
}

/* ---------------------------------------------------------------- discovery */

static int gpu_pci_compare(const void *a, const void *b)
{
    return pci_compare(((const topo_gpu_t *)a)->pci, ((const topo_gpu_t *)b)->pci);
}

static int gpu_index_compare(const void *a, const void *b)
{
    return ((const topo_gpu_t *)a)->index - ((const topo_gpu_t *)b)->index;
}

/* The CUDA index hwloc reports for a GPU: cudaN (the CUDA runtime's numbering) first,
 * else nvmlN (NVML's, PCI order over all GPUs); -1 without either. */
static int gpu_os_index(hwloc_obj_t pci)
{
    int cuda = -1, nvml = -1;
    hwloc_obj_t c;
    for (c = pci->io_first_child; c != NULL; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE)
            continue;
        if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC && cuda < 0)
            cuda = parse_indexed_name(c->name, "cuda");
        else if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU && nvml < 0)
            nvml = parse_indexed_name(c->name, "nvml");
    }
    return cuda >= 0 ? cuda : nvml;
}

static bool is_gpu(hwloc_obj_t pci)
{
    return pci->attr->pcidev.vendor_id == PCI_VENDOR_NVIDIA &&
           (pci->attr->pcidev.class_id >> 8) == PCI_BASE_CLASS_DISPLAY;
}

static mpixfer_status_t find_gpus(mpixfer_topology_t *t)
{
    hwloc_obj_t obj = NULL;
    bool *taken;
    int n = 0, i, next;

    while ((obj = hwloc_get_next_pcidev(t->hw, obj)) != NULL)
        if (is_gpu(obj))
            n++;
    if (n == 0)
        return MPIXFER_OK;

    t->gpus = calloc((size_t)n, sizeof *t->gpus);
    taken = calloc((size_t)n, sizeof *taken);
    if (t->gpus == NULL || taken == NULL) {
        free(taken);
        LOG_ERROR("out of memory listing %d GPUs", n);
        return MPIXFER_ERR_NO_MEMORY;
    }
    obj = NULL;
    while ((obj = hwloc_get_next_pcidev(t->hw, obj)) != NULL)
        if (is_gpu(obj)) {
            t->gpus[t->ngpus].pci = obj;
            t->gpus[t->ngpus].os_index = gpu_os_index(obj);
            t->gpus[t->ngpus].nic = -1;
            t->ngpus++;
        }
    qsort(t->gpus, (size_t)n, sizeof *t->gpus, gpu_pci_compare);

    /* Indices hwloc knows first; the others take the free ones in PCI order, which is
     * CUDA's order under CUDA_DEVICE_ORDER=PCI_BUS_ID. An index outside 0..n-1 or taken
     * twice means hwloc's view and ours disagree: ignore it rather than guess. */
    for (i = 0; i < n; i++) {
        int os = t->gpus[i].os_index;
        t->gpus[i].index = -1;
        if (os >= 0 && os < n && !taken[os]) {
            t->gpus[i].index = os;
            t->gpus[i].index_from_os = true;
            taken[os] = true;
        } else if (os >= 0) {
            char busid[MPIXFER_TOPO_BUSID_MAX];
            busid_string(t->gpus[i].pci, busid, sizeof busid);
            LOG_INFO("GPU %s: ignoring CUDA index %d (out of range or taken)", busid, os);
        }
    }
    for (i = 0, next = 0; i < n; i++) {
        if (t->gpus[i].index >= 0)
            continue;
        while (taken[next])
            next++;
        t->gpus[i].index = next;
        taken[next] = true;
    }
    free(taken);
    qsort(t->gpus, (size_t)n, sizeof *t->gpus, gpu_index_compare);
    return MPIXFER_OK;
}

/* True when a PCI function also carries an RDMA device: its network interface (IPoIB or
 * the RoCE netdev) is the same hardware and must not count as a second NIC. */
static bool has_rdma_child(hwloc_obj_t pci)
{
    hwloc_obj_t c;
    for (c = pci != NULL ? pci->io_first_child : NULL; c != NULL; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && c->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS)
            return true;
    return false;
}

/* The port UCX should use: the first active one, else the first listed, else 1. */
static int rdma_port(hwloc_obj_t osdev)
{
    int first = 0, active = 0;
    unsigned i;
    for (i = 0; i < osdev->infos_count; i++) {
        const char *name = osdev->infos[i].name, *value = osdev->infos[i].value;
        unsigned port = 0;
        int end = 0;
        if (name == NULL || sscanf(name, "Port%uState%n", &port, &end) != 1 || end == 0 ||
            name[end] != '\0' || port == 0 || port > 255)
            continue;
        if (first == 0 || (int)port < first)
            first = (int)port;
        if (value != NULL && atoi(value) == IB_PORT_STATE_ACTIVE && (active == 0 || (int)port < active))
            active = (int)port;
    }
    return active ? active : first ? first : 1;
}

static int nic_compare(const void *a, const void *b)
{
    const topo_nic_t *x = a, *y = b;
    if (x->rdma != y->rdma)
        return x->rdma ? -1 : 1;
    if ((x->pci == NULL) != (y->pci == NULL))
        return x->pci != NULL ? -1 : 1;
    if (x->pci != NULL && x->pci != y->pci)
        return pci_compare(x->pci, y->pci);
    return strcmp(x->osdev->name, y->osdev->name);
}

static bool is_nic(hwloc_obj_t osdev, bool *rdma_p)
{
    if (osdev->name == NULL || osdev->name[0] == '\0')
        return false;
    if (osdev->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS) {
        *rdma_p = true;
        return true;
    }
    if (osdev->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK && !has_rdma_child(pci_of(osdev))) {
        *rdma_p = false;
        return true;
    }
    return false;
}

static mpixfer_status_t find_nics(mpixfer_topology_t *t)
{
    hwloc_obj_t obj = NULL;
    bool rdma;
    int n = 0;

    while ((obj = hwloc_get_next_osdev(t->hw, obj)) != NULL)
        n += is_nic(obj, &rdma);
    if (n == 0)
        return MPIXFER_OK;
    t->nics = calloc((size_t)n, sizeof *t->nics);
    if (t->nics == NULL) {
        LOG_ERROR("out of memory listing %d NICs", n);
        return MPIXFER_ERR_NO_MEMORY;
    }
    obj = NULL;
    while ((obj = hwloc_get_next_osdev(t->hw, obj)) != NULL) {
        topo_nic_t *nic = &t->nics[t->nnics];
        if (!is_nic(obj, &rdma))
            continue;
        nic->osdev = obj;
        nic->pci = pci_of(obj);
        nic->rdma = rdma;
        nic->port = rdma ? rdma_port(obj) : 0;
        t->nnics++;
    }
    qsort(t->nics, (size_t)t->nnics, sizeof *t->nics, nic_compare);
    return MPIXFER_OK;
}

/* ------------------------------------------------------------------ choice */

/* Orders NICs for one GPU: RDMA first, then class, then hops. 0 means equally good. */
static int nic_rank_compare(const topo_nic_t *na, topo_link_t la, const topo_nic_t *nb,
                            topo_link_t lb)
{
    if (na->rdma != nb->rdma)
        return na->rdma ? -1 : 1;
    if (la.link != lb.link)
        return la.link < lb.link ? -1 : 1;
    if (la.hops != lb.hops)
        return la.hops < lb.hops ? -1 : 1;
    return 0;
}

static mpixfer_status_t compute_links(mpixfer_topology_t *t)
{
    int g, k;
    if (t->ngpus == 0 || t->nnics == 0)
        return MPIXFER_OK;
    t->links = calloc((size_t)t->ngpus * (size_t)t->nnics, sizeof *t->links);
    if (t->links == NULL) {
        LOG_ERROR("out of memory for a %dx%d GPU/NIC matrix", t->ngpus, t->nnics);
        return MPIXFER_ERR_NO_MEMORY;
    }
    for (g = 0; g < t->ngpus; g++)
        for (k = 0; k < t->nnics; k++) {
            hwloc_obj_t nic = t->nics[k].pci != NULL ? t->nics[k].pci : t->nics[k].osdev;
            t->links[(size_t)g * t->nnics + k] = classify(t->hw, t->gpus[g].pci, nic);
        }
    return MPIXFER_OK;
}

/* Each GPU takes one of its best NICs. Among equally good ones it takes the one with the
 * fewest GPUs so far, and GPUs with fewer options choose first, so a GPU that could use
 * either NIC does not take the only NIC another GPU can use. */
static mpixfer_status_t choose_nics(mpixfer_topology_t *t)
{
    int *ncand, *order, *load, g, k, i, j;
    const topo_link_t *row;

    if (t->ngpus == 0 || t->nnics == 0)
        return MPIXFER_OK;
    ncand = calloc((size_t)t->ngpus, sizeof *ncand);
    order = calloc((size_t)t->ngpus, sizeof *order);
    load = calloc((size_t)t->nnics, sizeof *load);
    if (ncand == NULL || order == NULL || load == NULL) {
        free(ncand);
        free(order);
        free(load);
        LOG_ERROR("out of memory choosing NICs");
        return MPIXFER_ERR_NO_MEMORY;
    }

    for (g = 0; g < t->ngpus; g++) {
        int best = 0;
        row = &t->links[(size_t)g * t->nnics];
        for (k = 1; k < t->nnics; k++)
            if (nic_rank_compare(&t->nics[k], row[k], &t->nics[best], row[best]) < 0)
                best = k;
        for (k = 0; k < t->nnics; k++)
            ncand[g] += nic_rank_compare(&t->nics[k], row[k], &t->nics[best], row[best]) == 0;
        /* Insertion sort by candidate count, stable so equal counts keep GPU order. */
        for (i = g; i > 0 && ncand[order[i - 1]] > ncand[g]; i--)
            order[i] = order[i - 1];
        order[i] = g;
    }

    for (j = 0; j < t->ngpus; j++) {
        int pick = -1, best = 0;
        g = order[j];
        row = &t->links[(size_t)g * t->nnics];
        for (k = 1; k < t->nnics; k++)
            if (nic_rank_compare(&t->nics[k], row[k], &t->nics[best], row[best]) < 0)
                best = k;
        for (k = 0; k < t->nnics; k++)
            if (nic_rank_compare(&t->nics[k], row[k], &t->nics[best], row[best]) == 0 &&
                (pick < 0 || load[k] < load[pick]))
                pick = k;
        t->gpus[g].nic = pick;
        load[pick]++;
    }
    free(ncand);
    free(order);
    free(load);
    return MPIXFER_OK;
}

/* ---------------------------------------------------------------- topology */

mpixfer_status_t mpixfer_topology_load(const char *xml_path, mpixfer_topology_t **topo_p)
{
    mpixfer_topology_t *t;
    mpixfer_status_t st;

    if (topo_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "topo_p is NULL");
    if (xml_path == NULL) {
        const char *env = getenv("MPIXFER_TOPOLOGY_XML");
        if (env != NULL && env[0] != '\0')
            xml_path = env;
    }
    /* hwloc's ABI changes with its major version; a mismatch would misread every object. */
    if ((hwloc_get_api_version() >> 16) != (HWLOC_API_VERSION >> 16)) {
        LOG_ERROR("hwloc at run time has API 0x%x, mpixfer was built for 0x%x",
                  hwloc_get_api_version(), (unsigned)HWLOC_API_VERSION);
        return MPIXFER_ERR_UNSUPPORTED;
    }

    t = calloc(1, sizeof *t);
    if (t == NULL || hwloc_topology_init(&t->hw) != 0) {
        free(t);
        LOG_ERROR("out of memory creating an hwloc topology");
        return MPIXFER_ERR_NO_MEMORY;
    }
    /* Keep every bridge, PCI and OS device: the default filter drops them (from XML files
     * too), and the classes need every bridge on the path. Set before the XML is named. */
    hwloc_topology_set_io_types_filter(t->hw, HWLOC_TYPE_FILTER_KEEP_ALL);
    if (xml_path != NULL && hwloc_topology_set_xml(t->hw, xml_path) != 0) {
        LOG_WARN("cannot use topology file '%s': %s", xml_path, strerror(errno));
        mpixfer_topology_destroy(t);
        return MPIXFER_ERR_IO;
    }
    if (hwloc_topology_load(t->hw) != 0) {
        if (xml_path != NULL)
            LOG_WARN("cannot load topology file '%s': %s", xml_path, strerror(errno));
        else
            LOG_ERROR("hwloc cannot discover this machine: %s", strerror(errno));
        mpixfer_topology_destroy(t);
        return MPIXFER_ERR_IO;
    }

    st = find_gpus(t);
    if (st == MPIXFER_OK)
        st = find_nics(t);
    if (st == MPIXFER_OK)
        st = compute_links(t);
    if (st == MPIXFER_OK)
        st = choose_nics(t);
    if (st != MPIXFER_OK) {
        mpixfer_topology_destroy(t);
        return st;
    }
    LOG_DEBUG("topology %s: %d GPUs, %d NICs", xml_path != NULL ? xml_path : "(this machine)",
              t->ngpus, t->nnics);
    *topo_p = t;
    return MPIXFER_OK;
}

void mpixfer_topology_destroy(mpixfer_topology_t *topo)
{
    if (topo == NULL)
        return;
    if (topo->hw != NULL)
        hwloc_topology_destroy(topo->hw);
    free(topo->gpus);
    free(topo->nics);
    free(topo->links);
    free(topo);
}

int mpixfer_topology_num_gpus(const mpixfer_topology_t *topo)
{
    return topo != NULL ? topo->ngpus : -1;
}

int mpixfer_topology_num_nics(const mpixfer_topology_t *topo)
{
    return topo != NULL ? topo->nnics : -1;
}

mpixfer_status_t mpixfer_topology_gpu_info(const mpixfer_topology_t *topo, int gpu,
                                           mpixfer_gpu_info_t *info_p)
{
    mpixfer_gpu_info_t info;
    const topo_gpu_t *g;
    hwloc_obj_t where;

    if (topo == NULL || info_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NULL topology or info_p");
    if (gpu < 0 || gpu >= topo->ngpus)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "GPU %d out of range (%d GPUs)", gpu, topo->ngpus);
    g = &topo->gpus[gpu];
    where = locality(topo->hw, g->pci);
    memset(&info, 0, sizeof info);
    info.index = g->index;
    info.index_from_os = g->index_from_os;
    busid_string(g->pci, info.pci_bus_id, sizeof info.pci_bus_id);
    cpuset_string(where != NULL ? where->cpuset : NULL, info.cpuset, sizeof info.cpuset);
    info.numa_node = numa_of(topo->hw, g->pci);
    info.nic = g->nic;
    info.nic_link = g->nic >= 0 ? topo->links[(size_t)gpu * topo->nnics + g->nic].link
                                : MPIXFER_LINK_SYS;
    *info_p = info;
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_topology_nic_info(const mpixfer_topology_t *topo, int nic,
                                           mpixfer_nic_info_t *info_p)
{
    mpixfer_nic_info_t info;
    const topo_nic_t *n;

    if (topo == NULL || info_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NULL topology or info_p");
    if (nic < 0 || nic >= topo->nnics)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NIC %d out of range (%d NICs)", nic, topo->nnics);
    n = &topo->nics[nic];
    memset(&info, 0, sizeof info);
    copy_string(info.name, sizeof info.name, n->osdev->name);
    info.rdma = n->rdma;
    info.port = n->port;
    busid_string(n->pci, info.pci_bus_id, sizeof info.pci_bus_id);
    info.numa_node = numa_of(topo->hw, n->osdev);
    *info_p = info;
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_topology_link(const mpixfer_topology_t *topo, int gpu, int nic,
                                       mpixfer_link_t *link_p, int *hops_p)
{
    topo_link_t l;
    if (topo == NULL || link_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NULL topology or link_p");
    if (gpu < 0 || gpu >= topo->ngpus || nic < 0 || nic >= topo->nnics)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "GPU %d or NIC %d out of range (%d GPUs, %d NICs)",
                      gpu, nic, topo->ngpus, topo->nnics);
    l = topo->links[(size_t)gpu * topo->nnics + nic];
    *link_p = l.link;
    if (hops_p != NULL)
        *hops_p = l.hops;
    return MPIXFER_OK;
}

const char *mpixfer_link_name(mpixfer_link_t link)
{
    switch (link) {
    case MPIXFER_LINK_PIX:
        return "PIX";
    case MPIXFER_LINK_PXB:
        return "PXB";
    case MPIXFER_LINK_PHB:
        return "PHB";
    case MPIXFER_LINK_NODE:
        return "NODE";
    case MPIXFER_LINK_SYS:
        return "SYS";
    }
    return "?";
}

/* ---------------------------------------------------------------- affinity */

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

/* The node-local rank the launcher gave us: Open MPI, then MPICH (Hydra), then Slurm. */
static bool env_local_rank(int *rank_p, const char **source_p)
{
    static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                        "SLURM_LOCALID"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        char *end;
        long r;
        if (v == NULL || v[0] == '\0')
            continue;
        errno = 0;
        r = strtol(v, &end, 10);
        if (errno != 0 || *end != '\0' || r < 0 || r > 1000000) {
            LOG_WARN("ignoring %s='%s': not a local rank", names[i], v);
            continue;
        }
        *rank_p = (int)r;
        *source_p = names[i];
        return true;
    }
    return false;
}

/* MPIXFER_NIC: "name" or "name:port". A name the topology knows takes its port from there
 * unless one is given; an unknown name is used as given (the user may know better than a
 * stale topology file). */
static mpixfer_status_t forced_nic(const mpixfer_topology_t *topo, const char *value,
                                   mpixfer_affinity_t *a)
{
    const char *colon = strrchr(value, ':');
    size_t name_len = colon != NULL ? (size_t)(colon - value) : strlen(value);
    int port = 0, k;

    if (name_len == 0 || name_len >= sizeof a->nic_name)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "MPIXFER_NIC='%s': empty or longer than %d bytes",
                      value, MPIXFER_TOPO_NAME_MAX - 1);
    if (colon != NULL) {
        char *end;
        long p;
        errno = 0;
        p = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || p < 1 || p > 255)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "MPIXFER_NIC='%s': port must be 1..255", value);
        port = (int)p;
    }
    memcpy(a->nic_name, value, name_len);
    a->nic_name[name_len] = '\0';
    a->nic_forced = true;
    a->nic = -1;
    for (k = 0; k < topo->nnics; k++)
        if (strcmp(topo->nics[k].osdev->name, a->nic_name) == 0) {
            a->nic = k;
            break;
        }
    if (a->nic >= 0) {
        a->nic_port = port != 0 ? port : topo->nics[a->nic].port;
        if (a->gpu >= 0)
            a->link = topo->links[(size_t)a->gpu * topo->nnics + a->nic].link;
    } else {
        LOG_WARN("MPIXFER_NIC='%s': no such NIC in the topology; using it as given", value);
        a->nic_port = port;
    }
    return MPIXFER_OK;
}

mpixfer_status_t mpixfer_affinity_compute(const mpixfer_topology_t *topo, int local_gpu,
                                          mpixfer_affinity_t *aff_p)
{
    mpixfer_affinity_t a;
    const char *nic_env, *ucx_env;
    int gpu = 0;

    if (topo == NULL || aff_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NULL topology or aff_p");
    memset(&a, 0, sizeof a);
    a.gpu = -1;
    a.nic = -1;
    a.numa_node = -1;
    a.link = MPIXFER_LINK_SYS;
    a.bind_note = "not applied";

    if (local_gpu >= 0) {
        gpu = local_gpu;
        a.gpu_source = "argument";
    } else if (!env_local_rank(&gpu, &a.gpu_source)) {
        gpu = 0;
        a.gpu_source = "default";
    }

    if (topo->ngpus == 0) {
        a.no_gpu = true;
    } else {
        const topo_gpu_t *g;
        hwloc_obj_t where;
        if (local_gpu >= topo->ngpus)
            MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "GPU %d out of range (%d GPUs)", local_gpu,
                          topo->ngpus);
        if (gpu >= topo->ngpus) {
            /* More ranks than GPUs on the node: they share GPUs round-robin. */
            LOG_INFO("local rank %d (%s) > %d GPUs: using GPU %d", gpu, a.gpu_source,
                     topo->ngpus, gpu % topo->ngpus);
            gpu %= topo->ngpus;
        }
        g = &topo->gpus[gpu];
        where = locality(topo->hw, g->pci);
        a.gpu = gpu;
        busid_string(g->pci, a.gpu_pci_bus_id, sizeof a.gpu_pci_bus_id);
        cpuset_string(where != NULL ? where->cpuset : NULL, a.cpuset, sizeof a.cpuset);
        a.numa_node = numa_of(topo->hw, g->pci);
        if (g->nic >= 0) {
            a.nic = g->nic;
            copy_string(a.nic_name, sizeof a.nic_name, topo->nics[g->nic].osdev->name);
            a.nic_port = topo->nics[g->nic].port;
            a.link = topo->links[(size_t)gpu * topo->nnics + g->nic].link;
        }
    }

    nic_env = getenv("MPIXFER_NIC");
    if (nic_env != NULL && nic_env[0] != '\0') {
        mpixfer_status_t st = forced_nic(topo, nic_env, &a);
        if (st != MPIXFER_OK)
            return st;
    }

    ucx_env = getenv("UCX_NET_DEVICES");
    if (ucx_env != NULL && ucx_env[0] != '\0') {
        /* The user's choice wins; it may name several devices, which we never would. */
        copy_string(a.ucx_net_devices, sizeof a.ucx_net_devices, ucx_env);
        a.ucx_from_user = true;
    } else if (a.nic_name[0] != '\0') {
        if (a.nic_port > 0)
            snprintf(a.ucx_net_devices, sizeof a.ucx_net_devices, "%s:%d", a.nic_name, a.nic_port);
        else
            copy_string(a.ucx_net_devices, sizeof a.ucx_net_devices, a.nic_name);
    }

    *aff_p = a;
    return MPIXFER_OK;
}

/* Binds the process to the GPU's CPUs when that helps and is safe; never fails the call:
 * a process that cannot be bound still works, only slower, so it is a warning. */
static void bind_process(const mpixfer_topology_t *topo, mpixfer_affinity_t *a)
{
    hwloc_obj_t where;
    hwloc_bitmap_t current;

    a->bound = false;
    if (a->no_gpu) {
        a->bind_note = "no GPU";
        return;
    }
    if (env_flag("MPIXFER_NO_BIND")) {
        a->bind_note = "MPIXFER_NO_BIND is set";
        return;
    }
    /* An XML topology describes some machine, maybe not this one: its CPU numbers mean
     * nothing here (and hwloc's binding calls would silently do nothing). */
    if (!hwloc_topology_is_thissystem(topo->hw)) {
        a->bind_note = "topology is not this machine";
        return;
    }
    where = locality(topo->hw, topo->gpus[a->gpu].pci);
    if (where == NULL || where->cpuset == NULL || hwloc_bitmap_iszero(where->cpuset)) {
        a->bind_note = "no CPUs known for the GPU";
        return;
    }
    /* A launcher that already bound us inside those CPUs (a core, say) knew better. */
    current = hwloc_bitmap_alloc();
    if (current != NULL && hwloc_get_cpubind(topo->hw, current, HWLOC_CPUBIND_PROCESS) == 0 &&
        !hwloc_bitmap_iszero(current) && hwloc_bitmap_isincluded(current, where->cpuset)) {
        hwloc_bitmap_free(current);
        a->bind_note = "already runs on the GPU's CPUs";
        return;
    }
    hwloc_bitmap_free(current);
    if (hwloc_set_cpubind(topo->hw, where->cpuset, HWLOC_CPUBIND_PROCESS) != 0) {
        LOG_WARN("cannot bind to CPUs %s of GPU %d: %s", a->cpuset, a->gpu, strerror(errno));
        a->bind_note = "binding failed";
        return;
    }
    a->bound = true;
    a->bind_note = "bound";
}

mpixfer_status_t mpixfer_affinity_apply(int local_gpu, mpixfer_affinity_t *aff_p)
{
    mpixfer_topology_t *topo = NULL;
    mpixfer_affinity_t a;
    mpixfer_status_t st;

    if (aff_p == NULL)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "aff_p is NULL");
    st = mpixfer_topology_load(NULL, &topo);
    if (st != MPIXFER_OK)
        return st;
    st = mpixfer_affinity_compute(topo, local_gpu, &a);
    if (st != MPIXFER_OK) {
        mpixfer_topology_destroy(topo);
        return st;
    }
    if (!a.ucx_from_user && a.ucx_net_devices[0] != '\0' &&
        setenv("UCX_NET_DEVICES", a.ucx_net_devices, 1) != 0) {
        LOG_ERROR("cannot set UCX_NET_DEVICES=%s: %s", a.ucx_net_devices, strerror(errno));
        mpixfer_topology_destroy(topo);
        return MPIXFER_ERR_NO_MEMORY;
    }
    bind_process(topo, &a);
    mpixfer_topology_destroy(topo);

    if (mpixfer__log_level() >= MPIXFER__LOG_INFO) {
        char line[MPIXFER_TOPO_CPUSET_MAX + 512];
        mpixfer_affinity_describe(&a, line, sizeof line);
        LOG_INFO("affinity: %s", line);
    }
    *aff_p = a;
    return MPIXFER_OK;
}

/* snprintf that appends and remembers truncation. */
typedef struct {
    char *buf;
    size_t len, used;
    bool truncated;
} appender_t;

__attribute__((format(printf, 2, 3))) static void append(appender_t *ap, const char *fmt, ...)
{
    va_list args;
    int n;
    if (ap->truncated)
        return;
    va_start(args, fmt);
    n = vsnprintf(ap->buf + ap->used, ap->len - ap->used, fmt, args);
    va_end(args);
    if (n < 0 || (size_t)n >= ap->len - ap->used) {
        ap->truncated = true;
        ap->used = ap->len - 1;
    } else {
        ap->used += (size_t)n;
    }
}

mpixfer_status_t mpixfer_affinity_describe(const mpixfer_affinity_t *aff, char *buf, size_t len)
{
    appender_t ap = {buf, len, 0, false};

    if (aff == NULL || buf == NULL || len == 0)
        MPIXFER__FAIL(MPIXFER_ERR_INVALID_ARG, "NULL affinity or buffer, or zero length");
    buf[0] = '\0';

    if (aff->no_gpu)
        append(&ap, "no GPU");
    else
        append(&ap, "GPU %d (%s, from %s)", aff->gpu, aff->gpu_pci_bus_id,
               aff->gpu_source != NULL ? aff->gpu_source : "?");

    if (aff->nic_name[0] == '\0')
        append(&ap, ", no NIC");
    else {
        append(&ap, ", NIC %s", aff->nic_name);
        if (aff->nic_port > 0)
            append(&ap, ":%d", aff->nic_port);
        if (!aff->no_gpu && aff->nic >= 0)
            append(&ap, " (%s%s)", mpixfer_link_name(aff->link),
                   aff->nic_forced ? ", MPIXFER_NIC" : "");
        else if (aff->nic_forced)
            append(&ap, " (MPIXFER_NIC)");
    }

    if (!aff->no_gpu) {
        append(&ap, ", CPUs %s", aff->cpuset);
        if (aff->numa_node >= 0)
            append(&ap, ", NUMA %d", aff->numa_node);
    }
    if (aff->bound)
        append(&ap, ", bound");
    else
        append(&ap, ", not bound (%s)", aff->bind_note != NULL ? aff->bind_note : "?");

    if (aff->ucx_net_devices[0] == '\0')
        append(&ap, ", UCX_NET_DEVICES unset");
    else
        append(&ap, ", UCX_NET_DEVICES=%s (%s)", aff->ucx_net_devices,
               aff->ucx_from_user ? "the user's" : "mpixfer's");

    return ap.truncated ? MPIXFER_ERR_TOO_LARGE : MPIXFER_OK;
}
