/**
 * @file mpixfer/topology.h
 * @brief GPU/NIC/CPU affinity from the machine's hwloc topology.
 *
 * The wrong NIC for a GPU (traffic crossing sockets, every GPU on one NIC, a NIC behind
 * another PCIe switch) costs more bandwidth than anything else in a KV-cache transfer.
 * mpixfer picks, for every GPU, the closest NIC and the CPUs next to it, by the convention
 * NCCL and UCX use, and lets people see the choice (the `mpixfer-topo` tool) and override
 * it (environment variables, see mpixfer_affinity_apply()).
 *
 * How close a GPU and a NIC are, best first (mpixfer_link_t):
 *   PIX   both below one PCIe switch (or one root port)
 *   PXB   below one PCIe bridge, but through more than one switch
 *   PHB   below one PCIe host bridge (through the CPU's root complex)
 *   NODE  different host bridges of one NUMA node
 *   SYS   different NUMA nodes (through the inter-socket link)
 * Within a class, fewer hops in the hwloc tree win.
 *
 * Typical use, first thing in main():
 * @code
 *   mpixfer_affinity_t aff;
 *   if (mpixfer_affinity_apply(-1, &aff) == MPIXFER_OK) {  // before MPI_Init
 *       char line[512];
 *       mpixfer_affinity_describe(&aff, line, sizeof line);
 *       printf("affinity: %s\n", line);
 *   }
 *   MPI_Init(&argc, &argv);
 * @endcode
 *
 * Threading: a loaded topology is read-only; its query functions may be called from
 * several threads at once. mpixfer_affinity_apply() changes the environment and the
 * process's CPU binding, so call it before MPI_Init and before starting threads.
 */
#ifndef MPIXFER_TOPOLOGY_H
#define MPIXFER_TOPOLOGY_H

#include <mpixfer.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Room for a NIC name ("mlx5_0", "eth0"; Linux allows at most 63 bytes for RDMA devices). */
#define MPIXFER_TOPO_NAME_MAX 64
/** Room for a PCI bus id "dddd:bb:dd.f" (domains above 0xffff take up to 8 digits). */
#define MPIXFER_TOPO_BUSID_MAX 20
/** Room for a CPU set as a list ("0-7,16-23"); sets that do not fit as a list (thousands of
 *  scattered CPUs) are written as a hex mask ("0xff00ff00,...") instead. */
#define MPIXFER_TOPO_CPUSET_MAX 1024
/** Room for a UCX_NET_DEVICES value as reported in mpixfer_affinity_t. */
#define MPIXFER_TOPO_UCX_MAX 256

/** A machine's GPUs, NICs and how they are connected (wraps an hwloc topology). */
typedef struct mpixfer_topology mpixfer_topology_t;

/** How close a GPU and a NIC are; smaller is closer, so values compare as distances. */
typedef enum {
    MPIXFER_LINK_PIX = 0,  /**< one PCIe switch (or one root port) */
    MPIXFER_LINK_PXB = 1,  /**< one PCIe bridge, several switches */
    MPIXFER_LINK_PHB = 2,  /**< one PCIe host bridge */
    MPIXFER_LINK_NODE = 3, /**< several host bridges, one NUMA node */
    MPIXFER_LINK_SYS = 4   /**< several NUMA nodes */
} mpixfer_link_t;

/** What the topology knows about one GPU. */
typedef struct {
    /** The GPU's index, which is also its position in the topology: the CUDA index of its
     *  `cudaN` (else `nvmlN`) OS device where hwloc reports one, else the next free index
     *  in PCI bus order. */
    int index;
    /** True when @c index came from a `cudaN`/`nvmlN` OS device, false when from PCI order. */
    bool index_from_os;
    /** PCI bus id, "0000:84:00.0". */
    char pci_bus_id[MPIXFER_TOPO_BUSID_MAX];
    /** CPUs closest to the GPU (those of its NUMA node or package), as a list. */
    char cpuset[MPIXFER_TOPO_CPUSET_MAX];
    /** OS index of the NUMA node closest to the GPU; -1 when the closest CPUs span several
     *  nodes or none is known. */
    int numa_node;
    /** The NIC chosen for this GPU (an index for mpixfer_topology_nic_info()); -1 when the
     *  machine has no NIC. */
    int nic;
    /** How close that NIC is; meaningful only when @c nic >= 0. */
    mpixfer_link_t nic_link;
} mpixfer_gpu_info_t;

/** What the topology knows about one NIC. */
typedef struct {
    /** The OS device name: "mlx5_0" for an RDMA device, "eth0" for a network interface. */
    char name[MPIXFER_TOPO_NAME_MAX];
    /** True for an RDMA (OpenFabrics) device. Plain network interfaces are a lower class:
     *  a GPU gets one only when the machine has no RDMA device. A network interface of an
     *  RDMA device (IPoIB, RoCE) is not listed separately. */
    bool rdma;
    /** The port UCX should use (the first active one, else the first; 1 when unknown); 0 for
     *  a plain network interface, which has no ports. */
    int port;
    /** PCI bus id of the NIC's PCI function; empty when it has none. */
    char pci_bus_id[MPIXFER_TOPO_BUSID_MAX];
    /** OS index of the NUMA node closest to the NIC; -1 when not a single one. */
    int numa_node;
} mpixfer_nic_info_t;

/**
 * @brief Load a machine's topology with its PCI devices, bridges and OS devices.
 *
 * @param[in]  xml_path  an hwloc XML file (as written by `lstopo --of xml`, hwloc 2.x);
 *                       NULL for the file named by the environment variable
 *                       MPIXFER_TOPOLOGY_XML when it is set, else the live machine.
 * @param[out] topo_p    the topology, set only on success; destroy with
 *                       mpixfer_topology_destroy().
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL @p topo_p); MPIXFER_ERR_IO (the file
 *         cannot be read or parsed, or hwloc cannot discover the machine);
 *         MPIXFER_ERR_UNSUPPORTED (the hwloc library at run time is not the 2.x ABI the
 *         library was built with); MPIXFER_ERR_NO_MEMORY.
 */
MPIXFER_API mpixfer_status_t mpixfer_topology_load(const char *xml_path,
                                                   mpixfer_topology_t **topo_p);

/** @brief Free a topology. NULL is fine. */
MPIXFER_API void mpixfer_topology_destroy(mpixfer_topology_t *topo);

/** @brief Number of NVIDIA GPUs (-1 if @p topo is NULL). A machine without GPUs has 0. */
MPIXFER_API int mpixfer_topology_num_gpus(const mpixfer_topology_t *topo);

/** @brief Number of NICs, RDMA devices first (-1 if @p topo is NULL). */
MPIXFER_API int mpixfer_topology_num_nics(const mpixfer_topology_t *topo);

/**
 * @brief Describe GPU @p gpu and the NIC chosen for it.
 *
 * The choice: among the NICs of the best kind (RDMA before plain network), those of the
 * closest class with the fewest hops; when several are equally close, GPUs are spread over
 * them (each GPU takes the one fewest GPUs took so far) instead of piling onto one.
 * @param[in]  gpu     0 .. mpixfer_topology_num_gpus() - 1.
 * @param[out] info_p  set only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, @p gpu out of range).
 */
MPIXFER_API mpixfer_status_t mpixfer_topology_gpu_info(const mpixfer_topology_t *topo, int gpu,
                                                       mpixfer_gpu_info_t *info_p);

/**
 * @brief Describe NIC @p nic.
 * @param[in]  nic     0 .. mpixfer_topology_num_nics() - 1.
 * @param[out] info_p  set only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, @p nic out of range).
 */
MPIXFER_API mpixfer_status_t mpixfer_topology_nic_info(const mpixfer_topology_t *topo, int nic,
                                                       mpixfer_nic_info_t *info_p);

/**
 * @brief How close GPU @p gpu and NIC @p nic are.
 * @param[out] link_p  the class, set only on success.
 * @param[out] hops_p  NULL, or the number of parent links between the two PCI devices in
 *                     the hwloc tree (the tie-break within a class), set only on success.
 * @return MPIXFER_OK; MPIXFER_ERR_INVALID_ARG (NULL, index out of range).
 */
MPIXFER_API mpixfer_status_t mpixfer_topology_link(const mpixfer_topology_t *topo, int gpu,
                                                   int nic, mpixfer_link_t *link_p,
                                                   int *hops_p);

/** @brief "PIX", "PXB", "PHB", "NODE" or "SYS"; "?" for other values. A static string. */
MPIXFER_API const char *mpixfer_link_name(mpixfer_link_t link);

/* ---------------------------------------------------------------- affinity */

/** What mpixfer_affinity_compute() chose and mpixfer_affinity_apply() did. */
typedef struct {
    /** True when the machine has no GPU: nothing is chosen for a GPU, the process is not
     *  bound, and UCX_NET_DEVICES is set only if MPIXFER_NIC asks for a NIC. Not an error. */
    bool no_gpu;
    /** The GPU used (index as in mpixfer_gpu_info_t); -1 when @c no_gpu. */
    int gpu;
    /** Where @c gpu came from: "argument", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
     *  "SLURM_LOCALID" or "default" (no variable set: GPU 0). A static string. */
    const char *gpu_source;
    /** PCI bus id of the GPU; empty when @c no_gpu. */
    char gpu_pci_bus_id[MPIXFER_TOPO_BUSID_MAX];
    /** The NIC chosen (an index into the topology it was computed from); -1 when there is
     *  none, or when MPIXFER_NIC names a device the topology does not know. */
    int nic;
    /** The NIC's name; empty when there is none. */
    char nic_name[MPIXFER_TOPO_NAME_MAX];
    /** The NIC's port; 0 for a plain network interface or none. */
    int nic_port;
    /** True when the NIC came from MPIXFER_NIC rather than from the topology. */
    bool nic_forced;
    /** How close the NIC is to the GPU; meaningful only when @c gpu >= 0 and @c nic >= 0. */
    mpixfer_link_t link;
    /** CPUs next to the GPU, as a list; empty when @c no_gpu. */
    char cpuset[MPIXFER_TOPO_CPUSET_MAX];
    /** NUMA node next to the GPU; -1 when unknown, several, or @c no_gpu. */
    int numa_node;
    /** True when mpixfer_affinity_apply() bound the process to @c cpuset. */
    bool bound;
    /** Why the process was or was not bound, e.g. "bound", "MPIXFER_NO_BIND is set",
     *  "topology is not this machine". A static string. */
    const char *bind_note;
    /** The UCX_NET_DEVICES value in effect ("mlx5_0:1"; as much as fits); empty when
     *  neither the user nor mpixfer sets it. */
    char ucx_net_devices[MPIXFER_TOPO_UCX_MAX];
    /** True when UCX_NET_DEVICES was already set by the user and was kept as it is. */
    bool ucx_from_user;
} mpixfer_affinity_t;

/**
 * @brief Choose the GPU, NIC and CPUs for this process, without changing anything.
 *
 * Reads the same environment as mpixfer_affinity_apply() (local rank variables,
 * MPIXFER_NIC, UCX_NET_DEVICES) but neither binds nor sets variables: @c bound is false
 * and @c bind_note is "not applied".
 * @param[in]  topo       a loaded topology.
 * @param[in]  local_gpu  the GPU index, or < 0 to take it from OMPI_COMM_WORLD_LOCAL_RANK,
 *                        MPI_LOCALRANKID or SLURM_LOCALID (first one set; GPU 0 when none
 *                        is), modulo the number of GPUs so extra ranks share them.
 * @param[out] aff_p      set only on success.
 * @return MPIXFER_OK (also when there is no GPU: see @c no_gpu); MPIXFER_ERR_INVALID_ARG
 *         (NULL, @p local_gpu >= the number of GPUs, MPIXFER_NIC too long).
 */
MPIXFER_API mpixfer_status_t mpixfer_affinity_compute(const mpixfer_topology_t *topo,
                                                      int local_gpu,
                                                      mpixfer_affinity_t *aff_p);

/**
 * @brief Load the topology, choose, and apply the choice to this process. Call it before
 *        MPI_Init (UCX reads UCX_NET_DEVICES when MPI starts) and before starting threads.
 *
 * Loads the topology as mpixfer_topology_load(NULL, ...) does, chooses as
 * mpixfer_affinity_compute() does, then:
 *  - sets UCX_NET_DEVICES to "<nic>:<port>" ("<nic>" for a network interface) unless the
 *    user has set it, which is kept;
 *  - binds the process to the GPU's CPUs, unless MPIXFER_NO_BIND=1, the topology came from
 *    an XML file (it describes another machine), or the process is already bound inside
 *    those CPUs (a launcher's finer binding is kept). A failed bind is logged and reported
 *    in @c bind_note; it is not an error, since the process still works, only slower.
 *
 * Overrides: MPIXFER_TOPOLOGY_XML (topology file), MPIXFER_NIC ("mlx5_1" or "mlx5_1:2":
 * use this NIC), MPIXFER_NO_BIND=1 (do not bind), UCX_NET_DEVICES (kept as set).
 * The choice is logged at info level (MPIXFER_LOG=info).
 *
 * @param[in]  local_gpu  as for mpixfer_affinity_compute().
 * @param[out] aff_p      what was chosen and done, set only on success.
 * @return MPIXFER_OK (also when there is no GPU); the errors of mpixfer_topology_load()
 *         and mpixfer_affinity_compute(); MPIXFER_ERR_NO_MEMORY (setting the variable).
 */
MPIXFER_API mpixfer_status_t mpixfer_affinity_apply(int local_gpu, mpixfer_affinity_t *aff_p);

/**
 * @brief One line describing @p aff, for logs: "GPU 0 (0000:84:00.0, from
 *        OMPI_COMM_WORLD_LOCAL_RANK) NIC mlx5_0:1 (PIX) CPUs 8-15,24-31 NUMA 1 bound
 *        UCX_NET_DEVICES=mlx5_0:1 (set by mpixfer)", or "no GPU ..." when there is none.
 * @param[out] buf  always NUL-terminated when @p len > 0.
 * @return MPIXFER_OK; MPIXFER_ERR_TOO_LARGE (truncated to fit); MPIXFER_ERR_INVALID_ARG
 *         (NULL @p aff or @p buf, zero @p len).
 */
MPIXFER_API mpixfer_status_t mpixfer_affinity_describe(const mpixfer_affinity_t *aff, char *buf,
                                                       size_t len);

#ifdef __cplusplus
}
#endif

#endif
