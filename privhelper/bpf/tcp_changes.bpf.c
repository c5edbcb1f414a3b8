// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* TCP state changes, counted: the raw tracepoint inet_sock_set_state (every state a TCP socket
 * enters, listening and closing included; DCCP, SCTP and MPTCP sockets fire it too) adds one to
 * this CPU's slot of a one-element array map. The collector maps that array read-only (mmap, no
 * bpf() call) and sums the slots each cycle: an unchanged sum since its last walk of the
 * kernel's TCP hash, with the same sockets in use (/proc/net/sockstat), means the walk would
 * count the same sockets in the same states, so it is not made again (it is still made every
 * 10 s, for the request sockets of half-open connections, which come and go without the
 * tracepoint). No CO-RE, no kernel memory read: CAP_BPF + CAP_PERFMON (a raw
 * tracepoint) at start-up.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "vigil_records.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	/* mmap-able (by a descriptor open for writing: the kernel refuses to map a read-only
	 * one), frozen by the privhelper once loaded: no user space write, the program's only. */
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vigil_tcp_changes);
} vigil_tcp_changes SEC(".maps");

SEC("raw_tracepoint/inet_sock_set_state")
int vigil_tcp_change(void *ctx)
{
	__u32 k = 0;
	struct vigil_tcp_changes *c = bpf_map_lookup_elem(&vigil_tcp_changes, &k);
	__u32 cpu = bpf_get_smp_processor_id() & (VIGIL_TCP_CHANGE_SLOTS - 1);

	/* Atomic: a softirq may fire it on this CPU while a task's run is between its load and
	 * store. Per CPU slots (a cache line each): no line shared between CPUs. */
	if (c)
		__sync_fetch_and_add(&c->slot[cpu].n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
