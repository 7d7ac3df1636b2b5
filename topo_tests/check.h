/* Shared helpers of the topology tests: hwloc-style assertions that stay on in release
 * builds (assert() does not), and a clean environment so a developer's UCX_NET_DEVICES or
 * a launcher's local rank cannot change what the tests expect. */
#ifndef MPIXFER_TOPO_TESTS_CHECK_H
#define MPIXFER_TOPO_TESTS_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <mpixfer/topology.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SKIP_CODE 77

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(call) CHECK((call) == MPIXFER_OK)

/* String equality that shows both sides when it fails. */
#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        if (got_ == NULL || strcmp(got_, want_) != 0) {                                            \
            fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #got,    \
                    got_ != NULL ? got_ : "(null)", want_);                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline void clear_affinity_env(void)
{
    static const char *const names[] = {"MPIXFER_TOPOLOGY_XML", "MPIXFER_NIC", "MPIXFER_NO_BIND",
                                        "UCX_NET_DEVICES", "OMPI_COMM_WORLD_LOCAL_RANK",
                                        "MPI_LOCALRANKID", "SLURM_LOCALID"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv(names[i]);
}

static inline bool is_directory(const char *path)
{
    struct stat st;
    return path != NULL && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The expected row of the GPU x NIC matrix, as class names. */
static inline void check_row(const mpixfer_topology_t *topo, int gpu, const char *const *want,
                             int nnics)
{
    int k;
    for (k = 0; k < nnics; k++) {
        mpixfer_link_t link;
        CHECK_OK(mpixfer_topology_link(topo, gpu, k, &link, NULL));
        if (strcmp(mpixfer_link_name(link), want[k]) != 0) {
            fprintf(stderr, "GPU%d x NIC%d is %s, expected %s\n", gpu, k, mpixfer_link_name(link),
                    want[k]);
            exit(1);
        }
    }
}

static inline void check_nic(const mpixfer_topology_t *topo, int nic, const char *name, bool rdma,
                             int port, const char *busid, int numa)
{
    mpixfer_nic_info_t info;
    CHECK_OK(mpixfer_topology_nic_info(topo, nic, &info));
    CHECK_STR(info.name, name);
    CHECK(info.rdma == rdma);
    CHECK(info.port == port);
    CHECK_STR(info.pci_bus_id, busid);
    CHECK(info.numa_node == numa);
}

/* A GPU's identity, locality and chosen NIC. */
static inline void check_gpu(const mpixfer_topology_t *topo, int gpu, const char *busid,
                             bool from_os, const char *cpuset, int numa, int nic,
                             mpixfer_link_t link)
{
    mpixfer_gpu_info_t info;
    CHECK_OK(mpixfer_topology_gpu_info(topo, gpu, &info));
    CHECK(info.index == gpu);
    CHECK_STR(info.pci_bus_id, busid);
    CHECK(info.index_from_os == from_os);
    CHECK_STR(info.cpuset, cpuset);
    CHECK(info.numa_node == numa);
    if (info.nic != nic) {
        fprintf(stderr, "GPU%d chose NIC%d, expected NIC%d\n", gpu, info.nic, nic);
        exit(1);
    }
    if (nic >= 0)
        CHECK(info.nic_link == link);
}

#endif
