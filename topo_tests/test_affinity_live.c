/* mpixfer_affinity_apply() on the machine the tests run on. Without a GPU (the build
 * machine: no GPU, no RDMA NIC) the answer must be a clear "no GPU", not an error, and
 * nothing may change. With GPUs it must pick one and say why it did or did not bind. */
#include "check.h"

#include <sched.h>

int main(void)
{
    mpixfer_topology_t *topo = NULL;
    mpixfer_affinity_t a;
    char line[2048];
    int ngpus;

    clear_affinity_env();
    CHECK_OK(mpixfer_topology_load(NULL, &topo));
    ngpus = mpixfer_topology_num_gpus(topo);
    CHECK(ngpus >= 0);
    CHECK(mpixfer_topology_num_nics(topo) >= 0);
    mpixfer_topology_destroy(topo);

    if (ngpus == 0) {
        cpu_set_t before, after;
        CHECK(sched_getaffinity(0, sizeof before, &before) == 0);
        CHECK_OK(mpixfer_affinity_apply(-1, &a));
        CHECK(a.no_gpu);
        CHECK(a.gpu == -1 && a.nic == -1 && a.nic_name[0] == '\0');
        CHECK(a.cpuset[0] == '\0' && a.numa_node == -1);
        CHECK(!a.bound);
        CHECK_STR(a.bind_note, "no GPU");
        CHECK(a.ucx_net_devices[0] == '\0');
        CHECK(getenv("UCX_NET_DEVICES") == NULL);
        CHECK(sched_getaffinity(0, sizeof after, &after) == 0);
        CHECK(CPU_EQUAL(&before, &after));
        CHECK_OK(mpixfer_affinity_describe(&a, line, sizeof line));
        CHECK(strncmp(line, "no GPU", 6) == 0);
        printf("%s\n", line);

        /* An explicit GPU on a machine without one is the same answer. */
        CHECK_OK(mpixfer_affinity_apply(0, &a));
        CHECK(a.no_gpu);
    } else {
        /* A GPU machine: choose GPU 0 but leave this test process where it is. */
        setenv("MPIXFER_NO_BIND", "1", 1);
        CHECK_OK(mpixfer_affinity_apply(0, &a));
        CHECK(!a.no_gpu && a.gpu == 0);
        CHECK(a.gpu_pci_bus_id[0] != '\0' && a.cpuset[0] != '\0');
        CHECK(!a.bound);
        CHECK_STR(a.bind_note, "MPIXFER_NO_BIND is set");
        CHECK_OK(mpixfer_affinity_describe(&a, line, sizeof line));
        printf("%s\n", line);
    }
    printf("ok\n");
    return 0;
}
