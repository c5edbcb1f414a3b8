/* How the collector could read in-kernel flow counters (issue 15), measured as root:
 *
 *   cc -O2 -o /tmp/flowmap_read bench/flowmap_read.c && /tmp/flowmap_read [REPS]
 *
 * 1. Which bpf() commands work on a map descriptor held by a process that is not root, has no
 *    capability at all and NoNewPrivs (uid 65534, as the collector), with the host's
 *    kernel.unprivileged_bpf_disabled; and that creating a map still fails there.
 * 2. CPU per collection cycle (CLOCK_THREAD_CPUTIME_ID, median of REPS) of reading N flows,
 *    N = 1,000 and 10,000, from that unprivileged process:
 *    (a) mmap: a BPF_F_MMAPABLE array of N slots (48-byte key + 32-byte counters, the layout
 *        the kernel side would write), mapped read-only, every slot scanned and its counters
 *        compared with the previous cycle's copy (the delta the collector needs);
 *    (b) batch: BPF_MAP_LOOKUP_BATCH over an LRU hash of N flows (48-byte key, 32-byte value),
 *        4,096 entries per call, and the same delta against the previous cycle (a hash of
 *        the previous values would cost more; this is a lower bound for both).
 * Prints one line per finding.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>

#define KEY_SZ 48
#define VAL_SZ 32
#define SLOT_SZ (KEY_SZ + VAL_SZ)
#define BATCH 4096

static long sys_bpf(int cmd, union bpf_attr *a)
{
	return syscall(SYS_bpf, cmd, a, sizeof(*a));
}

static int map_create(int type, uint32_t ksz, uint32_t vsz, uint32_t n, uint32_t flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.key_size = ksz;
	a.value_size = vsz;
	a.max_entries = n;
	a.map_flags = flags;
	return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

static long elem(int cmd, int fd, void *k, void *v, uint64_t flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (uint64_t)(uintptr_t)k;
	a.value = (uint64_t)(uintptr_t)v;
	a.flags = flags;
	return sys_bpf(cmd, &a);
}

static void key_of(uint32_t i, unsigned char *k)
{
	memset(k, 0, KEY_SZ);
	memcpy(k, &i, 4);
	k[4] = 17;
	k[8] = 127;
	k[11] = 1;
}

static double thread_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return v[n / 2];
}

static void drop_privileges(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof(d));
	if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534) ||
	    syscall(SYS_capset, &h, d) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		perror("dropping privileges");
		exit(2);
	}
}

static void report(const char *what, long r)
{
	printf("  %-40s %s\n", what, r < 0 ? strerror(errno) : "ok");
}

/* 1: what works on a held descriptor without privileges. */
static void probe(int hash, int arr)
{
	unsigned char k[KEY_SZ], v[VAL_SZ], keys[KEY_SZ * 16], vals[VAL_SZ * 16];
	uint64_t out = 0;
	union bpf_attr a;
	struct bpf_map_info info;

	key_of(1, k);
	char ubd[8] = "?";
	FILE *f = fopen("/proc/sys/kernel/unprivileged_bpf_disabled", "r");
	if (f) {
		if (!fgets(ubd, sizeof(ubd), f))
			strcpy(ubd, "?");
		fclose(f);
		ubd[strcspn(ubd, "\n")] = 0;
	}
	printf("unprivileged (uid %d, CapEff 0, NoNewPrivs), unprivileged_bpf_disabled=%s:\n",
	       getuid(), ubd);
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = hash;
	a.info.info_len = sizeof(info);
	a.info.info = (uint64_t)(uintptr_t)&info;
	report("BPF_OBJ_GET_INFO_BY_FD", sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a));
	report("BPF_MAP_LOOKUP_ELEM", elem(BPF_MAP_LOOKUP_ELEM, hash, k, v, 0));
	report("BPF_MAP_GET_NEXT_KEY", elem(BPF_MAP_GET_NEXT_KEY, hash, NULL, v, 0));
	memset(&a, 0, sizeof(a));
	a.batch.map_fd = hash;
	a.batch.out_batch = (uint64_t)(uintptr_t)&out;
	a.batch.keys = (uint64_t)(uintptr_t)keys;
	a.batch.values = (uint64_t)(uintptr_t)vals;
	a.batch.count = 16;
	long r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &a);
	/* ENOENT: the walk reached the end; the entries counted in count were copied. */
	printf("  %-40s %s (%u entries)\n", "BPF_MAP_LOOKUP_BATCH",
	       r == 0 || errno == ENOENT ? "ok" : strerror(errno), a.batch.count);
	report("BPF_MAP_UPDATE_ELEM", elem(BPF_MAP_UPDATE_ELEM, hash, k, v, BPF_ANY));
	report("BPF_MAP_DELETE_ELEM", elem(BPF_MAP_DELETE_ELEM, hash, k, NULL, 0));
	key_of(2, k);
	report("BPF_MAP_LOOKUP_AND_DELETE_ELEM", elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, hash, k, v, 0));
	memset(&a, 0, sizeof(a));
	a.batch.map_fd = hash;
	a.batch.keys = (uint64_t)(uintptr_t)keys;
	a.batch.count = 2;
	key_of(3, keys);
	key_of(4, keys + KEY_SZ);
	report("BPF_MAP_DELETE_BATCH", sys_bpf(BPF_MAP_DELETE_BATCH, &a));
	void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, arr, 0);
	printf("  %-40s %s\n", "mmap of a BPF_F_MMAPABLE array (read)",
	       p == MAP_FAILED ? strerror(errno) : "ok");
	if (p != MAP_FAILED)
		munmap(p, 4096);
	int fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0);
	printf("  %-40s %s\n", "BPF_MAP_CREATE (must fail)", fd < 0 ? strerror(errno) : "SUCCEEDED");
}

/* 2a: scan an mmapped array of n slots against the previous copy. */
static double cycle_mmap(const unsigned char *slots, unsigned char *prev, uint32_t n)
{
	double t = thread_ns();
	uint64_t changed = 0;
	for (uint32_t i = 0; i < n; i++) {
		const uint64_t *c = (const uint64_t *)(slots + (size_t)i * SLOT_SZ + KEY_SZ);
		uint64_t *o = (uint64_t *)(prev + (size_t)i * VAL_SZ);
		if (c[0] != o[0]) {
			changed += c[0] - o[0];
			memcpy(o, c, VAL_SZ);
		}
	}
	__asm__ volatile("" ::"r"(changed));
	return thread_ns() - t;
}

/* 2b: batch lookup of the whole hash and the same delta. */
static double cycle_batch(int hash, unsigned char *keys, unsigned char *vals, unsigned char *prev,
			  uint32_t n)
{
	double t = thread_ns();
	uint64_t in = 0, out = 0, changed = 0;
	uint32_t got = 0;
	int first = 1;
	for (;;) {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.batch.map_fd = hash;
		a.batch.in_batch = first ? 0 : (uint64_t)(uintptr_t)&in;
		a.batch.out_batch = (uint64_t)(uintptr_t)&out;
		a.batch.keys = (uint64_t)(uintptr_t)(keys + (size_t)got * KEY_SZ);
		a.batch.values = (uint64_t)(uintptr_t)(vals + (size_t)got * VAL_SZ);
		a.batch.count = BATCH;
		long r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &a);
		got += a.batch.count;
		if (r < 0 && errno != ENOENT) {
			perror("BPF_MAP_LOOKUP_BATCH");
			exit(3);
		}
		if (r < 0 || got >= n)
			break;
		in = out;
		first = 0;
	}
	for (uint32_t i = 0; i < got; i++) {
		uint32_t idx;
		memcpy(&idx, keys + (size_t)i * KEY_SZ, 4);
		const uint64_t *c = (const uint64_t *)(vals + (size_t)i * VAL_SZ);
		uint64_t *o = (uint64_t *)(prev + (size_t)(idx % n) * VAL_SZ);
		if (c[0] != o[0]) {
			changed += c[0] - o[0];
			memcpy(o, c, VAL_SZ);
		}
	}
	__asm__ volatile("" ::"r"(changed));
	if (got != n) {
		fprintf(stderr, "batch saw %u of %u\n", got, n);
		exit(3);
	}
	return thread_ns() - t;
}

int main(int argc, char **argv)
{
	int reps = argc > 1 ? atoi(argv[1]) : 101;
	uint32_t sizes[2] = { 1000, 10000 };
	int hash[2], arr[2];
	unsigned char k[KEY_SZ], v[VAL_SZ];
	/* The probe writes and deletes: a map of its own. */
	int probe_hash = map_create(BPF_MAP_TYPE_LRU_HASH, KEY_SZ, VAL_SZ, 64, 0);
	memset(v, 0, sizeof(v));
	for (uint32_t i = 0; i < 8 && probe_hash >= 0; i++) {
		key_of(i, k);
		elem(BPF_MAP_UPDATE_ELEM, probe_hash, k, v, BPF_ANY);
	}

	for (int s = 0; s < 2; s++) {
		uint32_t n = sizes[s];
		hash[s] = map_create(BPF_MAP_TYPE_LRU_HASH, KEY_SZ, VAL_SZ, n + n / 4, 0);
		arr[s] = map_create(BPF_MAP_TYPE_ARRAY, 4, SLOT_SZ, n, BPF_F_MMAPABLE);
		if (hash[s] < 0 || arr[s] < 0) {
			perror("map create (run as root)");
			return 1;
		}
		unsigned char *w = mmap(NULL, (size_t)n * SLOT_SZ, PROT_READ | PROT_WRITE, MAP_SHARED,
					arr[s], 0);
		if (w == MAP_FAILED) {
			perror("mmap rw");
			return 1;
		}
		for (uint32_t i = 0; i < n; i++) {
			key_of(i, k);
			memset(v, 0, sizeof(v));
			uint64_t pk = i + 1;
			memcpy(v, &pk, 8);
			if (elem(BPF_MAP_UPDATE_ELEM, hash[s], k, v, BPF_ANY) < 0) {
				perror("update");
				return 1;
			}
			memcpy(w + (size_t)i * SLOT_SZ, k, KEY_SZ);
			memcpy(w + (size_t)i * SLOT_SZ + KEY_SZ, v, VAL_SZ);
		}
		munmap(w, (size_t)n * SLOT_SZ);
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		drop_privileges();
		probe(probe_hash, arr[0]);
		for (int s = 0; s < 2; s++) {
			uint32_t n = sizes[s];
			const unsigned char *slots =
				mmap(NULL, (size_t)n * SLOT_SZ, PROT_READ, MAP_SHARED, arr[s], 0);
			unsigned char *prev = calloc(n, VAL_SZ);
			unsigned char *keys = malloc((size_t)(n + BATCH) * KEY_SZ);
			unsigned char *vals = malloc((size_t)(n + BATCH) * VAL_SZ);
			double *tm = calloc(reps, sizeof(double)), *tb = calloc(reps, sizeof(double));
			if (slots == MAP_FAILED || !prev || !keys || !vals || !tm || !tb) {
				perror("setup");
				exit(1);
			}
			for (int r = 0; r < reps; r++) {
				memset(prev, 0, (size_t)n * VAL_SZ); /* every slot changed: worst case */
				tm[r] = cycle_mmap(slots, prev, n);
				memset(prev, 0, (size_t)n * VAL_SZ);
				/* The first cycle after the fill saw every entry; the LRU hash is not
				 * changed by lookups from user space. */
				tb[r] = cycle_batch(hash[s], keys, vals, prev, n);
			}
			printf("%6u flows: (a) mmap scan %8.1f us/cycle   (b) LOOKUP_BATCH %8.1f us/cycle"
			       "   (median of %d, unprivileged)\n",
			       n, median(tm, reps) / 1e3, median(tb, reps) / 1e3, reps);
		}
		exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
