/* mpixfer_affinity_compute/apply/describe on the synthetic two-switch topology: where the
 * GPU index comes from, the overrides (MPIXFER_NIC, UCX_NET_DEVICES, MPIXFER_TOPOLOGY_XML),
 * and what apply changes. The topology comes from an XML file, so apply never binds here
 * (the file describes another machine); test_affinity_live covers this machine.
 * Usage: test_affinity synthetic-2switch.xml */
#include "check.h"

static const char *xml;

static mpixfer_affinity_t compute(const mpixfer_topology_t *topo, int local_gpu)
{
    mpixfer_affinity_t a;
    memset(&a, 0xa5, sizeof a);
    CHECK_OK(mpixfer_affinity_compute(topo, local_gpu, &a));
    return a;
}

static void test_choice(const mpixfer_topology_t *topo)
{
    mpixfer_affinity_t a = compute(topo, 2);
    CHECK(!a.no_gpu);
    CHECK(a.gpu == 2);
    CHECK_STR(a.gpu_source, "argument");
    CHECK_STR(a.gpu_pci_bus_id, "0000:92:00.0");
    CHECK(a.nic == 1);
    CHECK_STR(a.nic_name, "mlx5_1");
    CHECK(a.nic_port == 2);
    CHECK(!a.nic_forced);
    CHECK(a.link == MPIXFER_LINK_PIX);
    CHECK_STR(a.cpuset, "4-7");
    CHECK(a.numa_node == 1);
    CHECK(!a.bound);
    CHECK_STR(a.bind_note, "not applied");
    CHECK_STR(a.ucx_net_devices, "mlx5_1:2");
    CHECK(!a.ucx_from_user);

    a = compute(topo, 0);
    CHECK(a.gpu == 0 && a.nic == 0 && a.nic_port == 1 && a.numa_node == 0);
    CHECK_STR(a.cpuset, "0-3");
    CHECK_STR(a.ucx_net_devices, "mlx5_0:1");
}

/* local_gpu < 0: the launcher's local rank, first of Open MPI, MPICH, Slurm. */
static void test_local_rank(const mpixfer_topology_t *topo)
{
    mpixfer_affinity_t a = compute(topo, -1);
    CHECK(a.gpu == 0);
    CHECK_STR(a.gpu_source, "default");

    setenv("SLURM_LOCALID", "3", 1);
    a = compute(topo, -1);
    CHECK(a.gpu == 3);
    CHECK_STR(a.gpu_source, "SLURM_LOCALID");

    setenv("MPI_LOCALRANKID", "2", 1);
    a = compute(topo, -1);
    CHECK(a.gpu == 2);
    CHECK_STR(a.gpu_source, "MPI_LOCALRANKID");

    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    a = compute(topo, -1);
    CHECK(a.gpu == 1);
    CHECK_STR(a.gpu_source, "OMPI_COMM_WORLD_LOCAL_RANK");
    CHECK_STR(a.ucx_net_devices, "mlx5_0:1");

    /* More ranks than GPUs: they share round-robin. */
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "6", 1);
    a = compute(topo, -1);
    CHECK(a.gpu == 2);

    /* A value that is not a rank is skipped, with a warning. */
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "one", 1);
    a = compute(topo, -1);
    CHECK(a.gpu == 2);
    CHECK_STR(a.gpu_source, "MPI_LOCALRANKID");

    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("MPI_LOCALRANKID");
    unsetenv("SLURM_LOCALID");
}

static void test_overrides(const mpixfer_topology_t *topo)
{
    mpixfer_affinity_t a, before;

    /* MPIXFER_NIC: a known NIC keeps the GPU's CPUs and reports the true class. */
    setenv("MPIXFER_NIC", "mlx5_0", 1);
    a = compute(topo, 3);
    CHECK(a.nic_forced && a.nic == 0 && a.nic_port == 1);
    CHECK(a.link == MPIXFER_LINK_SYS);
    CHECK_STR(a.cpuset, "4-7");
    CHECK_STR(a.ucx_net_devices, "mlx5_0:1");

    setenv("MPIXFER_NIC", "mlx5_1:1", 1); /* an explicit port wins over the active one */
    a = compute(topo, 3);
    CHECK(a.nic == 1 && a.nic_port == 1);
    CHECK_STR(a.ucx_net_devices, "mlx5_1:1");

    setenv("MPIXFER_NIC", "eth2", 1); /* a network interface has no port */
    a = compute(topo, 3);
    CHECK(a.nic == 4 && a.nic_port == 0 && a.link == MPIXFER_LINK_NODE);
    CHECK_STR(a.ucx_net_devices, "eth2");

    setenv("MPIXFER_NIC", "mlx5_9:1", 1); /* unknown to the topology: used as given */
    a = compute(topo, 3);
    CHECK(a.nic_forced && a.nic == -1 && a.nic_port == 1);
    CHECK_STR(a.nic_name, "mlx5_9");
    CHECK_STR(a.ucx_net_devices, "mlx5_9:1");

    memset(&before, 0x5a, sizeof before);
    a = before;
    setenv("MPIXFER_NIC", "mlx5_0:zero", 1);
    CHECK(mpixfer_affinity_compute(topo, 0, &a) == MPIXFER_ERR_INVALID_ARG);
    setenv("MPIXFER_NIC", ":1", 1);
    CHECK(mpixfer_affinity_compute(topo, 0, &a) == MPIXFER_ERR_INVALID_ARG);
    CHECK(memcmp(&a, &before, sizeof a) == 0);
    unsetenv("MPIXFER_NIC");

    /* A user's UCX_NET_DEVICES is kept, whatever it says. */
    setenv("UCX_NET_DEVICES", "mlx5_0:1,mlx5_1:2", 1);
    a = compute(topo, 2);
    CHECK(a.ucx_from_user);
    CHECK_STR(a.ucx_net_devices, "mlx5_0:1,mlx5_1:2");
    CHECK_STR(a.nic_name, "mlx5_1"); /* still reported: it is what mpixfer would pick */
    unsetenv("UCX_NET_DEVICES");

    /* An explicit GPU out of range is the caller's mistake. */
    a = before;
    CHECK(mpixfer_affinity_compute(topo, 4, &a) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_affinity_compute(NULL, 0, &a) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_affinity_compute(topo, 0, NULL) == MPIXFER_ERR_INVALID_ARG);
    CHECK(memcmp(&a, &before, sizeof a) == 0);
}

static void test_describe(const mpixfer_topology_t *topo)
{
    char buf[512], tiny[16];
    mpixfer_affinity_t a;

    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
    a = compute(topo, -1);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    CHECK_OK(mpixfer_affinity_describe(&a, buf, sizeof buf));
    CHECK_STR(buf, "GPU 2 (0000:92:00.0, from OMPI_COMM_WORLD_LOCAL_RANK), NIC mlx5_1:2 (PIX), "
                   "CPUs 4-7, NUMA 1, not bound (not applied), UCX_NET_DEVICES=mlx5_1:2 "
                   "(mpixfer's)");

    CHECK(mpixfer_affinity_describe(&a, tiny, sizeof tiny) == MPIXFER_ERR_TOO_LARGE);
    CHECK(strlen(tiny) == sizeof tiny - 1);
    CHECK(strncmp(tiny, buf, sizeof tiny - 1) == 0);
    CHECK(mpixfer_affinity_describe(NULL, buf, sizeof buf) == MPIXFER_ERR_INVALID_ARG);
    CHECK(mpixfer_affinity_describe(&a, buf, 0) == MPIXFER_ERR_INVALID_ARG);
}

/* apply: MPIXFER_TOPOLOGY_XML stands in for the machine; UCX_NET_DEVICES gets set. */
static void test_apply(void)
{
    mpixfer_affinity_t a, before;

    setenv("MPIXFER_TOPOLOGY_XML", xml, 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
    CHECK_OK(mpixfer_affinity_apply(-1, &a));
    CHECK(a.gpu == 3 && a.nic == 1);
    CHECK_STR(getenv("UCX_NET_DEVICES"), "mlx5_1:2");
    CHECK(!a.ucx_from_user);
    CHECK(!a.bound);
    CHECK_STR(a.bind_note, "topology is not this machine");

    /* Now it is set, so a second apply keeps it as the user's. */
    CHECK_OK(mpixfer_affinity_apply(0, &a));
    CHECK(a.ucx_from_user);
    CHECK_STR(a.nic_name, "mlx5_0");
    CHECK_STR(getenv("UCX_NET_DEVICES"), "mlx5_1:2");
    unsetenv("UCX_NET_DEVICES");

    setenv("MPIXFER_NO_BIND", "1", 1);
    CHECK_OK(mpixfer_affinity_apply(0, &a));
    CHECK_STR(a.bind_note, "MPIXFER_NO_BIND is set");
    unsetenv("MPIXFER_NO_BIND");
    unsetenv("UCX_NET_DEVICES");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");

    /* Errors leave the output and the environment alone. */
    memset(&before, 0x5a, sizeof before);
    a = before;
    setenv("MPIXFER_TOPOLOGY_XML", "/nonexistent/topology.xml", 1);
    CHECK(mpixfer_affinity_apply(0, &a) == MPIXFER_ERR_IO);
    setenv("MPIXFER_TOPOLOGY_XML", xml, 1);
    CHECK(mpixfer_affinity_apply(7, &a) == MPIXFER_ERR_INVALID_ARG);
    CHECK(memcmp(&a, &before, sizeof a) == 0);
    CHECK(getenv("UCX_NET_DEVICES") == NULL);
    CHECK(mpixfer_affinity_apply(0, NULL) == MPIXFER_ERR_INVALID_ARG);
    unsetenv("MPIXFER_TOPOLOGY_XML");
}

int main(int argc, char **argv)
{
    mpixfer_topology_t *topo = NULL;
    if (argc != 2) {
        fprintf(stderr, "usage: %s synthetic-2switch.xml\n", argv[0]);
        return 2;
    }
    xml = argv[1];
    clear_affinity_env();
    CHECK_OK(mpixfer_topology_load(xml, &topo));
    test_choice(topo);
    test_local_rank(topo);
    test_overrides(topo);
    test_describe(topo);
    mpixfer_topology_destroy(topo);
    test_apply();
    printf("ok\n");
    return 0;
}
