// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Network flows counted in the kernel, per flow key (vigil_records.h), from
 *  - two programs on the tracepoints every received and every transmitted packet passes
 *    (BPF_PROG_TYPE_TRACING, tp_btf: netif_receive_skb, net_dev_start_xmit; CAP_BPF +
 *    CAP_PERFMON, BTF), which see the packets of the privhelper's network namespace only and
 *    loopback traffic once, as received: no packet tap, no copy, no change to any packet's path
 *    (the default: the cheapest, and no network capability);
 *  - a socket filter (BPF_PROG_TYPE_SOCKET_FILTER) attached with SO_ATTACH_BPF to an AF_PACKET
 *    socket (CAP_BPF + CAP_NET_RAW): it sees both directions of every interface of the
 *    network namespace and always returns 0, so the packet socket itself never queues anything;
 *  - tc (BPF_PROG_TYPE_SCHED_CLS) ingress and egress programs (CAP_BPF + CAP_NET_ADMIN), which
 *    return TC_ACT_UNSPEC/TCX_NEXT (-1) and never change the packet's fate.
 * The socket filter and tc read packets with bpf_skb_load_bytes (bounds checked by the helper);
 * the tracepoint programs with bpf_probe_read_kernel, within the packet's linear part. Per
 * packet, when it is of the flow this CPU counted last: a key compare and two adds to this
 * CPU's run (below, count()); otherwise one hash lookup and atomic adds to the flow's
 * counters, which only grow. The collector reads them all once per flow interval
 * (BPF_MAP_LOOKUP_BATCH), with the runs, and computes the deltas. No per-packet record, no
 * ring buffer.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "vigil_records.h"
#include "vigil_kernel.h"

#define MAX_IPV6_EXT 6
#define TC_CONTINUE (-1) /* TC_ACT_UNSPEC for cls_bpf, TCX_NEXT for tcx */

/* The flows: bounded, the kernel evicts the least recently used entry to make room (its
 * counts since the collector's last read are then in the totals only, and reported as lost).
 * Preallocated: 16,384 entries of 48 + 32 bytes plus the kernel's element header, about 2 MiB.
 * BPF_F_RDONLY: the map's descriptors are read-only, so whoever holds one (the privhelper,
 * the collector) cannot write or delete an entry through bpf(); only these programs write. */
#define MAX_FLOWS 16384
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_RDONLY);
	__type(key, struct vigil_flow_key);
	__type(value, struct vigil_flow_value);
} vigil_flows SEC(".maps");

/* Per-CPU totals and runs (no shared cache line per packet); read-only descriptors too. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_RDONLY);
	__type(key, __u32);
	__type(value, struct vigil_flow_totals);
} vigil_flow_totals SEC(".maps");

struct sk_buff;
static __always_inline __u64 sender_cgroup(struct sk_buff *skb);

/* The cgroup v2 id a flow entry is attributed to: that of the local socket which sent the
 * packet — tc's egress program passes its context (tc_skb: bpf_skb_cgroup_id), the transmit
 * tracepoint the kernel's skb (tp_skb) — or none (both NULL: received packets, the socket
 * filter). Read only when an entry is created or still has none, not per packet: a packet of
 * this CPU's run never needs it. */
static __always_inline __u64 origin_cgroup(struct __sk_buff *tc_skb, struct sk_buff *tp_skb)
{
	if (tc_skb)
		return bpf_skb_cgroup_id(tc_skb);
	if (tp_skb)
		return sender_cgroup(tp_skb);
	return 0;
}

/* Add `packets` packets (`bytes` bytes) of flow k to its table entry, then to the totals t:
 * the flow's counters first, so that a reader taking the totals before the flows never sees a
 * packet in the totals that is missing from a flow still present (the lost count stays exact).
 * With `create`, a missing entry is inserted; with `first_ns` not 0, only the entry created
 * then counts them (a run of an entry evicted since is lost: in the totals only). Returns the
 * first_ns of the entry counted into, 0 for none. Atomic adds on the entries, which CPUs share;
 * plain ones on the totals, which are this CPU's: the flow programs of one CPU never run nested
 * (they run with bottom halves off: in softirq, or transmitting under rcu_read_lock_bh). */
static __always_inline __u64 account(struct vigil_flow_key *k, __u64 packets, __u64 bytes,
				     struct __sk_buff *tc_skb, struct sk_buff *tp_skb,
				     __u64 first_ns, int create, struct vigil_flow_totals *t)
{
	struct vigil_flow_value *v;
	__u64 entry_ns = 0;

	v = bpf_map_lookup_elem(&vigil_flows, k);
	if (v && first_ns && v->first_ns != first_ns)
		v = NULL;
	if (!v && create) {
		struct vigil_flow_value nv = {
			.packets = packets,
			.bytes = bytes,
			.first_ns = bpf_ktime_get_ns(),
			.cgroup_id = origin_cgroup(tc_skb, tp_skb),
		};
		long err = bpf_map_update_elem(&vigil_flows, k, &nv, BPF_NOEXIST);
		if (err == 0) {
			t->created += 1;
			entry_ns = nv.first_ns;
		} else if (err == -EEXIST) {
			/* Another CPU inserted it meanwhile. */
			v = bpf_map_lookup_elem(&vigil_flows, k);
		}
		if (err != 0 && !v)
			t->not_stored += packets;
	}
	if (v) {
		__sync_fetch_and_add(&v->packets, packets);
		__sync_fetch_and_add(&v->bytes, bytes);
		if (!v->cgroup_id) {
			__u64 cgroup_id = origin_cgroup(tc_skb, tp_skb);
			if (cgroup_id)
				v->cgroup_id = cgroup_id;
		}
		entry_ns = v->first_ns;
	}
	t->packets += packets;
	t->bytes += bytes;
	return entry_ns;
}

static __always_inline int same_key(const struct vigil_flow_key *a, const struct vigil_flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(x[5] ^ y[5])) == 0;
}

/* Count one packet of flow k. Another packet of this CPU's run costs a 48-byte compare and two
 * adds to per-CPU memory. Any other packet, and every RUN_MAX-th of a run (so that the entry
 * stays recently used for the LRU and a reader never misses more than RUN_MAX packets per CPU
 * while the run changes), adds the run to its entry, counts itself in its entry (creating it)
 * and starts a new run of its flow. */
#define RUN_MAX 256
static __always_inline void count(struct vigil_flow_key *k, __u32 len, struct __sk_buff *tc_skb,
				  struct sk_buff *tp_skb)
{
	struct vigil_flow_totals *t;
	__u32 zero = 0;
	__u64 entry_ns, seq;

	t = bpf_map_lookup_elem(&vigil_flow_totals, &zero);
	if (!t)
		return;
	if (t->run_first_ns && t->run_packets < RUN_MAX && same_key(&t->run_key, k)) {
		t->run_packets += 1;
		t->run_bytes += len;
		return;
	}
	/* Odd while the run changes: a reader ignores the run then. The atomic adds fetch (their
	 * results are used), which orders the stores between them on every architecture. */
	seq = __sync_fetch_and_add(&t->run_seq, 1);
	if (t->run_packets)
		account(&t->run_key, t->run_packets, t->run_bytes, NULL, NULL, t->run_first_ns, 0, t);
	entry_ns = account(k, 1, len, tc_skb, tp_skb, 0, 1, t);
	__builtin_memcpy(&t->run_key, k, sizeof(*k));
	t->run_first_ns = entry_ns;
	t->run_packets = 0;
	t->run_bytes = 0;
	if (__sync_fetch_and_add(&t->run_seq, 1) != seq + 1)
		t->run_first_ns = 0; /* never (no nesting): had it, no run rather than a wrong one */
}

/* Ports of a TCP/UDP header at off (only for a first fragment). */
static __always_inline void load_ports(struct __sk_buff *skb, __u32 off, struct vigil_flow_key *e)
{
	__u16 ports[2];
	if (e->proto != IPPROTO_TCP && e->proto != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return;
	e->sport = bpf_ntohs(ports[0]);
	e->dport = bpf_ntohs(ports[1]);
}

/* Offset of the network header: 14 after an Ethernet header, 0 on devices without a link-layer
 * header (tun, wireguard, ipip), -1 when not IPv4/IPv6. */
static __always_inline int l3_offset(struct __sk_buff *skb, __u16 proto_be)
{
	__u16 eth_type;
	__u8 first;

	if (bpf_skb_load_bytes(skb, 12, &eth_type, sizeof(eth_type)) == 0 && eth_type == proto_be)
		return ETH_HLEN;
	if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
		return -1;
	if (proto_be == bpf_htons(ETH_P_IP) && (first >> 4) == 4)
		return 0;
	if (proto_be == bpf_htons(ETH_P_IPV6) && (first >> 4) == 6)
		return 0;
	return -1;
}

/* The fields of the IPv4 header h (its first 20 bytes) into k: the header's length, or -1 when
 * h is not one; *first: a first (or only) fragment, the one an L4 header follows. */
static __always_inline int ipv4_fields(const __u8 *h, struct vigil_flow_key *k, int *first)
{
	int ihl;

	if ((h[0] >> 4) != 4)
		return -1;
	ihl = (h[0] & 0x0f) * 4;
	if (ihl < 20)
		return -1;
	k->family = 4;
	k->proto = h[9];
	__builtin_memcpy(k->saddr, &h[12], 4);
	__builtin_memcpy(k->daddr, &h[16], 4);
	*first = ((((__u16)h[6] << 8) | h[7]) & 0x1fff) == 0;
	return ihl;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct vigil_flow_key *e)
{
	__u8 hdr[20];
	int ihl, first;

	if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
		return -1;
	ihl = ipv4_fields(hdr, e, &first);
	if (ihl < 0)
		return -1;
	if (first)
		load_ports(skb, off + ihl, e);
	return 0;
}

/* An IPv6 extension header walked on the way to the L4 header. */
static __always_inline int ipv6_is_ext(__u8 h)
{
	return h == IPPROTO_HOPOPTS || h == IPPROTO_ROUTING || h == IPPROTO_DSTOPTS ||
	       h == IPPROTO_FRAGMENT || h == IPPROTO_AH;
}

/* Past the extension header *nexthdr at *off whose first four bytes are ext: the header after
 * it and its offset. Returns 1 for a fragment other than the first (no L4 header follows). */
static __always_inline int ipv6_ext_next(const __u8 ext[4], __u8 *nexthdr, __u32 *off)
{
	if (*nexthdr == IPPROTO_FRAGMENT) {
		*nexthdr = ext[0];
		*off += 8;
		return ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8) != 0;
	}
	if (*nexthdr == IPPROTO_AH)
		*off += ((__u32)ext[1] + 2) * 4;
	else
		*off += ((__u32)ext[1] + 1) * 8;
	*nexthdr = ext[0];
	return 0;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct vigil_flow_key *e)
{
	__u8 hdr[40];
	__u8 ext[4];
	__u8 nexthdr;
	int i;

	if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
		return -1;
	if ((hdr[0] >> 4) != 6)
		return -1;
	e->family = 6;
	__builtin_memcpy(e->saddr, &hdr[8], 16);
	__builtin_memcpy(e->daddr, &hdr[24], 16);
	nexthdr = hdr[6];
	off += 40;

	/* Walk at most MAX_IPV6_EXT extension headers (each at least 8 bytes long). */
	for (i = 0; i < MAX_IPV6_EXT && ipv6_is_ext(nexthdr); i++) {
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0 ||
		    ipv6_ext_next(ext, &nexthdr, &off)) {
			e->proto = nexthdr;
			return 0;
		}
	}
	e->proto = nexthdr;
	load_ports(skb, off, e);
	return 0;
}

/* The common case in one helper call: IPv4 without options behind an Ethernet header, whose
 * Ethernet, IPv4 and first four L4 bytes (the ports) are read at once (14 + 20 + 4 bytes, but
 * the first 2 bytes of the destination MAC address, so that the addresses land 4-aligned in an
 * 8-aligned buffer and are read as words). Returns 0 when k is filled, -1 to take the general
 * path (which reads the same fields, one header at a time). */
#define FAST_OFF 2
#define FAST_LEN (ETH_HLEN + 20 + 4 - FAST_OFF)
#define FAST_IP (ETH_HLEN - FAST_OFF) /* the IPv4 header in the buffer */
static __always_inline int parse_eth_ipv4_fast(struct __sk_buff *skb, struct vigil_flow_key *k)
{
	__u8 b[FAST_LEN] __attribute__((aligned(8)));
	__u16 eth_type, frag, port;
	__u32 addr;

	if (bpf_skb_load_bytes(skb, FAST_OFF, b, sizeof(b)) < 0)
		return -1;
	__builtin_memcpy(&eth_type, &b[FAST_IP - 2], 2);
	if (eth_type != bpf_htons(ETH_P_IP) || b[FAST_IP] != 0x45) /* version 4, IHL 5 */
		return -1;
	k->family = 4;
	k->proto = b[FAST_IP + 9];
	__builtin_memcpy(&addr, &b[FAST_IP + 12], 4);
	__builtin_memcpy(k->saddr, &addr, 4);
	__builtin_memcpy(&addr, &b[FAST_IP + 16], 4);
	__builtin_memcpy(k->daddr, &addr, 4);
	__builtin_memcpy(&frag, &b[FAST_IP + 6], 2);
	if ((frag & bpf_htons(0x1fff)) == 0 && (k->proto == IPPROTO_TCP || k->proto == IPPROTO_UDP)) {
		__builtin_memcpy(&port, &b[FAST_IP + 20], 2);
		k->sport = bpf_ntohs(port);
		__builtin_memcpy(&port, &b[FAST_IP + 22], 2);
		k->dport = bpf_ntohs(port);
	}
	return 0;
}

/* cg_skb: skb when the flow's cgroup is its sender's (tc egress), else NULL (origin_cgroup). */
static __always_inline void handle(struct __sk_buff *skb, __u8 direction, __u8 source,
				   struct __sk_buff *cg_skb)
{
	struct vigil_flow_key k;
	__u16 proto_be = (__u16)skb->protocol;
	int l3, ret;

	if (proto_be != bpf_htons(ETH_P_IP) && proto_be != bpf_htons(ETH_P_IPV6))
		return;
	__builtin_memset(&k, 0, sizeof(k));
	k.ifindex = skb->ifindex;
	k.direction = direction;
	k.source = source;
	if (proto_be == bpf_htons(ETH_P_IP) && parse_eth_ipv4_fast(skb, &k) == 0) {
		count(&k, skb->len, cg_skb, NULL);
		return;
	}
	l3 = l3_offset(skb, proto_be);
	if (l3 < 0)
		return;
	if (proto_be == bpf_htons(ETH_P_IP))
		ret = parse_ipv4(skb, l3, &k);
	else
		ret = parse_ipv6(skb, l3, &k);
	if (ret < 0)
		return;
	count(&k, skb->len, cg_skb, NULL);
}

/* On the packet socket of every interface that ignores outgoing packets (PACKET_IGNORE_OUTGOING:
 * the kernel then does not clone each transmitted packet for it): everything received, loopback
 * traffic included, once. */
SEC("socket")
int vigil_flow_sock(struct __sk_buff *skb)
{
	__u8 dir = skb->pkt_type == PACKET_OUTGOING ? VIGIL_DIR_EGRESS : VIGIL_DIR_INGRESS;
	handle(skb, dir, VIGIL_SRC_SOCKET, NULL);
	return 0; /* never queue anything on the packet socket */
}

/* On one packet socket per non-loopback interface: what it transmits (what it receives is the
 * other program's). */
SEC("socket")
int vigil_flow_sock_eg(struct __sk_buff *skb)
{
	if (skb->pkt_type == PACKET_OUTGOING)
		handle(skb, VIGIL_DIR_EGRESS, VIGIL_SRC_SOCKET, NULL);
	return 0;
}

SEC("classifier")
int vigil_flow_tc_in(struct __sk_buff *skb)
{
	handle(skb, VIGIL_DIR_INGRESS, VIGIL_SRC_TC, NULL);
	return TC_CONTINUE;
}

SEC("classifier")
int vigil_flow_tc_eg(struct __sk_buff *skb)
{
	/* The socket that sent it, if local: its cgroup attributes the flow to a container (read
	 * when the flow's entry is made, not per packet). */
	handle(skb, VIGIL_DIR_EGRESS, VIGIL_SRC_TC, skb);
	return TC_CONTINUE;
}

/* The tracepoint programs: the kernel's own structures, read by BTF (CO-RE against the running
 * kernel's layout); only the fields read are declared. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct net_device {
	int ifindex;
	unsigned int flags;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_cgroup_data {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct sock_common {
	unsigned char skc_state;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct sock *sk;
	unsigned int len;
	unsigned int data_len;
	__u16 protocol;
	__u16 mac_header;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
	struct net_device *dev;
} __attribute__((preserve_access_index));

#define IFF_LOOPBACK 0x8
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12
#define MAC_HEADER_UNSET 0xffff
#define MAX_L2_HEADER 64

/* The network namespace counted (the inode number of the privhelper's, set at load): the
 * tracepoints fire for every namespace of the host, the packet socket sees only its own. */
const volatile __u32 vigil_netns_inum = 0;

/* The packet's linear bytes [off, off + len) as an offset range check: the headers must be in
 * the linear part (they are after GRO and for anything a driver or the stack built; a packet
 * whose headers are not is not counted, as one the socket filter could not parse). */
static __always_inline int in_linear(__u32 headlen, __u32 off, __u32 len)
{
	return off <= headlen && len <= headlen - off;
}

/* IPv4 at l3 (headlen linear bytes from l3 on): addresses, protocol and, in a first fragment,
 * the ports, with one read when there are no options (20 + 4 bytes). */
static __always_inline int kparse_ipv4(const unsigned char *l3, __u32 headlen,
				       struct vigil_flow_key *k)
{
	__u8 b[24] __attribute__((aligned(8)));
	__u16 ports[2];
	__u32 have = 24;
	int ihl, first;

	/* One read for the header and, without options, the ports behind it (each helper call
	 * costs about as much as the rest of the program). */
	if (!in_linear(headlen, 0, 24))
		have = 20;
	if (!in_linear(headlen, 0, 20) || bpf_probe_read_kernel(b, have, l3) < 0)
		return -1;
	ihl = ipv4_fields(b, k, &first);
	if (ihl < 0)
		return -1;
	if (!first || (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP))
		return 0;
	if (ihl == 20 && have == 24)
		__builtin_memcpy(ports, &b[20], 4);
	else if (!in_linear(headlen, ihl, 4) || bpf_probe_read_kernel(ports, 4, l3 + ihl) < 0)
		return 0;
	k->sport = bpf_ntohs(ports[0]);
	k->dport = bpf_ntohs(ports[1]);
	return 0;
}

/* IPv6 at l3: addresses, and the protocol and ports behind at most MAX_IPV6_EXT extension
 * headers, as parse_ipv6. */
static __always_inline int kparse_ipv6(const unsigned char *l3, __u32 headlen,
				       struct vigil_flow_key *k)
{
	__u8 hdr[40];
	__u8 ext[4];
	__u16 ports[2];
	__u8 nexthdr;
	__u32 off = 40;
	int i;

	if (!in_linear(headlen, 0, 40) || bpf_probe_read_kernel(hdr, 40, l3) < 0)
		return -1;
	if ((hdr[0] >> 4) != 6)
		return -1;
	k->family = 6;
	__builtin_memcpy(k->saddr, &hdr[8], 16);
	__builtin_memcpy(k->daddr, &hdr[24], 16);
	nexthdr = hdr[6];
	for (i = 0; i < MAX_IPV6_EXT && ipv6_is_ext(nexthdr); i++) {
		if (!in_linear(headlen, off, 4) || bpf_probe_read_kernel(ext, 4, l3 + off) < 0 ||
		    ipv6_ext_next(ext, &nexthdr, &off)) {
			k->proto = nexthdr;
			return 0;
		}
	}
	k->proto = nexthdr;
	if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
		return 0;
	if (!in_linear(headlen, off, 4) || bpf_probe_read_kernel(ports, 4, l3 + off) < 0)
		return 0;
	k->sport = bpf_ntohs(ports[0]);
	k->dport = bpf_ntohs(ports[1]);
	return 0;
}

/* Count skb at its network header l3 (l3_off bytes into the linear data, which starts at
 * skb->data), len bytes, seen on dev in direction dir; cg_skb: skb when the flow's cgroup is its
 * sender's (transmit), else NULL (origin_cgroup). */
static __always_inline void kcount(struct sk_buff *skb, struct net_device *dev, __u32 l3_off,
				   __u32 len, __u8 dir, struct sk_buff *cg_skb)
{
	struct vigil_flow_key k;
	__u16 proto_be = skb->protocol;
	__u32 headlen = skb->len - skb->data_len;
	int ret;

	if (proto_be != bpf_htons(ETH_P_IP) && proto_be != bpf_htons(ETH_P_IPV6))
		return;
	if (l3_off > headlen)
		return;
	__builtin_memset(&k, 0, sizeof(k));
	k.ifindex = dev->ifindex;
	k.direction = dir;
	k.source = VIGIL_SRC_TRACEPOINT;
	if (proto_be == bpf_htons(ETH_P_IP))
		ret = kparse_ipv4(skb->data + l3_off, headlen - l3_off, &k);
	else
		ret = kparse_ipv6(skb->data + l3_off, headlen - l3_off, &k);
	if (ret == 0)
		count(&k, len, NULL, cg_skb);
}

/* The cgroup v2 id of the local socket that sent skb, as bpf_skb_cgroup_id gives tc: 0 when
 * there is none, or it is not a full socket (time-wait, a connection request). */
static __always_inline __u64 sender_cgroup(struct sk_buff *skb)
{
	struct sock *sk = skb->sk;
	unsigned char state;
	struct cgroup *cg;

	if (!sk || !bpf_core_field_exists(sk->sk_cgrp_data))
		return 0;
	state = sk->__sk_common.skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	cg = sk->sk_cgrp_data.cgroup;
	if (!cg || !cg->kn)
		return 0;
	return cg->kn->id;
}

static __always_inline int counted_netns(struct net_device *dev)
{
	return dev->nd_net.net->ns.inum == vigil_netns_inum;
}

/* Every packet a device of the namespace received, before any packet tap or protocol handler
 * (__netif_receive_skb_core): the link-layer header is pulled (skb->data is the network
 * header), so it is added back to the length, as the packet socket sees it. */
SEC("tp_btf/netif_receive_skb")
int vigil_flow_tp_rx(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct net_device *dev = skb->dev;
	__u32 len = skb->len;
	__u16 mac = skb->mac_header;

	if (!dev || !counted_netns(dev))
		return 0;
	if (mac != MAC_HEADER_UNSET) {
		__u64 l2 = (__u64)(skb->data - skb->head) - mac;
		if (l2 <= MAX_L2_HEADER)
			len += l2;
	}
	kcount(skb, dev, 0, len, VIGIL_DIR_INGRESS, NULL);
	return 0;
}

/* Every packet handed to a device's driver (xmit_one, where packet taps see it), link-layer
 * header included, but loopback's: its packets come back as received and are counted then. */
SEC("tp_btf/net_dev_start_xmit")
int vigil_flow_tp_tx(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct net_device *dev = (struct net_device *)ctx[1];
	__u64 l3_off;

	if (!dev || (dev->flags & IFF_LOOPBACK) || !counted_netns(dev))
		return 0;
	l3_off = (__u64)skb->network_header - (__u64)(skb->data - skb->head);
	if (l3_off > MAX_L2_HEADER)
		return 0;
	/* The socket that sent it, if local: its cgroup attributes the flow to a container (read
	 * when the flow's entry is made, not per packet). */
	kcount(skb, dev, l3_off, skb->len, VIGIL_DIR_EGRESS, skb);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
