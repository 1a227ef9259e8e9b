/* rxworker: a real RandomX workload (librandomx, JIT on) for minerwatch's
 * integration tests.
 * Build: cc -O2 -Wall -o rxworker rxworker.c -lrandomx -lpthread -lssl -lcrypto
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
 *   -c FILE               read an XMRig-style JSON config at start and keep
 *                         its text on the heap; its first "url", "user",
 *                         "tls" (true) and "socks5" ("HOST:PORT") are used
 *   --pool HOST:PORT      hash AND keep a pool session (also set by -c):
 *                         connect (through --socks5 HOST:PORT, SOCKS5
 *                         CONNECT without auth, when given), TLS handshake
 *                         without certificate checks (--tls), send the
 *                         XMRig login (kept on the heap), read the reply,
 *                         then a thread sends "keepalived" every 10 s while
 *                         the main thread hashes. Prints "pool-ok" once the
 *                         login reply was read. Command-line values win.
 *   --undumpable          prctl(PR_SET_DUMPABLE, 0) first: its /proc files
 *                         become root's and only a tracer with
 *                         CAP_SYS_PTRACE may read its memory or trace it
 *   --print-config URL SOCKS5 WALLET  print an XMRig-style config for a TLS
 *                         pool at URL reached through SOCKS5 (- for none)
 *                         and exit
 * Prints "hashing" once the first hash is done ("connected" for --stratum).
 *
 * The miner texts below are stored with marker characters (~ for X, ` for -,
 * ^ for +, | for :) and revealed at run time, so that this binary carries no
 * XMRig strings on disk: what a memory scan finds, the process made. */
#include <randomx.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *opt(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static int flag(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
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

/* XMRig's config file as it writes it; %s: url, user, socks5 (quoted or null). */
static const char FILE_CONFIG[] =
    "{\n"
    "    \"api\"| {\n"
    "        \"id\"| null,\n"
    "        \"worker`id\"| null\n"
    "    },\n"
    "    \"autosave\"| true,\n"
    "    \"background\"| false,\n"
    "    \"colors\"| true,\n"
    "    \"donate`level\"| 1,\n"
    "    \"donate`over`proxy\"| 1,\n"
    "    \"randomx\"| {\n"
    "        \"init\"| `1,\n"
    "        \"mode\"| \"auto\",\n"
    "        \"1gb`pages\"| false,\n"
    "        \"rdmsr\"| true,\n"
    "        \"wrmsr\"| true,\n"
    "        \"numa\"| true\n"
    "    },\n"
    "    \"cpu\"| {\n"
    "        \"enabled\"| true,\n"
    "        \"huge`pages\"| true,\n"
    "        \"huge`pages`jit\"| false,\n"
    "        \"max`threads`hint\"| 25,\n"
    "        \"priority\"| null,\n"
    "        \"yield\"| true\n"
    "    },\n"
    "    \"pools\"| [\n"
    "        {\n"
    "            \"algo\"| \"rx/0\",\n"
    "            \"coin\"| \"monero\",\n"
    "            \"url\"| \"%s\",\n"
    "            \"user\"| \"%s\",\n"
    "            \"pass\"| \"x\",\n"
    "            \"rig`id\"| null,\n"
    "            \"nicehash\"| false,\n"
    "            \"keepalive\"| true,\n"
    "            \"enabled\"| true,\n"
    "            \"tls\"| true,\n"
    "            \"tls`fingerprint\"| null,\n"
    "            \"daemon\"| false,\n"
    "            \"socks5\"| %s\n"
    "        }\n"
    "    ]\n"
    "}\n";
/* %u: request id, %s: the session id from the login reply. */
static const char KEEPALIVE[] =
    "{\"id\"|%u,\"jsonrpc\"|\"2.0\",\"method\"|\"keepalived\",\"params\"|{\"id\"|\"%s\"}}\n";

/* Formats a masked template into a fresh heap buffer and reveals it. */
static char *reveal(const char *tmpl, ...) {
    va_list ap;
    va_start(ap, tmpl);
    int len = vsnprintf(NULL, 0, tmpl, ap);
    va_end(ap);
    if (len < 0) return NULL;
    size_t n = (size_t)len + 1;
    char *out = malloc(n);
    if (!out) return NULL;
    va_start(ap, tmpl);
    vsnprintf(out, n, tmpl, ap);
    va_end(ap);
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

/* ---- A pool session: -c FILE / --pool, optionally via SOCKS5 and TLS. ---- */

/* The value of the first "key" in a JSON text: a string's contents or a bare
 * word (true, 25), in a fresh buffer; NULL when absent or null. */
static char *json_value(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    for (const char *p = text; (p = strstr(p, pat)); p++) {
        const char *q = p + strlen(pat);
        q += strspn(q, " \t\r\n");
        if (*q != ':') continue; /* a value, not a key */
        q++;
        q += strspn(q, " \t\r\n");
        if (*q == '"') {
            const char *end = strchr(q + 1, '"');
            return end ? strndup(q + 1, end - q - 1) : NULL;
        }
        size_t n = strcspn(q, ",}] \t\r\n");
        if (n == 0 || (n == 4 && strncmp(q, "null", 4) == 0)) return NULL;
        return strndup(q, n);
    }
    return NULL;
}

/* The whole file in a fresh heap buffer, NUL-terminated. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += n;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

/* Splits "host:port" (an optional "scheme://" is skipped). */
static int split_hostport(const char *hostport, char *host, size_t cap, const char **port) {
    const char *scheme = strstr(hostport, "://");
    if (scheme) hostport = scheme + 3;
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= cap || !colon[1]) return -1;
    memcpy(host, hostport, colon - hostport);
    host[colon - hostport] = '\0';
    *port = colon + 1;
    return 0;
}

static int dial(const char *hostport) {
    char host[256];
    const char *port;
    if (split_hostport(hostport, host, sizeof host, &port) != 0) {
        fprintf(stderr, "bad address %s\n", hostport);
        return -1;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        fprintf(stderr, "cannot resolve %s\n", hostport);
        return -1;
    }
    int fd = -1;
    for (a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) fprintf(stderr, "cannot connect to %s\n", hostport);
    return fd;
}

static int write_all(int fd, const void *buf, size_t n) {
    for (const char *p = buf; n > 0;) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_exact(int fd, void *buf, size_t n) {
    for (char *p = buf; n > 0;) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* SOCKS5 CONNECT (RFC 1928) to target "host:port" over fd, no auth. */
static int socks5_connect(int fd, const char *target) {
    char host[256];
    const char *port;
    unsigned char req[300], rep[262];
    if (split_hostport(target, host, sizeof host, &port) != 0) return -1;
    if (write_all(fd, "\x05\x01\x00", 3) || read_exact(fd, rep, 2) || rep[0] != 5 || rep[1] != 0) {
        fprintf(stderr, "socks5: no-auth method refused\n");
        return -1;
    }
    size_t n = 0, len = strlen(host);
    req[n++] = 5, req[n++] = 1, req[n++] = 0; /* version, CONNECT, reserved */
    if (inet_pton(AF_INET, host, req + n + 1) == 1) {
        req[n] = 1;
        n += 1 + 4;
    } else if (inet_pton(AF_INET6, host, req + n + 1) == 1) {
        req[n] = 4;
        n += 1 + 16;
    } else {
        if (len > 255) return -1;
        req[n++] = 3;
        req[n++] = (unsigned char)len;
        memcpy(req + n, host, len);
        n += len;
    }
    unsigned p = (unsigned)atoi(port);
    req[n++] = (unsigned char)(p >> 8), req[n++] = (unsigned char)p;
    if (write_all(fd, req, n) || read_exact(fd, rep, 4) || rep[0] != 5 || rep[1] != 0) {
        fprintf(stderr, "socks5: CONNECT %s refused\n", target);
        return -1;
    }
    size_t bound = rep[3] == 1 ? 4 : rep[3] == 4 ? 16 : 0;
    if (rep[3] == 3 && read_exact(fd, rep, 1) == 0) bound = rep[0];
    return read_exact(fd, rep, bound + 2); /* bound address and port */
}

struct conn { int fd; SSL *ssl; };

static int conn_write(struct conn *c, const char *buf, size_t n) {
    if (!c->ssl) return write_all(c->fd, buf, n);
    return SSL_write(c->ssl, buf, (int)n) == (int)n ? 0 : -1;
}

/* Reads until a newline (or a full buffer); the text, NUL-terminated, may
 * hold more than one line. -1 when the connection closed. */
static int conn_read_line(struct conn *c, char *buf, size_t cap) {
    size_t len = 0;
    while (len + 1 < cap) {
        int r = c->ssl ? SSL_read(c->ssl, buf + len, (int)(cap - len - 1))
                       : (int)read(c->fd, buf + len, cap - len - 1);
        if (r <= 0) return -1;
        len += (size_t)r;
        buf[len] = '\0';
        if (strchr(buf, '\n')) break;
    }
    return (int)len;
}

static struct conn pool_conn;
static char session_id[64] = "1";

static void *keepalive(void *unused) {
    (void)unused;
    char buf[8192];
    for (unsigned id = 2;; id++) {
        sleep_for(10);
        char *req = reveal(KEEPALIVE, id, session_id);
        int ok = req && conn_write(&pool_conn, req, strlen(req)) == 0;
        free(req);
        if (!ok || conn_read_line(&pool_conn, buf, sizeof buf) < 0) {
            fprintf(stderr, "pool: connection lost\n");
            return NULL;
        }
    }
}

/* Connects to the pool (through SOCKS5, over TLS when asked), logs in with
 * the XMRig login (kept on the heap), reads the job, prints "pool-ok" and
 * leaves a keepalive thread on the connection. */
static int pool_session(const char *url, const char *socks5, int tls, const char *user) {
    signal(SIGPIPE, SIG_IGN);
    char host[256], reply[16384];
    const char *port;
    if (split_hostport(url, host, sizeof host, &port) != 0) {
        fprintf(stderr, "bad pool url %s\n", url);
        return -1;
    }
    int fd = dial(socks5 ? socks5 : url);
    if (fd < 0 || (socks5 && socks5_connect(fd, url) != 0)) return -1;
    pool_conn.fd = fd;
    if (tls) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) return -1;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* no fingerprint given */
        pool_conn.ssl = SSL_new(ctx);
        if (!pool_conn.ssl || SSL_set_fd(pool_conn.ssl, fd) != 1) return -1;
        struct in_addr ip;
        if (inet_pton(AF_INET, host, &ip) != 1) SSL_set_tlsext_host_name(pool_conn.ssl, host);
        if (SSL_connect(pool_conn.ssl) != 1) {
            fprintf(stderr, "TLS handshake with %s failed\n", url);
            ERR_print_errors_fp(stderr);
            return -1;
        }
    }
    kept_login = reveal(LOGIN, user, "");
    if (!kept_login || conn_write(&pool_conn, kept_login, strlen(kept_login)) != 0) {
        fprintf(stderr, "sending the login to %s failed\n", url);
        return -1;
    }
    if (conn_read_line(&pool_conn, reply, sizeof reply) < 0 || !strstr(reply, "\"result\"")
        || !strstr(reply, "\"job\"")) {
        fprintf(stderr, "no login reply from %s\n", url);
        return -1;
    }
    const char *sid = strstr(reply, "\"result\":{\"id\":\"");
    if (sid) {
        sid += strlen("\"result\":{\"id\":\"");
        size_t n = strcspn(sid, "\"");
        if (n < sizeof session_id) {
            memcpy(session_id, sid, n);
            session_id[n] = '\0';
        }
    }
    printf("pool-ok\n");
    fflush(stdout);
    pthread_t t;
    if (pthread_create(&t, NULL, keepalive, NULL) != 0) return -1;
    pthread_detach(t);
    return 0;
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
    const char *config_file = opt(argc, argv, "-c");
    const char *pool_url = opt(argc, argv, "--pool");
    const char *socks5 = opt(argc, argv, "--socks5");
    int tls = flag(argc, argv, "--tls");
    if (flag(argc, argv, "--undumpable") && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_DUMPABLE)");
        return 2;
    }
    for (int i = 1; i + 3 < argc; i++) {
        if (strcmp(argv[i], "--print-config") != 0) continue;
        const char *url = argv[i + 1], *proxy = argv[i + 2], *user = argv[i + 3];
        char quoted[300] = "null";
        if (*proxy && strcmp(proxy, "-") != 0) snprintf(quoted, sizeof quoted, "\"%s\"", proxy);
        char *text = reveal(FILE_CONFIG, url, user, quoted);
        if (!text) return 1;
        fputs(text, stdout);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (config_file) {
        kept_config = read_file(config_file);
        if (!kept_config) {
            perror(config_file);
            return 2;
        }
        if (!pool_url) pool_url = json_value(kept_config, "url");
        if (!socks5) socks5 = json_value(kept_config, "socks5");
        if (!wallet) wallet = json_value(kept_config, "user");
        char *t = json_value(kept_config, "tls");
        tls = tls || (t && strcmp(t, "true") == 0);
        free(t);
    }
    /* Keep copies: wiping argv destroys the originals. */
    mode = mode ? strdup(mode) : NULL;
    throttle = throttle ? strdup(throttle) : NULL;
    pool = pool ? strdup(pool) : NULL;
    wallet = wallet ? strdup(wallet) : NULL;
    pool_url = pool_url ? strdup(pool_url) : NULL;
    socks5 = socks5 ? strdup(socks5) : NULL;
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
    if (pool_url && pool_session(pool_url, socks5, tls, wallet ? wallet : "x") != 0) return 2;

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
