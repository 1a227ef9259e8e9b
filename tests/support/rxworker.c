/* rxworker: a real RandomX workload (librandomx, JIT on) for minerwatch's
 * integration tests.  Build: cc -O2 -o rxworker rxworker.c -lrandomx -lpthread
 *
 * Options are found by scanning argv for exact tokens, so argv[0] may be
 * anything and decoy arguments may surround them:
 *   --mode light|fast     light = 256 MiB cache; fast = + 2080 MiB dataset
 *   --throttle PCT        hash ~PCT % of wall time (100 ms periods)
 *   --seconds N           exit by itself after N seconds (default 120)
 *   --stratum HOST:PORT   no hashing: send an XMRig login, then idle connected
 *   -u WALLET             login user for --stratum and --config-in-memory
 *   --config-in-memory POOL  keep an XMRig config and login JSON naming POOL
 *                         and the -u wallet on the heap (no file anywhere)
 *   --wipe-argv TEXT      overwrite the command line with TEXT, as
 *                         setproctitle does (options are read first)
 * Prints "hashing" once the first hash is done ("connected" for --stratum).
 *
 * The miner texts below are stored with marker characters (~ for X, ` for -,
 * ^ for +, | for :) and revealed at run time, so that this binary carries no
 * XMRig strings on disk: what a memory scan finds, the process made. */
#include <randomx.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *opt(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_for(double secs) {
    struct timespec ts = { (time_t)secs, (long)((secs - (time_t)secs) * 1e9) };
    while (nanosleep(&ts, &ts) != 0) {}
}

/* The texts as XMRig would hold them, masked (see above). */
static const char LOGIN[] =
    "{\"id\"|1,\"jsonrpc\"|\"2.0\",\"method\"|\"login\",\"params\"|{\"login\"|\"%s\","
    "\"pass\"|\"x\",\"agent\"|\"~MRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0\","
    "\"algo\"|[\"rx/0\"]}}\n";
static const char CONFIG[] =
    "{\"donate`level\"|1,\"pools\"|[{\"url\"|\"stratum^tcp|//%s\",\"user\"|\"%s\",\"pass\"|\"x\"}],"
    "\"randomx\"|{\"1gb`pages\"|false,\"wrmsr\"|true},\"cpu\"|{\"huge`pages\"|true,"
    "\"max`threads`hint\"|50}}";

/* Formats a masked template into a fresh heap buffer and reveals it. */
static char *reveal(const char *tmpl, const char *a, const char *b) {
    size_t n = strlen(tmpl) + strlen(a) + strlen(b) + 1;
    char *out = malloc(n);
    if (!out) return NULL;
    snprintf(out, n, tmpl, a, b);
    for (char *c = out; *c; c++)
        *c = *c == '~' ? 'X' : *c == '`' ? '-' : *c == '^' ? '+' : *c == '|' ? ':' : *c;
    return out;
}

/* Heap copies of the revealed texts, kept for the process's life. */
char *volatile kept_config, *volatile kept_login;

/* Overwrites the whole argv area with `text`, as setproctitle does. */
static void wipe_argv(int argc, char **argv, const char *text) {
    char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
    size_t room = (size_t)(end - start);
    memset(start, 0, room);
    strncpy(start, text, room);
}

static int stratum(const char *hostport, const char *wallet) {
    char host[256], buf[4096];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        fprintf(stderr, "bad --stratum %s\n", hostport);
        return 2;
    }
    memcpy(host, hostport, colon - hostport);
    host[colon - hostport] = '\0';
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        fprintf(stderr, "cannot resolve %s\n", hostport);
        return 2;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        perror("connect");
        return 2;
    }
    freeaddrinfo(ai);
    printf("connected\n");
    fflush(stdout);
    char *login = reveal(LOGIN, wallet, "");
    int n = login ? (int)strlen(login) : 0;
    if (!login || write(fd, login, n) != n) {
        perror("write");
        return 2;
    }
    ssize_t r = read(fd, buf, sizeof buf - 1);
    if (r > 0) {
        buf[r] = '\0';
        fprintf(stderr, "pool: %s", buf);
    }
    for (;;) pause(); /* idle, connected, until the --seconds alarm */
}

struct init_job { randomx_dataset *ds; randomx_cache *cache; unsigned long start, count; };

static void *init_part(void *p) {
    struct init_job *j = p;
    randomx_init_dataset(j->ds, j->cache, j->start, j->count);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = opt(argc, argv, "--mode");
    const char *throttle = opt(argc, argv, "--throttle");
    const char *seconds = opt(argc, argv, "--seconds");
    const char *pool = opt(argc, argv, "--stratum");
    const char *wallet = opt(argc, argv, "-u");
    const char *in_memory = opt(argc, argv, "--config-in-memory");
    const char *wipe = opt(argc, argv, "--wipe-argv");
    /* Keep copies: wiping argv destroys the originals. */
    mode = mode ? strdup(mode) : NULL;
    throttle = throttle ? strdup(throttle) : NULL;
    pool = pool ? strdup(pool) : NULL;
    wallet = wallet ? strdup(wallet) : NULL;
    wipe = wipe ? strdup(wipe) : NULL;
    unsigned secs = seconds ? (unsigned)atoi(seconds) : 120;
    if (in_memory) {
        kept_config = reveal(CONFIG, in_memory, wallet ? wallet : "x");
        kept_login = reveal(LOGIN, wallet ? wallet : "x", "");
    }
    if (wipe) wipe_argv(argc, argv, wipe);
    int fast = mode && strcmp(mode, "fast") == 0;
    double pct = throttle ? atof(throttle) : 100.0;
    pct = pct < 1 ? 1 : pct > 100 ? 100 : pct;

    alarm(secs); /* SIGALRM terminates us */
    if (pool) return stratum(pool, wallet ? wallet : "x");

    randomx_flags flags = randomx_get_flags() | RANDOMX_FLAG_JIT;
    if (fast) flags |= RANDOMX_FLAG_FULL_MEM;
    static const char key[] = "minerwatch test seed";
    randomx_cache *cache = randomx_alloc_cache(flags);
    if (!cache) {
        fprintf(stderr, "randomx_alloc_cache failed\n");
        return 1;
    }
    randomx_init_cache(cache, key, sizeof key - 1);
    randomx_dataset *ds = NULL;
    if (fast) {
        ds = randomx_alloc_dataset(flags);
        if (!ds) {
            fprintf(stderr, "randomx_alloc_dataset failed\n");
            return 1;
        }
        unsigned long items = randomx_dataset_item_count(), half = items / 2;
        struct init_job a = { ds, cache, 0, half }, b = { ds, cache, half, items - half };
        pthread_t t;
        pthread_create(&t, NULL, init_part, &a);
        init_part(&b);
        pthread_join(t, NULL);
    }
    randomx_vm *vm = randomx_create_vm(flags, fast ? NULL : cache, ds);
    if (!vm) {
        fprintf(stderr, "randomx_create_vm failed\n");
        return 1;
    }

    unsigned char input[76] = { 0 }, hash[RANDOMX_HASH_SIZE];
    unsigned long nonce = 0;
    /* Throttle by CPU time, not wall time: on a shared machine a slice
     * can wait for a core. Per ~100 ms period: use `busy` CPU seconds, then
     * sleep until CPU used / wall elapsed = pct. */
    const double busy = 0.1 * pct / 100;
    int first = 1;
    for (;;) {
        double wall0 = clock_s(CLOCK_MONOTONIC), cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        do {
            memcpy(input + 39, &nonce, sizeof nonce);
            nonce++;
            randomx_calculate_hash(vm, input, sizeof input, hash);
            if (first) {
                printf("hashing\n");
                fflush(stdout);
                first = 0;
            }
        } while (pct < 100 && clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0 < busy);
        if (pct < 100) {
            double rest = wall0 + (clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0) * 100 / pct
                          - clock_s(CLOCK_MONOTONIC);
            if (rest > 0) sleep_for(rest);
        }
    }
}
