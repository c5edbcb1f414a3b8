// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Process metrics without /proc: a BPF task iterator ("iter/task") that writes one
 * struct vigil_task_record per thread group (vigil_records.h) into the iterator's seq_file.
 * The privhelper loads it (CAP_BPF + CAP_PERFMON: a tracing program reading kernel memory)
 * and attaches it once; whoever holds the link creates a fresh iterator (BPF_ITER_CREATE)
 * and read()s it to the end, once per cycle. The iterator walks the tasks of the pid
 * namespace of the process that created it, every thread of them: threads other than a
 * group leader are skipped, the leader sums its live threads' counters itself.
 *
 * Task fields are read with CO-RE relocations against the kernel's BTF; only the fields read
 * are declared below. Layouts this needs: Linux >= 6.4 (signal->thread_head), >= 6.2
 * (mm->rss_stat as percpu counters). Another kernel fails the load, and the collector reads
 * /proc instead.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "vigil_records.h"
#include "vigil_kernel.h"

#define PF_KTHREAD 0x00200000
/* MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES */
#define MM_FILEPAGES 0
#define MM_ANONPAGES 1
#define MM_SHMEMPAGES 3
/* Bounds of the two walks (bpf_loop iterations). */
#define MAX_THREADS (1 << 20)
#define MAX_FD_WORDS (1 << 16)

struct list_head {
	struct list_head *next;
} __attribute__((preserve_access_index));

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
} __attribute__((preserve_access_index));

struct pid_namespace;

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct percpu_counter {
	__s64 count;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long total_vm;
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

struct prev_cputime {
	__u64 utime;
	__u64 stime;
} __attribute__((preserve_access_index));

struct signal_struct {
	int nr_threads;
	struct list_head thread_head;
	__u64 utime;
	__u64 stime;
	struct prev_cputime prev_cputime;
	unsigned long min_flt;
	unsigned long maj_flt;
	unsigned long long sum_sched_runtime;
} __attribute__((preserve_access_index));

struct sched_entity {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	unsigned long *open_fds;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int __state;
	unsigned int flags;
	struct sched_entity se;
	struct mm_struct *mm;
	int exit_state;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct list_head thread_node;
	__u64 utime;
	__u64 stime;
	unsigned long nvcsw;
	unsigned long nivcsw;
	__u64 start_boottime;
	unsigned long min_flt;
	unsigned long maj_flt;
	const struct cred *real_cred;
	char comm[16];
	struct files_struct *files;
	struct signal_struct *signal;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

/* The pid number of `p` in the namespace `ns` at `level` (pid_nr_ns): 0 when `p` is not
 * visible there. `p` comes from a task: plain loads, checked against the kernel's BTF (a
 * fault reads as zero); the level's entry too when it is the first (the initial pid
 * namespace, where the collector usually runs: a constant offset), else a probe read (the
 * verifier takes no variable offset into a kernel struct). */
static __always_inline __u32 pid_nr_at(struct pid *p, __u32 level, struct pid_namespace *ns)
{
	struct upid u = {};

	if (!p || level > 63 || p->level < level)
		return 0;
	if (level == 0) {
		u.nr = p->numbers[0].nr;
		u.ns = p->numbers[0].ns;
	} else if (bpf_core_read(&u, sizeof(u), &p->numbers[level])) {
		return 0;
	}
	return u.ns == ns && u.nr > 0 ? (__u32)u.nr : 0;
}

struct thread_walk {
	struct list_head *head;
	struct list_head *pos;
	__u64 utime;
	__u64 stime;
	__u64 runtime;
	__u64 min_flt;
	__u64 maj_flt;
	__u32 seen;
	__u32 done;
};

/* One live thread of the group (signal->thread_head, linked through task->thread_node). */
static long walk_thread(__u64 i, void *ctx)
{
	struct thread_walk *w = ctx;
	struct list_head *pos = w->pos;
	struct task_struct *t;

	if (!pos || pos == w->head) {
		w->done = 1;
		return 1;
	}
	t = (void *)pos - bpf_core_field_offset(struct task_struct, thread_node);
	w->utime += BPF_CORE_READ(t, utime);
	w->stime += BPF_CORE_READ(t, stime);
	w->runtime += BPF_CORE_READ(t, se.sum_exec_runtime);
	w->min_flt += BPF_CORE_READ(t, min_flt);
	w->maj_flt += BPF_CORE_READ(t, maj_flt);
	w->seen++;
	w->pos = BPF_CORE_READ(pos, next);
	return 0;
}

struct fd_count {
	unsigned long *bits;
	__u32 words;
	__u32 count;
};

static __always_inline __u32 popcount64(__u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (__u32)((x * 0x0101010101010101ULL) >> 56);
}

/* One word of the open-descriptor bitmap (what st_size of /proc/PID/fd counts). */
static long count_word(__u64 i, void *ctx)
{
	struct fd_count *c = ctx;
	__u64 word = 0;

	if (i >= c->words)
		return 1;
	if (bpf_probe_read_kernel(&word, sizeof(word), c->bits + i))
		return 1;
	c->count += popcount64(word);
	return 0;
}

/* A counter's central value as percpu_counter_read_positive reads it (as /proc does). */
static __always_inline __u64 positive(__s64 v)
{
	return v > 0 ? (__u64)v : 0;
}

SEC("iter/task")
int vigil_task_iter(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct task_struct *me, *parent;
	struct signal_struct *sig;
	struct mm_struct *mm;
	struct files_struct *files;
	const struct cred *cred;
	struct pid_namespace *ns = 0;
	struct vigil_task_record r = {};
	struct thread_walk w = {};
	struct fd_count fc = {};
	struct list_head *first;
	__u32 level;

	if (!task)
		return 0;
	/* One record per thread group: its leader's. The task and what it points to are read
	 * with plain loads the verifier checks against the kernel's BTF (faults read as zero),
	 * far cheaper than bpf_probe_read_kernel (measured: 1,655 → 1,003 ns per run when the pid
	 * numbers, the thread list head and the RSS counters moved to plain loads,
	 * bench/task_iter_cost.sh); what is left as probe reads: a pid number in a nested
	 * namespace (a variable offset), the descriptor bitmap (a pointer to scalars) and the walk
	 * over a group's threads. */
	if (task->pid != task->tgid)
		return 0;

	/* Numbers as the reader (the creator's pid namespace) sees them. */
	me = bpf_get_current_task_btf();
	level = me->thread_pid->level;
	if (level > 63)
		return 0;
	{
		struct pid *mp = me->thread_pid;
		struct upid u = {};

		if (level == 0)
			u.ns = mp->numbers[0].ns;
		else if (bpf_core_read(&u, sizeof(u), &mp->numbers[level]))
			return 0;
		ns = u.ns;
	}

	r.magic = VIGIL_TASK_MAGIC;
	r.pid = pid_nr_at(task->thread_pid, level, ns);
	if (!r.pid)
		return 0;
	parent = task->real_parent;
	if (parent)
		r.ppid = pid_nr_at(parent->group_leader->thread_pid, level, ns);
	if (task->flags & PF_KTHREAD)
		r.flags |= VIGIL_TASK_F_KTHREAD;
	cred = task->real_cred;
	r.ruid = cred->uid.val;
	r.euid = cred->euid.val;
	r.rgid = cred->gid.val;
	r.egid = cred->egid.val;
	r.state = task->__state;
	r.exit_state = (__u32)task->exit_state;
	r.start_boottime = task->start_boottime;
	r.nvcsw = task->nvcsw;
	r.nivcsw = task->nivcsw;
	r.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	__builtin_memcpy(r.comm, task->comm, sizeof(r.comm));

	/* Exited threads' times and faults live in the signal struct, live threads' in each. */
	sig = task->signal;
	if (sig) {
		r.nr_threads = (__u32)sig->nr_threads;
		w.utime = sig->utime;
		w.stime = sig->stime;
		w.runtime = sig->sum_sched_runtime;
		w.min_flt = sig->min_flt;
		w.maj_flt = sig->maj_flt;
		r.prev_utime_ns = sig->prev_cputime.utime;
		r.prev_stime_ns = sig->prev_cputime.stime;
		w.head = __builtin_preserve_access_index(&sig->thread_head);
		first = sig->thread_head.next;
		w.pos = first;
		if (r.nr_threads == 1 && first && first != w.head) {
			/* The common case without a loop: one live thread, the leader. */
			struct task_struct *t = (void *)first -
				bpf_core_field_offset(struct task_struct, thread_node);
			struct list_head *next = first->next;

			if (next == w.head && t == task) {
				w.utime += task->utime;
				w.stime += task->stime;
				w.runtime += task->se.sum_exec_runtime;
				w.min_flt += task->min_flt;
				w.maj_flt += task->maj_flt;
				w.seen = 1;
				w.done = 1;
			}
		}
		if (!w.done)
			bpf_loop(MAX_THREADS, walk_thread, &w, 0);
		if (!w.done)
			r.flags |= VIGIL_TASK_F_THREADS_CUT;
	}
	r.utime_ns = w.utime;
	r.stime_ns = w.stime;
	r.runtime_ns = w.runtime;
	r.min_flt = w.min_flt;
	r.maj_flt = w.maj_flt;
	r.threads_seen = w.seen;

	mm = task->mm;
	if (mm) {
		r.vm_pages = mm->total_vm;
		/* Constant indexes: CO-RE relocates each with the kernel's element size. */
		r.rss_pages = positive(mm->rss_stat[MM_FILEPAGES].count) +
			      positive(mm->rss_stat[MM_ANONPAGES].count) +
			      positive(mm->rss_stat[MM_SHMEMPAGES].count);
	} else {
		r.flags |= VIGIL_TASK_F_NO_MM;
	}

	files = task->files;
	if (files) {
		struct fdtable *fdt = files->fdt;
		__u32 max_fds = fdt->max_fds;

		fc.bits = fdt->open_fds;
		fc.words = (max_fds + 63) / 64;
		if (fc.words > MAX_FD_WORDS) {
			fc.words = MAX_FD_WORDS;
			r.flags |= VIGIL_TASK_F_FDS_CUT;
		}
		if (fc.bits) {
			if (fc.words == 1) {
				count_word(0, &fc);
			} else {
				bpf_loop(fc.words, count_word, &fc, 0);
			}
			r.fds = fc.count;
			r.flags |= VIGIL_TASK_F_FDS;
		}
	} else {
		/* No descriptor table (a zombie): /proc counts none either. */
		r.flags |= VIGIL_TASK_F_FDS;
	}

	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
