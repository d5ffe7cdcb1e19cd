/*
 * The DPDK API tapflow binds. Only these headers: rte_ethdev.h pulls in what it needs, and
 * DPDK's protocol headers (l2tpv2, gtp, ...) are left out on purpose, as bindgen cannot
 * parse some of them and tapflow parses packets in Rust.
 */
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>
#include <rte_lcore.h>
#include <rte_errno.h>
#include <rte_cycles.h>
#include <rte_version.h>

/*
 * rte_errno is a per-lcore (thread-local) variable behind a macro; a Rust extern static
 * cannot name a C thread-local soundly, so it is read and written through these two
 * functions, which bindgen wraps like DPDK's own static inline functions.
 */
static inline int tapflow_rte_errno(void)
{
	return rte_errno;
}

static inline void tapflow_rte_errno_set(int value)
{
	rte_errno = value;
}

/*
 * Flag values DPDK defines with RTE_BIT64(), a function-like macro bindgen cannot expand;
 * restated as constants it can.
 */
static const uint64_t TAPFLOW_ETH_RSS_IP = RTE_ETH_RSS_IP;
static const uint64_t TAPFLOW_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
static const uint64_t TAPFLOW_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
static const uint64_t TAPFLOW_ETH_RSS_SCTP = RTE_ETH_RSS_SCTP;
static const uint64_t TAPFLOW_ETH_RX_OFFLOAD_RSS_HASH = RTE_ETH_RX_OFFLOAD_RSS_HASH;
static const uint64_t TAPFLOW_ETH_RX_OFFLOAD_TIMESTAMP = RTE_ETH_RX_OFFLOAD_TIMESTAMP;
static const uint64_t TAPFLOW_ETH_RX_OFFLOAD_SCATTER = RTE_ETH_RX_OFFLOAD_SCATTER;
