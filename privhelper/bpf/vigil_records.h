/* Record layouts written by vigil's BPF programs into BPF ring buffers and maps.
 *
 * The collector parses these byte for byte (collector/src/ebpf/records.rs, flowmap.rs): every field has a
 * fixed offset, all integers are little-endian host order (x86_64 / aarch64), sizes are
 * multiples of 8. Any change here must be mirrored there (and the tests compare sizes).
 */
#ifndef VIGIL_RECORDS_H
#define VIGIL_RECORDS_H

#define VIGIL_KIND_EXEC 1
#define VIGIL_KIND_EXIT 2

#define VIGIL_DIR_INGRESS 0
#define VIGIL_DIR_EGRESS 1

#define VIGIL_SRC_SOCKET 1
#define VIGIL_SRC_TC 2

/* 64 bytes */
struct vigil_proc_event {
	__u32 kind;      /*  0: VIGIL_KIND_EXEC or VIGIL_KIND_EXIT */
	__u32 pid;       /*  4: thread id (kernel pid) */
	__u32 tgid;      /*  8: process id (thread group id) */
	__u32 ppid;      /* 12: tgid of the real parent */
	__u32 uid;       /* 16: real uid */
	__u32 gid;       /* 20: real gid */
	__s32 exit_code; /* 24: raw wait status (exit only): (status << 8) | signal */
	__u32 drops;     /* 28: records this ring lost so far (ring full), wrapping */
	__u64 ktime_ns;  /* 32: bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	char comm[16];   /* 40: task comm, NUL padded */
	__u64 cgroup_id; /* 56: cgroup v2 id of the task (inode of its cgroup directory) */
};

/* Flows are counted in the kernel (flows.bpf.c): an LRU hash from this key to monotonic
 * counters, read by the collector with BPF_MAP_LOOKUP_BATCH (collector/src/ebpf/flowmap.rs). */

/* 48 bytes, zeroed before it is filled (padding included: it is hashed whole) */
struct vigil_flow_key {
	__u32 ifindex;   /*  0 */
	__u8 direction;  /*  4: VIGIL_DIR_* */
	__u8 proto;      /*  5: IPPROTO_* (L4) */
	__u8 family;     /*  6: 4 or 6 */
	__u8 source;     /*  7: VIGIL_SRC_* */
	__u16 sport;     /*  8: host order, 0 when not TCP/UDP or a non-first fragment */
	__u16 dport;     /* 10 */
	__u32 pad;       /* 12: 0 */
	__u8 saddr[16];  /* 16: IPv4 in the first 4 bytes */
	__u8 daddr[16];  /* 32 */
};

/* 32 bytes; counters only grow (atomic adds) until the kernel evicts the entry */
struct vigil_flow_value {
	__u64 packets;   /*  0 */
	__u64 bytes;     /*  8: skb->len, link-layer header included */
	__u64 first_ns;  /* 16: bpf_ktime_get_ns of the first packet: tells a re-created entry */
	__u64 cgroup_id; /* 24: cgroup v2 id of the sending socket (tc egress only, else 0) */
};

/* 32 bytes, one per CPU (BPF_MAP_TYPE_PERCPU_ARRAY, one entry); counters only grow */
struct vigil_flow_totals {
	__u64 packets;    /*  0: every packet counted, in a flow or not */
	__u64 bytes;      /*  8 */
	__u64 not_stored; /* 16: packets whose flow found no room in the table */
	__u64 created;    /* 24: flows inserted (inserted - present = evicted) */
};

#endif
