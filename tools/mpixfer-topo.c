/* mpixfer-topo: show how mpixfer sees a machine's GPUs and NICs and what it chooses.
 *
 *   mpixfer-topo               this machine
 *   mpixfer-topo --xml FILE    a topology saved with `lstopo --of xml` (hwloc 2.x)
 *
 * Prints the GPU x NIC matrix with the link classes (like `nvidia-smi topo -m`), the NICs,
 * and the NIC, CPUs and NUMA node each GPU gets. The topology module is the one
 * mpixfer_affinity_apply() uses, so this is what a rank on GPU i will do (before the
 * MPIXFER_NIC and UCX_NET_DEVICES overrides, which the tool reports when set). */
#include <mpixfer/topology.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: mpixfer-topo [--xml FILE]\n"
                 "  Prints the GPU x NIC matrix (PIX < PXB < PHB < NODE < SYS) and the NIC\n"
                 "  and CPUs mpixfer chooses for each GPU, for this machine or FILE.\n");
}

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

static void print_legend(void)
{
    printf("\nLegend (closest first; ties go to fewer hops in the hwloc tree):\n"
           "  PIX  = one PCIe switch (or one root port)\n"
           "  PXB  = one PCIe bridge, several switches\n"
           "  PHB  = one PCIe host bridge (the CPU's root complex)\n"
           "  NODE = several host bridges within one NUMA node\n"
           "  SYS  = across NUMA nodes (the inter-socket link)\n"
           "A GPU gets the closest RDMA NIC (a network interface only when there is none);\n"
           "GPUs are spread over NICs that are equally close.\n");
}

static void print_nics(const mpixfer_topology_t *topo, int nnics)
{
    int k;
    printf("\nNICs:\n");
    for (k = 0; k < nnics; k++) {
        mpixfer_nic_info_t nic;
        char ucx[MPIXFER_TOPO_NAME_MAX + 16], numa[16];
        if (mpixfer_topology_nic_info(topo, k, &nic) != MPIXFER_OK)
            continue;
        if (nic.port > 0)
            snprintf(ucx, sizeof ucx, "%s:%d", nic.name, nic.port);
        else
            snprintf(ucx, sizeof ucx, "%s", nic.name);
        if (nic.numa_node >= 0)
            snprintf(numa, sizeof numa, "%d", nic.numa_node);
        else
            snprintf(numa, sizeof numa, "N/A");
        printf("  NIC%-3d %-12s %-8s %-14s NUMA %s\n", k, ucx, nic.rdma ? "RDMA" : "network",
               nic.pci_bus_id[0] != '\0' ? nic.pci_bus_id : "-", numa);
    }
}

int main(int argc, char **argv)
{
    const char *xml = NULL, *env;
    mpixfer_topology_t *topo = NULL;
    mpixfer_status_t st;
    int i, g, k, ngpus, nnics, cpu_width = 12;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--xml") == 0 && i + 1 < argc) {
            xml = argv[++i];
        } else if (strncmp(argv[i], "--xml=", 6) == 0) {
            xml = argv[i] + 6;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    st = mpixfer_topology_load(xml, &topo);
    if (st != MPIXFER_OK) {
        fprintf(stderr, "mpixfer-topo: cannot load %s: %s\n", xml != NULL ? xml : "this machine",
                mpixfer_strerror(st));
        return 1;
    }
    env = getenv("MPIXFER_TOPOLOGY_XML");
    if (xml == NULL && env != NULL && env[0] != '\0')
        xml = env;
    ngpus = mpixfer_topology_num_gpus(topo);
    nnics = mpixfer_topology_num_nics(topo);
    printf("Topology: %s\n%d GPU%s, %d NIC%s\n", xml != NULL ? xml : "this machine", ngpus,
           ngpus == 1 ? "" : "s", nnics, nnics == 1 ? "" : "s");

    if (ngpus == 0) {
        printf("\nNo GPU: nothing to choose (mpixfer_affinity_apply() answers no_gpu).\n");
        if (nnics > 0)
            print_nics(topo, nnics);
        mpixfer_topology_destroy(topo);
        return 0;
    }

    for (g = 0; g < ngpus; g++) {
        mpixfer_gpu_info_t info;
        if (mpixfer_topology_gpu_info(topo, g, &info) == MPIXFER_OK)
            cpu_width = max_int(cpu_width, (int)strlen(info.cpuset));
    }

    /* The matrix: one row per GPU, one column per NIC, then the GPU's CPUs and node. */
    printf("\n%-7s", "");
    for (k = 0; k < nnics; k++) {
        char head[16];
        snprintf(head, sizeof head, "NIC%d", k);
        printf("%-7s", head);
    }
    printf("%-*s  %s\n", cpu_width, "CPU Affinity", "NUMA Affinity");
    for (g = 0; g < ngpus; g++) {
        mpixfer_gpu_info_t info;
        char head[16];
        if (mpixfer_topology_gpu_info(topo, g, &info) != MPIXFER_OK)
            continue;
        snprintf(head, sizeof head, "GPU%d", g);
        printf("%-7s", head);
        for (k = 0; k < nnics; k++) {
            mpixfer_link_t link = MPIXFER_LINK_SYS;
            mpixfer_topology_link(topo, g, k, &link, NULL);
            printf("%-7s", mpixfer_link_name(link));
        }
        if (info.numa_node >= 0)
            printf("%-*s  %d\n", cpu_width, info.cpuset, info.numa_node);
        else
            printf("%-*s  %s\n", cpu_width, info.cpuset, "N/A");
    }

    if (nnics > 0)
        print_nics(topo, nnics);

    printf("\nChoice per GPU:\n");
    for (g = 0; g < ngpus; g++) {
        mpixfer_gpu_info_t info;
        mpixfer_nic_info_t nic;
        int hops = 0;
        mpixfer_link_t link = MPIXFER_LINK_SYS;
        if (mpixfer_topology_gpu_info(topo, g, &info) != MPIXFER_OK)
            continue;
        printf("  GPU%-3d %s %-22s ", g, info.pci_bus_id,
               info.index_from_os ? "(index from hwloc)" : "(index by PCI order)");
        if (info.nic < 0 || mpixfer_topology_nic_info(topo, info.nic, &nic) != MPIXFER_OK) {
            printf("-> no NIC\n");
            continue;
        }
        mpixfer_topology_link(topo, g, info.nic, &link, &hops);
        if (nic.port > 0)
            printf("-> NIC%d %s:%d (%s, %d hops)\n", info.nic, nic.name, nic.port,
                   mpixfer_link_name(link), hops);
        else
            printf("-> NIC%d %s (%s, %d hops)\n", info.nic, nic.name, mpixfer_link_name(link),
                   hops);
    }

    env = getenv("MPIXFER_NIC");
    if (env != NULL && env[0] != '\0')
        printf("\nMPIXFER_NIC=%s overrides these choices at run time.\n", env);
    env = getenv("UCX_NET_DEVICES");
    if (env != NULL && env[0] != '\0')
        printf("\nUCX_NET_DEVICES=%s is set: mpixfer keeps it.\n", env);

    print_legend();
    mpixfer_topology_destroy(topo);
    return 0;
}
