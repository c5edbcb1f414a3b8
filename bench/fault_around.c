/* bench/fault_around.c FILE: how much of a file one touched page maps (fault-around and the
 * page cache's large folios), and whether MADV_RANDOM / MADV_SEQUENTIAL change it. Reads the
 * mapping's Rss from /proc/self/smaps. `gcc -O2 -o /tmp/fa bench/fault_around.c && /tmp/fa
 * target/release/vigil` (the file must be at least 4 MiB and in the page cache).
 * BENCHMARKS.md "Start-up code released". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
static long rss(void *p){ FILE*f=fopen("/proc/self/smaps","r"); char l[512]; int in=0; long r=-1; char a[64]; snprintf(a,64,"%lx-",(unsigned long)p);
 while(fgets(l,512,f)){ if(strncmp(l,a,strlen(a))==0) in=1; else if(in && strncmp(l,"Rss:",4)==0){ r=atol(l+4); break;} } fclose(f); return r;}
int main(int c, char**v){ int fd=open(v[1],O_RDONLY); size_t n=4<<20; char *p=mmap(0,n,PROT_READ,MAP_PRIVATE,fd,0);
 volatile char x; for(size_t i=0;i<n;i+=4096) x=p[i]; printf("all touched: %ld kB\n", rss(p));
 madvise(p,n,MADV_DONTNEED); printf("after dontneed: %ld\n", rss(p));
 x=p[100*4096]; printf("touch one page: %ld\n", rss(p));
 madvise(p,n,MADV_DONTNEED); madvise(p,n,MADV_RANDOM); x=p[100*4096]; printf("random + touch one: %ld\n", rss(p));
 madvise(p,n,MADV_NORMAL); madvise(p,n,MADV_DONTNEED); madvise(p,n,MADV_SEQUENTIAL); x=p[100*4096]; printf("seq + touch one: %ld\n", rss(p)); (void)x;
 return 0; }
