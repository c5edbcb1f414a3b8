/* The kernel structures more than one of vigil's tracing programs reads, declared with only
 * the fields read: CO-RE relocations against the running kernel's BTF place them (a field the
 * kernel lacks fails the program's load, not the others').
 */
#ifndef VIGIL_KERNEL_H
#define VIGIL_KERNEL_H

/* A cgroup v2 directory: its id is the directory's inode number. */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

#endif
