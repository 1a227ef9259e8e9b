/* hostile: the processes an intruder's host throws at a scanner, for
 * minerwatch's hostile-host tests (tests/integration/hostile.rs).
 * Build: cc -O2 -Wall -o hostile hostile.c -lpthread
 *
 * Every mode prints "ready PID" (its own pid, as its PID namespace numbers
 * it) once the condition stands, then waits to be killed, unless noted:
 *   threads N        N threads (minimal stacks), all blocked in pause()
 *   procs N          N child processes, all blocked in pause()
 *   maps N           N separate mappings (one region, alternating
 *                    protections page by page, so the kernel cannot merge)
 *   fds N            N open file descriptors (RLIMIT_NOFILE raised; fewer
 *                    when the hard limit is lower and cannot be raised:
 *                    "ready PID COUNT" says how many)
 *   storm SECS RATE  fork up to RATE short-lived children a second for
 *                    SECS seconds (each _exits at once and is reaped), then
 *                    print "forked COUNT" and exit
 *   execloop SECS    exec itself every 2 ms for SECS seconds, then
 *                    pause; prints "ready" once, before the first exec
 *   reuse            fork a sleeping child A ("a PID"); on SIGUSR1 kill and
 *                    reap it, then fork children until one gets A's pid
 *                    again (through ns_last_pid) and print "b PID"
 *   trace PID        PTRACE_SEIZE the process PID (all its threads), so
 *                    nobody else can attach, and hold it ("seized N")
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void ready(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
}

static void hold(void) {
    for (;;) pause();
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int threads(long n) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        int rc = pthread_create(&t, &attr, sleeper, NULL);
        if (rc != 0) {
            fprintf(stderr, "thread %ld: %s\n", i, strerror(rc));
            return 1;
        }
    }
    ready();
    hold();
    return 0;
}

static int procs(long n) {
    for (long i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0) hold();
        if (c < 0) {
            perror("fork");
            return 1;
        }
    }
    ready();
    hold();
    return 0;
}

static int maps(long n) {
    long page = sysconf(_SC_PAGESIZE);
    char *base = mmap(NULL, (size_t)(n * page), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (long i = 1; i < n; i += 2)
        if (mprotect(base + i * page, (size_t)page, PROT_READ) != 0) {
            perror("mprotect");
            return 1;
        }
    ready();
    hold();
    return 0;
}

static int fds(long n) {
    /* Raise the soft limit as far as the hard one allows (raising the hard
     * limit needs CAP_SYS_RESOURCE, which a container may lack): the count
     * really opened is printed after "ready". */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("getrlimit");
        return 1;
    }
    struct rlimit want = {(rlim_t)n + 64, (rlim_t)n + 64};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("setrlimit");
            return 1;
        }
        if ((rlim_t)n + 16 > rl.rlim_max) n = (long)rl.rlim_max - 16;
    }
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    for (long i = 1; i < n; i++)
        if (dup(fd) < 0) {
            perror("dup");
            return 1;
        }
    printf("ready %d %ld\n", (int)getpid(), n);
    fflush(stdout);
    hold();
    return 0;
}

static int storm(double secs, long rate) {
    ready();
    long count = 0;
    double start = now();
    while (now() - start < secs) {
        /* Stay under RATE a second: sleep when ahead of schedule. */
        double due = start + (double)count / (double)rate;
        double t = now();
        if (t < due) usleep((useconds_t)((due - t) * 1e6));
        pid_t c = fork();
        if (c == 0) _exit(0);
        if (c < 0) {
            usleep(1000);
            continue;
        }
        waitpid(c, NULL, 0);
        count++;
    }
    printf("forked %ld\n", count);
    fflush(stdout);
    return 0;
}

static int execloop(char *self, double until) {
    if (now() >= until) hold();
    usleep(2000); /* a few hundred execs a second, not a core's worth */
    char arg[64];
    snprintf(arg, sizeof arg, "%.3f", until);
    char *argv[] = {self, "execloop", arg, "again", NULL};
    execv("/proc/self/exe", argv);
    perror("execv");
    return 1;
}

static int reuse(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    pid_t a = fork();
    if (a == 0) hold();
    printf("a %d\n", (int)a);
    fflush(stdout);
    int sig = 0;
    sigwait(&usr1, &sig);
    kill(a, SIGKILL);
    waitpid(a, NULL, 0);
    for (int tries = 0; tries < 1000; tries++) {
        FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
        if (f == NULL) {
            perror("ns_last_pid");
            return 1;
        }
        fprintf(f, "%d", (int)a - 1);
        fclose(f);
        pid_t b = fork();
        if (b == 0) hold();
        if (b == a) {
            printf("b %d\n", (int)b);
            fflush(stdout);
            hold();
        }
        if (b > 0) {
            kill(b, SIGKILL);
            waitpid(b, NULL, 0);
        }
    }
    fprintf(stderr, "pid %d was not handed out again\n", (int)a);
    return 1;
}

static int trace(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL) {
        perror(path);
        return 1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) != 0) {
            fprintf(stderr, "seize %d: %s\n", (int)tid, strerror(errno));
            return 1;
        }
        n++;
    }
    closedir(d);
    printf("seized %d\n", n);
    fflush(stdout);
    /* Never wait(): a seized tracee runs on; it is only released when we
     * exit (killed by the test). */
    hold();
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "threads") == 0) return threads(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "procs") == 0) return procs(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "maps") == 0) return maps(atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "fds") == 0) return fds(atol(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "storm") == 0)
        return storm(atof(argv[2]), atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "execloop") == 0) {
        if (argc == 3) {
            ready();
            return execloop(argv[0], now() + atof(argv[2]));
        }
        return execloop(argv[0], atof(argv[2]));
    }
    if (argc >= 2 && strcmp(argv[1], "reuse") == 0) return reuse();
    if (argc >= 3 && strcmp(argv[1], "trace") == 0) return trace((pid_t)atoi(argv[2]));
    fprintf(stderr, "usage: hostile threads|procs|maps|fds|storm|execloop|reuse|trace ...\n");
    return 2;
}
