/* The topology module on real machines: the hwloc XML files of ../shared/topologies
 * (MPIXFER_TOPOLOGY_DIR), captured by the hwloc project. The expected answers below were
 * read off the XML by hand; each block says where they come from.
 * Usage: test_topo_real DIR   (exits 77, skipped, when DIR does not exist) */
#include "check.h"

static mpixfer_topology_t *load(const char *dir, const char *file)
{
    char path[4096];
    mpixfer_topology_t *topo = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (mpixfer_topology_load(path, &topo) != MPIXFER_OK) {
        fprintf(stderr, "cannot load %s\n", path);
        exit(1);
    }
    return topo;
}

/* HP ProLiant SL390s G7, 2 sockets; PUs are numbered alternately (socket 0 even, socket 1
 * odd: Package cpusets 0x00555555 and 0x00aaaaaa).
 *   host bridge 0 (socket 0): root port 00:01.0 -> eth0 04:00.0, eth1 04:00.1 (Intel 82576)
 *                             root port 00:05.0 -> 05:00.0 ConnectX-2: mlx4_0 (+ eth2, ib0)
 *                             root port 00:07.0 -> 06:00.0 NVIDIA
 *   host bridge 1 (socket 1): root port 10:03.0 -> 14:00.0 NVIDIA
 *                             root port 10:07.0 -> 11:00.0 NVIDIA
 * No CUDA OS devices, so GPUs are numbered in PCI order: 06, 11, 14. mlx4_0 reports no port
 * state (port 1). Its netdevs eth2/ib0 are the same card and are not NICs of their own. */
static void test_sl390(const char *dir)
{
    static const char *const gpu0[] = {"PHB", "PHB", "PHB"};
    static const char *const gpu12[] = {"SYS", "SYS", "SYS"};
    const char *even = "0,2,4,6,8,10,12,14,16,18,20,22";
    const char *odd = "1,3,5,7,9,11,13,15,17,19,21,23";
    mpixfer_topology_t *topo = load(dir, "24em64t-2n6c2t-pci.xml");
    int hops = -1;
    mpixfer_link_t link;

    CHECK(mpixfer_topology_num_gpus(topo) == 3);
    CHECK(mpixfer_topology_num_nics(topo) == 3);
    check_nic(topo, 0, "mlx4_0", true, 1, "0000:05:00.0", 0);
    check_nic(topo, 1, "eth0", false, 0, "0000:04:00.0", 0);
    check_nic(topo, 2, "eth1", false, 0, "0000:04:00.1", 0);

    check_row(topo, 0, gpu0, 3);
    check_row(topo, 1, gpu12, 3);
    check_row(topo, 2, gpu12, 3);
    /* 06:00.0 -> root port -> host bridge <- root port <- 05:00.0 */
    CHECK_OK(mpixfer_topology_link(topo, 0, 0, &link, &hops));
    CHECK(hops == 4);

    /* The only RDMA NIC serves every GPU, even across the sockets. */
    check_gpu(topo, 0, "0000:06:00.0", false, even, 0, 0, MPIXFER_LINK_PHB);
    check_gpu(topo, 1, "0000:11:00.0", false, odd, 1, 0, MPIXFER_LINK_SYS);
    check_gpu(topo, 2, "0000:14:00.0", false, odd, 1, 0, MPIXFER_LINK_SYS);
    mpixfer_topology_destroy(topo);
}

/* Supermicro X9DRG-HF, 2 sockets (Package cpusets 0x00ff00ff and 0xff00ff00).
 *   host bridge 0 (socket 0): root port 00:03.0 -> 03:00.0 NVIDIA; SAS, VGA, SATA
 *   host bridge 4 (socket 1): root port 80:01.0 -> eth0 81:00.0, eth1 81:00.1 (I350)
 *                             root port 80:02.0 -> 83:00.0 NVIDIA
 *                             root port 80:03.0 -> 84:00.0 NVIDIA with cuda0 (+ card0),
 *                                                  84:00.1 AMD (not ours),
 *                                                  04:00.0 ConnectX-4 mlx5_0 (+ ib0),
 *                                                  Port1State=4
 * 84:00.0 is cuda0; the other two take indices 1 and 2 in PCI order (03, 83).
 * 84:00.0 and mlx5_0 share root port 80:03.0: PIX, one hop each. The whole-I/O variant
 * adds DMA channels and a signal-processing function, which must change nothing. */
static void test_x9drg(const char *dir, const char *file)
{
    static const char *const gpu0[] = {"PIX", "PHB", "PHB"};
    static const char *const gpu1[] = {"SYS", "SYS", "SYS"};
    static const char *const gpu2[] = {"PHB", "PHB", "PHB"};
    mpixfer_topology_t *topo = load(dir, file);
    int hops = -1;
    mpixfer_link_t link;

    CHECK(mpixfer_topology_num_gpus(topo) == 3);
    CHECK(mpixfer_topology_num_nics(topo) == 3);
    check_nic(topo, 0, "mlx5_0", true, 1, "0000:04:00.0", 1);
    check_nic(topo, 1, "eth0", false, 0, "0000:81:00.0", 1);
    check_nic(topo, 2, "eth1", false, 0, "0000:81:00.1", 1);

    check_row(topo, 0, gpu0, 3);
    check_row(topo, 1, gpu1, 3);
    check_row(topo, 2, gpu2, 3);
    CHECK_OK(mpixfer_topology_link(topo, 0, 0, &link, &hops));
    CHECK(link == MPIXFER_LINK_PIX && hops == 2);
    /* 83:00.0 -> 80:02.0 -> host bridge <- 80:03.0 <- 04:00.0 */
    CHECK_OK(mpixfer_topology_link(topo, 2, 0, &link, &hops));
    CHECK(link == MPIXFER_LINK_PHB && hops == 4);

    check_gpu(topo, 0, "0000:84:00.0", true, "8-15,24-31", 1, 0, MPIXFER_LINK_PIX);
    check_gpu(topo, 1, "0000:03:00.0", false, "0-7,16-23", 0, 0, MPIXFER_LINK_SYS);
    check_gpu(topo, 2, "0000:83:00.0", false, "8-15,24-31", 1, 0, MPIXFER_LINK_PHB);
    mpixfer_topology_destroy(topo);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s TOPOLOGY_DIR\n", argv[0]);
        return 2;
    }
    if (!is_directory(argv[1])) {
        printf("skipped: no topology folder at %s (MPIXFER_TOPOLOGY_DIR)\n", argv[1]);
        return SKIP_CODE;
    }
    clear_affinity_env();
    test_sl390(argv[1]);
    test_x9drg(argv[1], "32em64t-2n8c2t-pci-normalio.xml");
    test_x9drg(argv[1], "32em64t-2n8c2t-pci-wholeio.xml");
    printf("ok\n");
    return 0;
}
