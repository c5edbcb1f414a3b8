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
#define VIGIL_SRC_TRACEPOINT 3

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

/* 48 bytes, zeroed before it is filled (padding included: it is hashed whole); 8-aligned, so
 * that the programs compare keys 8 bytes at a time */
struct __attribute__((aligned(8))) vigil_flow_key {
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

/* 112 bytes, one per CPU (BPF_MAP_TYPE_PERCPU_ARRAY, one entry). The first four counters only
 * grow. The rest is this CPU's run: the packets of one flow counted here one after another, in
 * neither the table nor the counters above until the CPU counts a packet of another flow and
 * adds the run to the flow's entry ("flushes" it). A reader takes the run as part of the entry
 * whose key and first_ns it names when run_seq, read before and after the table, is the same
 * even number. */
struct vigil_flow_totals {
	__u64 packets;    /*   0: every packet counted, in a flow or not (the run excluded) */
	__u64 bytes;      /*   8 */
	__u64 not_stored; /*  16: packets whose flow found no room in the table */
	__u64 created;    /*  24: flows inserted (inserted - present = evicted) */
	struct vigil_flow_key run_key; /* 32: the run's flow */
	__u64 run_first_ns; /*  80: first_ns of the run's table entry; 0: no run */
	__u64 run_packets;  /*  88 */
	__u64 run_bytes;    /*  96 */
	__u64 run_seq;      /* 104: +1 before and +1 after the run changes flow: odd meanwhile */
};
_Static_assert(sizeof(struct vigil_flow_key) == 48, "flow key size");
_Static_assert(sizeof(struct vigil_flow_totals) == 112, "flow totals size");
_Static_assert(__builtin_offsetof(struct vigil_flow_totals, run_key) == 32, "run_key");
_Static_assert(__builtin_offsetof(struct vigil_flow_totals, run_first_ns) == 80, "run_first_ns");
_Static_assert(__builtin_offsetof(struct vigil_flow_totals, run_seq) == 104, "run_seq");

/* Task iterator dump (task_iter.bpf.c, read by the collector from an iterator descriptor,
 * collector/src/taskiter.rs): one record per thread group, written with bpf_seq_write. */
#define VIGIL_TASK_MAGIC 0x7a5b0001u /* version 1; changes with the layout */

#define VIGIL_TASK_F_KTHREAD 1u      /* a kernel thread (PF_KTHREAD) */
#define VIGIL_TASK_F_NO_MM 2u        /* no address space (kernel thread, exiting, zombie) */
#define VIGIL_TASK_F_THREADS_CUT 4u  /* more threads than the walk's bound: sums are partial */
#define VIGIL_TASK_F_FDS 8u          /* `fds` was counted */
#define VIGIL_TASK_F_FDS_CUT 16u     /* descriptor table larger than the count's bound */

#define VIGIL_TASK_RECORD_SIZE 176

struct vigil_task_record {
	__u32 magic;          /*   0: VIGIL_TASK_MAGIC */
	__u32 pid;            /*   4: tgid in the reader's pid namespace */
	__u32 ppid;           /*   8: real parent's tgid there (0: none or outside it) */
	__u32 flags;          /*  12: VIGIL_TASK_F_* */
	__u32 ruid;           /*  16: real uid (kernel uid, initial user namespace) */
	__u32 euid;           /*  20: effective uid */
	__u32 rgid;           /*  24 */
	__u32 egid;           /*  28 */
	__u32 state;          /*  32: the leader's __state */
	__u32 exit_state;     /*  36: the leader's exit_state (EXIT_ZOMBIE 0x20, EXIT_DEAD 0x10) */
	__u32 nr_threads;     /*  40: signal->nr_threads */
	__u32 threads_seen;   /*  44: threads summed below */
	__u64 start_boottime; /*  48: ns after boot, suspend included (the leader's) */
	__u64 utime_ns;       /*  56: tick-sampled user time: exited threads + live threads */
	__u64 stime_ns;       /*  64: tick-sampled system time, the same way */
	__u64 runtime_ns;     /*  72: scheduler runtime: exited threads + live threads */
	__u64 prev_utime_ns;  /*  80: signal->prev_cputime: what the kernel last reported */
	__u64 prev_stime_ns;  /*  88 */
	__u64 min_flt;        /*  96: exited threads + live threads */
	__u64 maj_flt;        /* 104 */
	__u64 rss_pages;      /* 112: file + anon + shmem pages (per-CPU counters' central value) */
	__u64 vm_pages;       /* 120: mm->total_vm */
	__u64 cgroup_id;      /* 128: cgroup v2 id (inode of the cgroup directory) */
	__u64 nvcsw;          /* 136: the leader's voluntary context switches */
	__u64 nivcsw;         /* 144: involuntary */
	__u32 fds;            /* 152: open descriptors (bits set in open_fds), with F_FDS */
	__u32 reserved;       /* 156: zero */
	char comm[16];        /* 160: the leader's comm, NUL padded */
};

/* The collector decodes by these offsets (collector/src/taskiter.rs). */
_Static_assert(sizeof(struct vigil_task_record) == VIGIL_TASK_RECORD_SIZE, "task record size");
_Static_assert(__builtin_offsetof(struct vigil_task_record, start_boottime) == 48, "start_boottime");
_Static_assert(__builtin_offsetof(struct vigil_task_record, nivcsw) == 144, "nivcsw");
_Static_assert(__builtin_offsetof(struct vigil_task_record, fds) == 152, "fds");
_Static_assert(__builtin_offsetof(struct vigil_task_record, comm) == 160, "comm");

/* TCP state changes (tcp_changes.bpf.c): one counter per CPU slot, a cache line each; CPUs
 * beyond the slots share them (the adds are atomic). The collector mmaps the map's one value
 * read-only and sums the `n`s (collector/src/sockets.rs). */
#define VIGIL_TCP_CHANGE_SLOTS 256 /* a power of two */

struct vigil_tcp_change_slot {
	__u64 n;
	__u64 pad[7];
};

struct vigil_tcp_changes {
	struct vigil_tcp_change_slot slot[VIGIL_TCP_CHANGE_SLOTS];
};

_Static_assert(sizeof(struct vigil_tcp_changes) == 64 * VIGIL_TCP_CHANGE_SLOTS, "tcp changes");

#endif
