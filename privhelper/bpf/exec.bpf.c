// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Process exec/exit events from the sched raw tracepoints (no tracefs, no perf_event_open).
 * Needs CAP_BPF + CAP_PERFMON. Task fields are read with CO-RE relocations against the
 * kernel's BTF (/sys/kernel/btf/vmlinux), resolved by the loader (aya).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "vigil_records.h"

/* Only the fields we read; offsets are relocated at load time. */
struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} vigil_proc_rb SEC(".maps");

/* Records the ring buffer had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} vigil_proc_drops SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&vigil_proc_drops, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Drops so far, carried in every record so the consumer learns about losses without bpf(). */
static __always_inline __u32 drops_so_far(void)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&vigil_proc_drops, &k);
	return v ? (__u32)*v : 0;
}

static __always_inline int emit(struct task_struct *p, __u32 kind)
{
	struct vigil_proc_event *e;
	__u64 uid_gid = bpf_get_current_uid_gid();

	e = bpf_ringbuf_reserve(&vigil_proc_rb, sizeof(*e), 0);
	if (!e) {
		count_drop();
		return 0;
	}
	e->kind = kind;
	e->pid = BPF_CORE_READ(p, pid);
	e->tgid = BPF_CORE_READ(p, tgid);
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->uid = (__u32)uid_gid;
	e->gid = (__u32)(uid_gid >> 32);
	e->exit_code = kind == VIGIL_KIND_EXIT ? BPF_CORE_READ(p, exit_code) : 0;
	e->drops = drops_so_far();
	e->ktime_ns = bpf_ktime_get_ns();
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm); current == p,
 * comm already set to the new executable's name. */
SEC("raw_tracepoint/sched_process_exec")
int vigil_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx->args[0];
	return emit(p, VIGIL_KIND_EXEC);
}

/* TP_PROTO(struct task_struct *p, bool group_dead); current == p. Only the thread group
 * leader's exit is a process exit. */
SEC("raw_tracepoint/sched_process_exit")
int vigil_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx->args[0];
	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		return 0;
	return emit(p, VIGIL_KIND_EXIT);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
