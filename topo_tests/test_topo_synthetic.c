/* The topology module on the hand-written (synthetic) topologies of this folder, which
 * cover what the real files cannot: GPUs and NICs behind one PCIe switch (the DGX case),
 * every link class, a NIC whose first port is down, and GPUs spread over equal NICs.
 * Usage: test_topo_synthetic synthetic-2switch.xml synthetic-spread.xml */
#include "check.h"

#include <unistd.h>

/* Two sockets, each with one switch holding two GPUs and one ConnectX-7 (see the Comment
 * infos in the file). NICs are listed RDMA first, then in PCI order:
 *   NIC0 mlx5_0 14:00.0  NIC1 mlx5_1 94:00.0  NIC2 eth0 1e:00.0  NIC3 eth1 97:00.0
 *   NIC4 eth2 c1:00.0 */
static void test_two_switches(const char *path)
{
    static const char *const gpu01[] = {"PIX", "SYS", "PHB", "SYS", "SYS"};
    static const char *const gpu23[] = {"SYS", "PIX", "SYS", "PXB", "NODE"};
    mpixfer_topology_t *topo = NULL;
    mpixfer_link_t link;
    int g, hops = -1;

    CHECK_OK(mpixfer_topology_load(path, &topo));
    CHECK(mpixfer_topology_num_gpus(topo) == 4);
    CHECK(mpixfer_topology_num_nics(topo) == 5);
    check_nic(topo, 0, "mlx5_0", true, 1, "0000:14:00.0", 0);
    check_nic(topo, 1, "mlx5_1", true, 2, "0000:94:00.0", 1); /* port 1 down, port 2 active */
    check_nic(topo, 2, "eth0", false, 0, "0000:1e:00.0", 0);
    check_nic(topo, 3, "eth1", false, 0, "0000:97:00.0", 1);
    check_nic(topo, 4, "eth2", false, 0, "0000:c1:00.0", 1);

    for (g = 0; g < 4; g++)
        check_row(topo, g, g < 2 ? gpu01 : gpu23, 5);

    /* PIX for every GPU, and GPUs sharing a switch share its NIC. */
    check_gpu(topo, 0, "0000:12:00.0", true, "0-3", 0, 0, MPIXFER_LINK_PIX);
    check_gpu(topo, 1, "0000:13:00.0", true, "0-3", 0, 0, MPIXFER_LINK_PIX);
    check_gpu(topo, 2, "0000:92:00.0", true, "4-7", 1, 1, MPIXFER_LINK_PIX);
    check_gpu(topo, 3, "0000:93:00.0", true, "4-7", 1, 1, MPIXFER_LINK_PIX);

    /* Hops: GPU -> downstream port -> upstream port <- downstream port <- NIC. */
    CHECK_OK(mpixfer_topology_link(topo, 0, 0, &link, &hops));
    CHECK(hops == 4);
    /* GPU0 -> 3 bridges -> host bridge (4) + eth0 -> root port -> host bridge (2). */
    CHECK_OK(mpixfer_topology_link(topo, 0, 2, &link, &hops));
    CHECK(hops == 6);
    /* eth1 is three bridges below GPU2's switch: 2 + 4. */
    CHECK_OK(mpixfer_topology_link(topo, 2, 3, &link, &hops));
    CHECK(hops == 6);
    /* Through socket 1's Package: 5 + 3. */
    CHECK_OK(mpixfer_topology_link(topo, 2, 4, &link, &hops));
    CHECK(hops == 8);
    /* Through the Machine: 6 + 6. */
    CHECK_OK(mpixfer_topology_link(topo, 0, 1, &link, &hops));
    CHECK(link == MPIXFER_LINK_SYS && hops == 12);
    mpixfer_topology_destroy(topo);
}

/* One switch with four GPUs and two equal NICs: two GPUs on each, alternating. */
static void test_spread(const char *path)
{
    mpixfer_topology_t *topo = NULL;
    CHECK_OK(mpixfer_topology_load(path, &topo));
    CHECK(mpixfer_topology_num_gpus(topo) == 4);
    CHECK(mpixfer_topology_num_nics(topo) == 2);
    check_nic(topo, 0, "mlx5_0", true, 1, "0000:16:00.0", 0);
    check_nic(topo, 1, "mlx5_1", true, 1, "0000:17:00.0", 0);
    check_gpu(topo, 0, "0000:12:00.0", false, "0-3", 0, 0, MPIXFER_LINK_PIX);
    check_gpu(topo, 1, "0000:13:00.0", false, "0-3", 0, 1, MPIXFER_LINK_PIX);
    check_gpu(topo, 2, "0000:14:00.0", false, "0-3", 0, 0, MPIXFER_LINK_PIX);
    check_gpu(topo, 3, "0000:15:00.0", false, "0-3", 0, 1, MPIXFER_LINK_PIX);
    mpixfer_topology_destroy(topo);
}

/* Bad input is a status, never a crash, and outputs stay untouched. */
static void test_errors(const char *path)
{
    mpixfer_topology_t *topo = NULL, *sentinel = (mpixfer_topology_t *)&topo;
    mpixfer_gpu_info_t gi;
    mpixfer_nic_info_t ni;
    mpixfer_link_t link = (mpixfer_link_t)99;

    CHECK(mpixfer_topology_load(path, NULL) == MPIXFER_ERR_INVALID_ARG);
    topo = sentinel;
    CHECK(mpixfer_topology_load("/nonexistent/topology.xml", &topo) == MPIXFER_ERR_IO);
    CHECK(topo == sentinel);
    {
        /* A file that is not hwloc XML. */
        char junk[] = "/tmp/mpixfer-topo-junk.XXXXXX";
        int fd = mkstemp(junk);
        CHECK(fd >= 0);
        CHECK(write(fd, "not a topology\n", 15) == 15);
        close(fd);
        CHECK(mpixfer_topology_load(junk, &topo) == MPIXFER_ERR_IO);
        CHECK(topo == sentinel);
        unlink(junk);
    }

    CHECK_OK(mpixfer_topology_load(path, &topo));
    CHECK(mpixfer_topology_gpu_info(topo, -1, &gi) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_gpu_info(topo, 4, &gi) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_gpu_info(NULL, 0, &gi) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_gpu_info(topo, 0, NULL) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_nic_info(topo, 5, &ni) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_link(topo, 0, 5, &link, NULL) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_topology_link(topo, 4, 0, &link, NULL) == MPIXFER_ERR_INVALID_ARG);
    CHECK(link == (mpixfer_link_t)99);
    CHECK(mpixfer_topology_num_gpus(NULL) == -1);
    CHECK(mpixfer_topology_num_nics(NULL) == -1);
    CHECK_STR(mpixfer_link_name(MPIXFER_LINK_NODE), "NODE");
    CHECK_STR(mpixfer_link_name((mpixfer_link_t)42), "?");
    mpixfer_topology_destroy(topo);
    mpixfer_topology_destroy(NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s synthetic-2switch.xml synthetic-spread.xml\n", argv[0]);
        return 2;
    }
    clear_affinity_env();
    test_two_switches(argv[1]);
    test_spread(argv[2]);
    test_errors(argv[1]);
    printf("ok\n");
    return 0;
}
