/* Synthetic process load for the vigil benchmark harness (bench/run.py).
 *
 *   loadgen N_SLEEP N_BUSY BUSY_US PERIOD_MS
 *
 * Forks N_SLEEP children that block in pause() and N_BUSY children that each burn about
 * BUSY_US microseconds of CPU every PERIOD_MS milliseconds (random phase), so their CPU times
 * keep changing without saturating the machine. Prints "ready <pids>" on stdout once every
 * child exists, then waits. Children die with the parent (PR_SET_PDEATHSIG) and with the
 * process group (the harness starts loadgen in its own session and kills the group).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static long long now_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void busy(long busy_us, long period_ms, unsigned seed) {
    srand(seed);
    struct timespec first = {0, (long)(rand() % (period_ms > 0 ? period_ms : 1)) * 1000000L};
    if (first.tv_nsec >= 1000000000L) { first.tv_sec = first.tv_nsec / 1000000000L; first.tv_nsec %= 1000000000L; }
    nanosleep(&first, NULL);
    struct timespec per = {period_ms / 1000, (period_ms % 1000) * 1000000L};
    volatile unsigned long x = 0;
    for (;;) {
        long long until = now_cpu_ns() + busy_us * 1000LL;
        while (now_cpu_ns() < until) x++;
        nanosleep(&per, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: loadgen N_SLEEP N_BUSY BUSY_US PERIOD_MS\n");
        return 2;
    }
    long n_sleep = atol(argv[1]), n_busy = atol(argv[2]);
    long busy_us = atol(argv[3]), period_ms = atol(argv[4]);
    pid_t parent = getpid();
    for (long i = 0; i < n_sleep + n_busy; i++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(0);
            if (i < n_sleep) {
                prctl(PR_SET_NAME, "lg-sleep");
                for (;;) pause();
            }
            prctl(PR_SET_NAME, "lg-busy");
            busy(busy_us, period_ms, (unsigned)i * 2654435761u);
            _exit(0);
        }
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
