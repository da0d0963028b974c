/*
 * storm.c - reconnect-storm load generator for the Nucleus Stream benchmark.
 *
 * One process, one thread, one epoll loop, libc only, like loadgen.c, with
 * the same RFC 6455 client (its shared pieces are in wsclient.h): the upgrade
 * with a verified Sec-WebSocket-Accept, masked client frames, 7/16/64-bit
 * server frames, fragmentation, pings, the closing handshake.
 *
 * It opens N `nucleus.v1` clients (docs/protocol.md); client i says hello
 * with room "room-<i mod R>" and so subscribes to it. One publisher on
 * another route sends `req` frames "room-<r> <seq>" round-robin over the
 * rooms, --rate messages/s per room; the server broadcasts each text and
 * replies with its offset, so the publisher knows every room's head.
 *
 * Every client keeps its position (epoch, offset) from `joined` and `pub`
 * frames as the browser client does, and checks every pub: the next offset
 * (no gap, no duplicate) and the publisher's sequence number one more than
 * the last one's. It reconnects as src/nucleus/stream/static/stream.js does:
 * retry number k waits random(0, min(maxDelay, minDelay * 2^k)); the counter
 * resets once a connection stayed open stableAfter; after 1001/1012 the wait
 * is random 0.5-5 s; after 4029 at least half the ceiling; 1000, 1008 and 4003
 * are final; a connection that fails before it opened is followed by an HTTP
 * GET of the route (the handshake-refusal probe) and then the backoff; one not
 * open after connectTimeout is dropped and retried without a probe. On every
 * open it says hello with its position. (Not emulated: the heartbeat ping,
 * which an idle link only needs, and the browser's extra request headers.)
 *
 * Scenarios (the first argument):
 *   cut      after --steady seconds of traffic every client aborts its link at
 *            once (SO_LINGER 0 + close: the server sees a reset), then
 *            reconnects and resumes while the server stays up. A client is
 *            back once it has its `joined` with recovered:true and the replay.
 *   restart  after --steady seconds it prints "ready" and waits for the
 *            server to go away: the harness stops it (SIGTERM: 1001 closes)
 *            and starts it again on the same port. A client is back once it
 *            has a `joined` with recovered:false (the memory backend lost the
 *            history: a gap). The server counts as reachable again at the
 *            first TCP connect that succeeds after one was refused (a probe
 *            every 10 ms).
 * Then --after seconds more of traffic, then the publisher stops and every
 * client must reach its room's last offset (the tail check).
 *
 * Output: one JSON object on stdout at the end; "progress ..." lines and
 * "ready" on stderr. Exit status 0 when a report was printed (its "check"
 * says whether the storm passed), 2 on a fatal error (the JSON object then has
 * an "error" member), 1 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wsclient.h"

#define MAX_EVENTS 4096
#define MAX_ROOMS 100000
#define MAX_BUCKETS 12000          /* 20 minutes of 100 ms buckets */
#define MAX_CODES 16
#define PUB_REDIAL_NS (100 * NS_PER_MS) /* the publisher is a backend service: no backoff */
#define PUB_MAX_IN_FLIGHT 65536
#define REACH_EVERY_NS (10 * NS_PER_MS)
#define PROGRESS_EVERY_NS NS_PER_S
#define CLIENTS_PER_SOURCE 5000 /* see --sources */
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum scenario { SC_CUT, SC_RESTART };
enum phase { P_SETUP, P_STEADY, P_GO, P_WAIT_DOWN, P_STORM, P_AFTER, P_DRAIN, P_DONE };
/* A client's link. IDLE and CLOSING wait for the redial timer (CLOSING still
 * holds the old socket until the server's FIN); PROBING is the HTTP probe
 * after a failed handshake; FINAL means a close code that ends the stream. */
enum cstate { C_IDLE, C_CONNECTING, C_UPGRADING, C_JOINING, C_REPLAY, C_LIVE, C_CLOSING, C_PROBING, C_FINAL };
enum failure { F_REFUSED, F_RESET, F_TIMEOUT, F_HTTP, F_OTHER, N_FAILURES };
enum series { S_DIALS, S_OPENED, S_BACK, S_FAILED, N_SERIES };

static const char *const scenario_names[] = {"cut", "restart"};
static const char *const phase_names[] = {"setup", "steady", "go", "wait_down", "storm", "after", "drain", "done"};
static const char *const failure_names[] = {"refused", "reset", "timeout", "http", "other"};
static const char *const series_names[] = {"dials", "opened", "back", "failed"};

/* ------------------------------------------------------------------ config */

static struct {
    enum scenario scenario;
    struct sockaddr_in addr;
    const char *host;
    const char *path;
    const char *pub_path;
    long clients;
    long rooms;
    double rate;
    long connect_concurrency;
    double steady;
    double after;
    double min_delay_ms;
    double max_delay_ms;
    double stable_after_ms;
    double connect_timeout_ms;
    bool probe;
    bool wait_go;
    double setup_timeout;
    double down_timeout;
    double storm_timeout;
    double drain_timeout;
    double bucket_ms;
    long sources;
    int cpu;
} cfg = {
    .host = "127.0.0.1",
    .path = "/ws",
    .pub_path = "/pub",
    .clients = 19000,
    .rooms = 100,
    .rate = 2.0,
    .connect_concurrency = 64,
    .steady = 2.0,
    .after = 1.0,
    .min_delay_ms = 500,
    .max_delay_ms = 30000,
    .stable_after_ms = 5000,
    .connect_timeout_ms = 10000,
    .probe = true,
    .setup_timeout = 180.0,
    .down_timeout = 60.0,
    .storm_timeout = 120.0,
    .drain_timeout = 15.0,
    .bucket_ms = 100.0,
    .cpu = -1,
};

/* ---------------------------------------------------------------- utilities */

/* Nanoseconds this process waited on a run queue for a core (other processes
 * had it): the second field of /proc/self/schedstat; 0 if unreadable. */
static uint64_t self_wait_ns(void) {
    FILE *f = fopen("/proc/self/schedstat", "re");
    unsigned long long run = 0, wait = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &run, &wait) != 2)
            wait = 0;
        fclose(f);
    }
    return wait;
}

static uint64_t ms_to_ns(double ms) { return (uint64_t)(ms * (double)NS_PER_MS); }

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "storm: %s\n", msg);
    printf("{\"scenario\":\"%s\",\"error\":", scenario_names[cfg.scenario]);
    json_string(stdout, msg, sizeof msg);
    printf("}\n");
    fflush(stdout);
    exit(2);
}

/* Math.random(): uniform in [0, 1). */
static double rng_unit(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------ JSON reading */

/* Enough JSON for the server's frames: the members of one flat object, each
 * value as its raw text (a string without its quotes; nested values skipped
 * whole). Frames are built by the server, so strings are not unescaped. */
struct jval {
    const char *p;
    size_t n;
    char kind; /* '"' string, '{' or '[' nested, 'v' number or literal */
};

#define MAX_JFIELDS 16

struct jfield {
    const char *key;
    size_t klen;
    struct jval v;
};

struct jobj {
    int n;
    struct jfield f[MAX_JFIELDS];
};

static const char *json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p is just past an opening quote: the closing quote, or NULL. */
static const char *json_string_end(const char *p, const char *end) {
    while (p < end) {
        if (*p == '\\')
            p += 2;
        else if (*p == '"')
            return p;
        else
            p++;
    }
    return NULL;
}

static const char *json_value(const char *p, const char *end, struct jval *v) {
    if (p >= end)
        return NULL;
    if (*p == '"') {
        const char *close = json_string_end(p + 1, end);
        if (!close)
            return NULL;
        *v = (struct jval){p + 1, (size_t)(close - p - 1), '"'};
        return close + 1;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        const char *start = p;
        while (p < end) {
            if (*p == '"') {
                p = json_string_end(p + 1, end);
                if (!p)
                    return NULL;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    *v = (struct jval){start, (size_t)(p + 1 - start), *start};
                    return p + 1;
                }
            }
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\n')
        p++;
    if (p == start)
        return NULL;
    *v = (struct jval){start, (size_t)(p - start), 'v'};
    return p;
}

static bool json_object(const char *p, size_t n, struct jobj *o) {
    const char *end = p + n;
    o->n = 0;
    p = json_ws(p, end);
    if (p >= end || *p++ != '{')
        return false;
    p = json_ws(p, end);
    if (p < end && *p == '}')
        return true;
    while (p < end) {
        if (*p != '"')
            return false;
        const char *kend = json_string_end(p + 1, end);
        if (!kend)
            return false;
        const char *key = p + 1;
        size_t klen = (size_t)(kend - key);
        p = json_ws(kend + 1, end);
        if (p >= end || *p++ != ':')
            return false;
        struct jval v;
        p = json_value(json_ws(p, end), end, &v);
        if (!p)
            return false;
        if (o->n < MAX_JFIELDS)
            o->f[o->n++] = (struct jfield){key, klen, v};
        p = json_ws(p, end);
        if (p < end && *p == '}')
            return true;
        if (p >= end || *p++ != ',')
            return false;
        p = json_ws(p, end);
    }
    return false;
}

static const struct jval *jget(const struct jobj *o, const char *key) {
    size_t klen = strlen(key);
    for (int i = 0; i < o->n; i++)
        if (o->f[i].klen == klen && memcmp(o->f[i].key, key, klen) == 0)
            return &o->f[i].v;
    return NULL;
}

static bool jis(const struct jval *v, const char *s) {
    size_t n = strlen(s);
    return v && v->n == n && memcmp(v->p, s, n) == 0;
}

static bool jint(const struct jval *v, int64_t *out) {
    if (!v || v->kind != 'v' || v->n == 0 || v->n > 18)
        return false;
    int64_t x = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9')
            return false;
        x = x * 10 + (v->p[i] - '0');
    }
    *out = x;
    return true;
}

/* ------------------------------------------------------------- the clients */

struct client {
    int fd;
    uint8_t state;
    uint8_t frag_op;
    uint8_t attempt;      /* stream.js's backoff counter */
    bool want_out;
    bool opened;          /* this connection completed its upgrade */
    bool probe_connected;
    bool close_sent;
    bool is_pub;
    bool back;            /* upgraded again after the disruption */
    bool done;            /* back as the scenario requires (see the top) */
    bool gap;             /* got recovered:false after the disruption */
    uint32_t room;
    uint32_t gen;         /* timer generation: older heap entries are stale */
    uint32_t link;        /* bumped whenever the socket goes: a new one may reuse its number */
    uint64_t t_dial, t_open, t_back, t_done;
    int64_t offset;       /* last offset delivered; -1 unknown */
    int64_t replay_to;    /* recovered: the replay runs to this offset */
    int64_t seq;          /* the publisher's number in the last pub; -1 unknown */
    char epoch[24];
    struct buf in, out, frag;
    char accept[WS_KEY_LEN];
};

struct room {
    int64_t head;     /* last offset the publisher got in a reply; -1 none */
    uint32_t session; /* the publisher connection that got it */
    uint64_t seq;     /* the publisher's last sequence number for this room */
};

struct req {
    uint64_t id, seq, t_sent;
    uint32_t room;
};

static int ep = -1;
static int sig_fd = -1;
static struct client *clients; /* cfg.clients subscribers, then the publisher */
static struct client *pub;
static size_t n_clients;
static struct room *rooms;
static enum phase phase = P_SETUP;
static uint64_t t_begin, t_phase, t_ready, t_storm, t_all_back, t_reachable;
static const char *reachable_from = "";
static uint64_t cpu_storm0, cpu_storm1, wait_storm0, wait_storm1;
static size_t launched, n_setup_joined, n_back, n_done;
static bool stop_requested, go;
static char rx[1 << 18];

/* The publisher. */
static struct req *fifo;
static size_t fifo_head, fifo_len;
static uint64_t next_req_id = 1, next_pub_ns, pub_period_ns;
static uint32_t pub_room, pub_session;
static bool publishing = true;

/* The reachability probe (restart). */
static int reach_fd = -1;
static uint64_t reach_next;
static bool reach_refused;
static int reach_tag;

/* Loopback source addresses, 127.0.0.1 and up. Linux picks a connect()'s
 * port by scanning one parity of the ephemeral range first; once that half
 * (about 14,000 ports) is connected to one destination, every connect() scans
 * all of it, and the load generator crawls. Several source addresses keep
 * each under that, as clients from many addresses would be. */
static struct sockaddr_in *sources;
static size_t n_sources;

static uint32_t *series[N_SERIES];
static size_t last_bucket;
static uint64_t bucket_ns;

static struct {
    uint64_t setup_failures, setup_failure_kinds[N_FAILURES], steady_drops;
    /* from the disruption on */
    uint64_t dials, opened, failures[N_FAILURES], probes, probes_answered, dropped_after_open, final_closes;
    uint64_t recovered_true, recovered_false, fresh_joins, joins_old_epoch;
    int close_code[MAX_CODES];
    uint64_t close_count[MAX_CODES];
    /* all along */
    uint64_t deliveries, replayed, lost, duplicates, seq_errors, wrong_channel, protocol_errors, extra_joins;
    uint64_t server_errors;
    char first_server_error[200];
    uint64_t published, acked, unacked, publish_errors, publish_skipped, pub_connects;
    uint64_t tail_missing, tail_clients, rooms_unchecked;
} st;

static struct hist back_hist, done_hist, rtt_hist;
static uint64_t rtt_storm_max;

static bool in_storm(void) { return t_storm != 0; }

static void count_series(enum series s, uint64_t now) {
    if (!in_storm() || now < t_storm)
        return;
    size_t b = (size_t)((now - t_storm) / bucket_ns);
    if (b >= MAX_BUCKETS)
        b = MAX_BUCKETS - 1;
    series[s][b]++;
    if (b > last_bucket)
        last_bucket = b;
}

static void ep_ctl(int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void set_want_out(struct client *c, bool on) {
    if (c->want_out == on)
        return;
    c->want_out = on;
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (on ? EPOLLOUT : 0u), c);
}

/* Close the socket with an RST (SO_LINGER 0): an aborted link, and no
 * TIME_WAIT on this side. */
static void abort_fd(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* also removes it from the epoll set */
}

/* Bind `fd` to the source address of client `idx` (0: the publisher, probes);
 * the port is still chosen by connect(), for the whole 4-tuple. */
static void bind_source(int fd, size_t idx) {
    if (n_sources < 2)
        return;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const struct sockaddr_in *src = &sources[idx % n_sources];
    if (bind(fd, (const struct sockaddr *)src, sizeof *src) < 0)
        die("bind to source address %s: %s", inet_ntoa(src->sin_addr), strerror(errno));
}

static void conn_release(struct client *c) {
    if (c->fd >= 0)
        abort_fd(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->frag);
    c->fd = -1;
    c->want_out = false;
    c->frag_op = 0;
    c->link++;
}

static bool conn_flush(struct client *c) {
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_out(c, true);
            return true;
        }
        return false;
    }
    set_want_out(c, false);
    return true;
}

/* ---------------------------------------------------------------- timers */

/* One binary heap of (due, client, generation); setting or cancelling a
 * client's timer bumps its generation, which makes older entries stale. */
struct tentry {
    uint64_t due;
    uint32_t idx, gen;
};
static struct tentry *heap;
static size_t heap_n, heap_cap;

static void heap_push(uint64_t due, uint32_t idx, uint32_t gen) {
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof *heap);
        if (!heap)
            die("out of memory");
    }
    size_t i = heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent].due <= due)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = (struct tentry){due, idx, gen};
}

static struct tentry heap_pop(void) {
    struct tentry top = heap[0], last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_n)
            break;
        if (child + 1 < heap_n && heap[child + 1].due < heap[child].due)
            child++;
        if (heap[child].due >= last.due)
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (heap_n > 0)
        heap[i] = last;
    return top;
}

static void set_timer(struct client *c, uint64_t due) {
    c->gen++;
    heap_push(due, (uint32_t)(c - clients), c->gen);
}

static void cancel_timer(struct client *c) { c->gen++; }

/* ------------------------------------------------------ stream.js's backoff */

static uint64_t ceiling_ns(struct client *c) {
    double ceiling = cfg.min_delay_ms * (double)(1ull << (c->attempt < 40 ? c->attempt : 40));
    if (ceiling > cfg.max_delay_ms)
        ceiling = cfg.max_delay_ms;
    if (c->attempt < 255)
        c->attempt++;
    return ms_to_ns(ceiling);
}

/* retry(): wait `delay` ns, or the full-jitter backoff when delay is -1. */
static void retry(struct client *c, uint64_t now, int64_t delay) {
    if (c->is_pub)
        delay = (int64_t)PUB_REDIAL_NS;
    else if (delay < 0)
        delay = (int64_t)((double)ceiling_ns(c) * rng_unit());
    if (c->state != C_CLOSING)
        c->state = C_IDLE;
    set_timer(c, now + (uint64_t)delay);
}

/* ---------------------------------------------------------------- dialling */

static void io_failed(struct client *c, uint64_t now, int err);

static void dial(struct client *c, uint64_t now) {
    if (c->fd >= 0)
        conn_release(c); /* the last link, still waiting for the server's FIN */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise RLIMIT_NOFILE?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bind_source(fd, c->is_pub ? 0 : (size_t)(c - clients));
    c->fd = fd;
    c->state = C_CONNECTING;
    c->opened = c->close_sent = c->probe_connected = false;
    c->want_out = true;
    c->t_dial = now;

    char key[WS_KEY_LEN];
    ws_new_key(key, c->accept);

    char request[1024];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: nucleus.v1\r\n\r\n",
                     c->is_pub ? cfg.pub_path : cfg.path, cfg.host, ntohs(cfg.addr.sin_port), key);
    if (n < 0 || (size_t)n >= sizeof request)
        die("request path too long");
    buf_append(&c->out, request, (size_t)n);
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, c);
    if (c->is_pub) {
        st.pub_connects++;
    } else {
        if (in_storm())
            st.dials++;
        count_series(S_DIALS, now);
    }
    set_timer(c, now + ms_to_ns(cfg.connect_timeout_ms)); /* stream.js's giveUp */
    if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) < 0 && errno != EINPROGRESS)
        io_failed(c, now, errno);
}

/* The handshake-refusal probe: GET the route over plain HTTP, then back off. */
static void start_probe(struct client *c, uint64_t now) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise RLIMIT_NOFILE?)", strerror(errno));
    bind_source(fd, (size_t)(c - clients));
    c->fd = fd;
    c->state = C_PROBING;
    c->probe_connected = false;
    c->want_out = true;
    char request[512];
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s:%u\r\nCache-Control: no-store\r\n\r\n",
                     cfg.path, cfg.host, ntohs(cfg.addr.sin_port));
    buf_append(&c->out, request, (size_t)n);
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, c);
    if (in_storm())
        st.probes++;
    set_timer(c, now + ms_to_ns(cfg.connect_timeout_ms)); /* fetch's 10 s timeout */
    if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) < 0 && errno != EINPROGRESS)
        io_failed(c, now, errno);
}

static void probe_done(struct client *c, uint64_t now, bool answered) {
    if (answered && in_storm())
        st.probes_answered++;
    conn_release(c);
    retry(c, now, -1);
}

static enum failure failure_kind(int err) {
    switch (err) {
    case ECONNREFUSED:
        return F_REFUSED;
    case 0: /* the server closed before the upgrade completed */
    case ECONNRESET:
    case EPIPE:
        return F_RESET;
    case ETIMEDOUT:
        return F_TIMEOUT;
    default:
        return F_OTHER;
    }
}

/* stream.js: a socket that never opened is followed by the probe, then retry(). */
static void fail_before_open(struct client *c, uint64_t now, enum failure kind) {
    if (c->is_pub) {
        conn_release(c);
        retry(c, now, -1);
        return;
    }
    if (phase == P_SETUP) {
        st.setup_failures++;
        st.setup_failure_kinds[kind]++;
    }
    if (in_storm())
        st.failures[kind]++;
    count_series(S_FAILED, now);
    conn_release(c);
    if (cfg.probe)
        start_probe(c, now);
    else
        retry(c, now, -1);
}

static void pub_lost(void) {
    st.unacked += fifo_len;
    fifo_head = fifo_len = 0;
}

static void begin_storm(uint64_t now);

static void note_close_code(int code) {
    for (int i = 0; i < MAX_CODES; i++) {
        if (st.close_count[i] == 0 || st.close_code[i] == code) {
            st.close_code[i] = code;
            st.close_count[i]++;
            return;
        }
    }
}

/* An open link ended: a close frame from the server (`code`), or 1006 (EOF,
 * reset). stream.js's onclose, for a socket that had opened. */
static void lost_link(struct client *c, uint64_t now, int code, bool keep_fd) {
    if (phase == P_WAIT_DOWN)
        begin_storm(now);
    if (c->is_pub) {
        conn_release(c);
        pub_lost();
        retry(c, now, -1);
        return;
    }
    if (phase == P_STEADY || phase == P_GO)
        st.steady_drops++;
    if (in_storm()) {
        if (c->back && !c->done)
            st.dropped_after_open++;
        if (code != 1006)
            note_close_code(code);
    }
    if (now - c->t_open >= ms_to_ns(cfg.stable_after_ms))
        c->attempt = 0; /* the stableTimer fired while it was open */
    if (!keep_fd)
        conn_release(c);
    if (code == 1000 || code == 1008 || code == 4003) {
        conn_release(c);
        cancel_timer(c);
        c->state = C_FINAL;
        st.final_closes++;
        return;
    }
    c->state = keep_fd ? C_CLOSING : C_IDLE;
    if (code == 1001 || code == 1012) {
        /* A restarting server: its clients come back spread over 0.5-5 s. */
        retry(c, now, (int64_t)(ms_to_ns(500) + (uint64_t)(rng_unit() * (double)ms_to_ns(4500))));
    } else if (code == 4029) {
        uint64_t ceiling = ceiling_ns(c);
        retry(c, now, (int64_t)(ceiling / 2 + (uint64_t)(rng_unit() * (double)(ceiling / 2))));
    } else {
        retry(c, now, -1);
    }
}

/* A socket error or EOF, whatever the link was doing. */
static void io_failed(struct client *c, uint64_t now, int err) {
    switch (c->state) {
    case C_CONNECTING:
    case C_UPGRADING:
        fail_before_open(c, now, failure_kind(err));
        break;
    case C_JOINING:
    case C_REPLAY:
    case C_LIVE:
        lost_link(c, now, 1006, false);
        break;
    case C_CLOSING:
        conn_release(c); /* the server's FIN (or a reset): the redial timer stays */
        break;
    case C_PROBING:
        probe_done(c, now, err == 0 && c->in.len > 0);
        break;
    default:
        conn_release(c);
    }
}

static void send_frame(struct client *c, unsigned opcode, const void *data, size_t len, uint64_t now) {
    ws_frame(&c->out, opcode, data, len);
    if (c == pub && opcode == OP_TEXT && c->state == C_LIVE)
        return; /* the publisher's requests are flushed once per loop turn */
    if (!conn_flush(c))
        io_failed(c, now, errno);
}

/* ------------------------------------------------------------- the protocol */

static void room_name(uint32_t room, char *dst, size_t n) { snprintf(dst, n, "room-%u", room); }

static void say_hello(struct client *c, uint64_t now) {
    char frame[256];
    int n;
    if (c->is_pub) {
        n = snprintf(frame, sizeof frame, "{\"type\":\"hello\",\"channels\":{}}");
    } else if (c->epoch[0] && c->offset >= 0) {
        n = snprintf(frame, sizeof frame,
                     "{\"type\":\"hello\",\"channels\":{\"room-%u\":{\"epoch\":\"%s\",\"offset\":%" PRId64 "}}}",
                     c->room, c->epoch, c->offset);
    } else {
        n = snprintf(frame, sizeof frame, "{\"type\":\"hello\",\"channels\":{\"room-%u\":{}}}", c->room);
    }
    send_frame(c, OP_TEXT, frame, (size_t)n, now);
}

static void mark_done(struct client *c, uint64_t now) {
    if (!in_storm() || c->done)
        return;
    c->done = true;
    c->t_done = now;
    n_done++;
    count_series(S_BACK, now);
}

static void on_open(struct client *c, uint64_t now) {
    c->opened = true;
    c->t_open = now;
    c->state = C_JOINING;
    cancel_timer(c);
    if (c->is_pub) {
        c->state = C_LIVE;
        pub_session++;
        say_hello(c, now);
        return;
    }
    if (in_storm()) {
        st.opened++;
        count_series(S_OPENED, now);
        if (!c->back) {
            c->back = true;
            c->t_back = now;
            n_back++;
        }
    }
    say_hello(c, now);
}

static void on_joined(struct client *c, const struct jobj *o, uint64_t now) {
    const struct jval *epoch = jget(o, "epoch"), *recovered = jget(o, "recovered");
    int64_t offset;
    if (!epoch || epoch->kind != '"' || epoch->n == 0 || epoch->n >= sizeof c->epoch || !jint(jget(o, "offset"), &offset)) {
        st.protocol_errors++;
        return;
    }
    if (c->state != C_JOINING) {
        st.extra_joins++;
        return;
    }
    bool same_epoch = strlen(c->epoch) == epoch->n && memcmp(c->epoch, epoch->p, epoch->n) == 0;
    if (recovered && jis(recovered, "true")) {
        if (!same_epoch || offset < c->offset) {
            st.protocol_errors++; /* "recovered" into another epoch, or behind the client */
            return;
        }
        if (in_storm())
            st.recovered_true++;
        if (cfg.scenario == SC_RESTART && in_storm())
            st.joins_old_epoch++; /* the old server, still accepting while it shuts down */
        c->replay_to = offset;
        c->state = C_REPLAY;
        if (c->offset >= offset) {
            c->state = C_LIVE;
            if (cfg.scenario == SC_CUT)
                mark_done(c, now);
        }
        return;
    }
    if (recovered && !jis(recovered, "false")) {
        st.protocol_errors++;
        return;
    }
    bool asked = c->epoch[0] && c->offset >= 0;
    if (!recovered && asked) {
        st.protocol_errors++; /* a resume asked for must be answered with "recovered" */
    }
    memcpy(c->epoch, epoch->p, epoch->n);
    c->epoch[epoch->n] = '\0';
    c->offset = offset;
    c->seq = -1;
    c->state = C_LIVE;
    if (!recovered) {
        st.fresh_joins++;
        if (phase == P_SETUP)
            n_setup_joined++;
        return;
    }
    if (in_storm()) {
        st.recovered_false++;
        c->gap = true;
    }
    mark_done(c, now); /* back, with a gap: the verdict tells whether one was expected */
}

static void on_pub(struct client *c, const struct jobj *o, uint64_t now) {
    int64_t offset;
    const struct jval *text = jget(o, "text");
    if (!jint(jget(o, "offset"), &offset) || !text || text->kind != '"') {
        st.protocol_errors++;
        return;
    }
    if (c->state != C_REPLAY && c->state != C_LIVE) {
        st.protocol_errors++; /* a pub before its joined */
        return;
    }
    st.deliveries++;
    if (c->state == C_REPLAY)
        st.replayed++;
    if (offset <= c->offset) {
        st.duplicates++;
        return;
    }
    /* "room-<r> <seq>": the room it was published to, and its number there. */
    char name[32];
    room_name(c->room, name, sizeof name);
    size_t nlen = strlen(name);
    int64_t seq = -1;
    if (text->n > nlen + 1 && memcmp(text->p, name, nlen) == 0 && text->p[nlen] == ' ') {
        struct jval num = {text->p + nlen + 1, text->n - nlen - 1, 'v'};
        if (!jint(&num, &seq))
            seq = -1;
    }
    if (seq < 0)
        st.wrong_channel++;
    if (offset > c->offset + 1)
        st.lost += (uint64_t)(offset - c->offset - 1);
    else if (c->seq >= 0 && seq != c->seq + 1)
        st.seq_errors++;
    c->offset = offset;
    c->seq = seq;
    if (c->state == C_REPLAY && offset >= c->replay_to) {
        c->state = C_LIVE;
        if (cfg.scenario == SC_CUT)
            mark_done(c, now);
    }
}

static void on_reply(const struct jobj *o, uint64_t now) {
    int64_t id, offset;
    if (!jint(jget(o, "id"), &id) || fifo_len == 0) {
        st.protocol_errors++;
        return;
    }
    struct req r = fifo[fifo_head];
    fifo_head = (fifo_head + 1) % PUB_MAX_IN_FLIGHT;
    fifo_len--;
    if ((uint64_t)id != r.id) {
        st.protocol_errors++; /* replies come in the order of the requests */
        return;
    }
    uint64_t rtt = now - r.t_sent;
    hist_add(&rtt_hist, rtt);
    if ((phase == P_STORM || phase == P_WAIT_DOWN) && rtt > rtt_storm_max)
        rtt_storm_max = rtt;
    if (!jint(jget(o, "data"), &offset)) {
        st.publish_errors++;
        return;
    }
    st.acked++;
    struct room *room = &rooms[r.room];
    if (room->session == pub_session && offset <= room->head)
        st.publish_errors++; /* offsets must grow */
    room->head = offset;
    room->session = pub_session;
}

static void on_text(struct client *c, const char *p, size_t n, uint64_t now) {
    struct jobj o;
    if (!json_object(p, n, &o)) {
        st.protocol_errors++;
        return;
    }
    const struct jval *type = jget(&o, "type");
    if (!type || type->kind != '"') {
        st.protocol_errors++;
        return;
    }
    if (jis(type, "error")) {
        st.server_errors++;
        if (!st.first_server_error[0])
            snprintf(st.first_server_error, sizeof st.first_server_error, "%.*s", (int)(n < 190 ? n : 190), p);
        return; /* a req is answered by a reply, never by an error */
    }
    if (c->is_pub) {
        if (jis(type, "reply"))
            on_reply(&o, now);
        else if (!jis(type, "pong"))
            st.protocol_errors++;
        return;
    }
    const struct jval *channel = jget(&o, "channel");
    char name[32];
    room_name(c->room, name, sizeof name);
    bool joined = jis(type, "joined"), is_pub = jis(type, "pub");
    if ((joined || is_pub) && !jis(channel, name)) {
        st.wrong_channel++;
        return;
    }
    if (joined)
        on_joined(c, &o, now);
    else if (is_pub)
        on_pub(c, &o, now);
    /* other types (pong, presence...) are ignored, as the protocol asks */
}

static void on_frame(struct client *c, bool fin, unsigned opcode, char *p, size_t n, uint64_t now) {
    if (c->state == C_CLOSING)
        return; /* after the server's close frame only its FIN is expected */
    switch (opcode) {
    case OP_PING:
        send_frame(c, OP_PONG, p, n, now);
        return;
    case OP_PONG:
        return;
    case OP_CLOSE: {
        int code = n >= 2 ? (uint8_t)p[0] << 8 | (uint8_t)p[1] : 1005;
        if (!c->close_sent) {
            uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
            if (n < 2)
                ws_frame(&c->out, OP_CLOSE, NULL, 0);
            else
                ws_frame(&c->out, OP_CLOSE, body, 2);
            c->close_sent = true;
            conn_flush(c);
        }
        /* Wait for the server to close TCP (RFC 6455 7.1.1), redialling meanwhile. */
        lost_link(c, now, code, c->fd >= 0);
        return;
    }
    case OP_TEXT:
    case OP_BINARY:
        if (c->frag_op) {
            st.protocol_errors++;
            return;
        }
        if (!fin) {
            c->frag_op = (uint8_t)opcode;
            buf_append(&c->frag, p, n);
            return;
        }
        if (opcode == OP_TEXT)
            on_text(c, p, n, now);
        else
            st.protocol_errors++; /* the benchmark publishes text only */
        return;
    case OP_CONT:
        if (!c->frag_op) {
            st.protocol_errors++;
            return;
        }
        buf_append(&c->frag, p, n);
        if (fin) {
            unsigned op = c->frag_op;
            c->frag_op = 0;
            if (op == OP_TEXT)
                on_text(c, c->frag.p, c->frag.len, now);
            else
                st.protocol_errors++;
            if (c->fd >= 0)
                c->frag.len = 0;
        }
        return;
    default:
        st.protocol_errors++;
        lost_link(c, now, 1002, false);
    }
}

/* The upgrade response at the start of p: its length, or 0 if incomplete or
 * refused (then the client has been failed). */
static size_t parse_upgrade(struct client *c, char *p, size_t n, uint64_t now) {
    char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HTTP_HEAD)
            fail_before_open(c, now, F_OTHER);
        return 0;
    }
    size_t head_len = (size_t)(end - p) + 4;
    *end = '\0';
    if (strncmp(p, "HTTP/1.1 101", 12) != 0) {
        fail_before_open(c, now, F_HTTP);
        return 0;
    }
    if (!ws_accepted(p, c->accept))
        die("bad Sec-WebSocket-Accept from the server");
    size_t protocol_len;
    const char *protocol = ws_header(p, "sec-websocket-protocol", &protocol_len);
    if (!protocol || protocol_len != 10 || memcmp(protocol, "nucleus.v1", 10) != 0)
        die("the server did not select the nucleus.v1 subprotocol");
    on_open(c, now);
    return head_len;
}

/* Parse as much of p as possible; returns the number of bytes consumed. */
static size_t parse(struct client *c, char *p, size_t n, uint64_t now) {
    size_t off = 0;
    if (c->state == C_PROBING) {
        if (memmem(p, n, "\r\n\r\n", 4) || n > MAX_HTTP_HEAD)
            probe_done(c, now, true);
        return 0;
    }
    if (c->state == C_UPGRADING) {
        off = parse_upgrade(c, p, n, now);
        if (off == 0 || c->fd < 0)
            return 0;
    }
    while (c->fd >= 0) {
        struct ws_frame_view f;
        size_t used = ws_parse_frame(p + off, n - off, &f);
        if (used == 0)
            break;
        if (used == WS_FRAME_TOO_LARGE) {
            st.protocol_errors++;
            lost_link(c, now, 1009, false);
            break;
        }
        off += used;
        uint8_t state = c->state;
        on_frame(c, f.fin, f.opcode, f.payload, f.len, now);
        if (c->state == C_CLOSING && state != C_CLOSING)
            return n; /* the rest is after the close frame: dropped */
    }
    return off;
}

static void on_readable(struct client *c, uint64_t now) {
    for (int reads = 0; reads < 8 && c->fd >= 0; reads++) {
        ssize_t n = recv(c->fd, rx, sizeof rx - 1, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                io_failed(c, now, errno);
            return;
        }
        if (n == 0) {
            io_failed(c, now, 0);
            return;
        }
        uint32_t link = c->link;
        if (c->in.len == 0) {
            size_t used = parse(c, rx, (size_t)n, now);
            if (c->link == link && used < (size_t)n)
                buf_append(&c->in, rx + used, (size_t)n - used);
        } else {
            buf_append(&c->in, rx, (size_t)n);
            size_t used = parse(c, c->in.p, c->in.len, now);
            if (c->link == link)
                buf_consume(&c->in, used);
        }
        if (c->link != link || (size_t)n < sizeof rx - 1)
            return;
    }
}

static void on_writable(struct client *c, uint64_t now) {
    if (c->state == C_CONNECTING || (c->state == C_PROBING && !c->probe_connected)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            io_failed(c, now, err);
            return;
        }
        if (c->state == C_CONNECTING)
            c->state = C_UPGRADING;
        else
            c->probe_connected = true;
    }
    if (!conn_flush(c))
        io_failed(c, now, errno);
}

static void on_timer(struct client *c, uint64_t now) {
    switch (c->state) {
    case C_IDLE:
    case C_CLOSING:
        dial(c, now);
        break;
    case C_CONNECTING:
    case C_UPGRADING:
        /* stream.js's giveUp after connectTimeout: close and retry(), no probe */
        if (in_storm() && !c->is_pub) {
            st.failures[F_TIMEOUT]++;
            count_series(S_FAILED, now);
        } else if (phase == P_SETUP && !c->is_pub) {
            st.setup_failures++;
            st.setup_failure_kinds[F_TIMEOUT]++;
        }
        conn_release(c);
        retry(c, now, -1);
        break;
    case C_PROBING:
        probe_done(c, now, false);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------- the publisher */

static void publish_due(uint64_t now) {
    while (next_pub_ns <= now) {
        if (now - next_pub_ns > NS_PER_S) /* this process stalled: do not burst */
            next_pub_ns = now;
        next_pub_ns += pub_period_ns;
        uint32_t r = pub_room;
        pub_room = (pub_room + 1) % (uint32_t)cfg.rooms;
        if (!publishing)
            return;
        if (pub->state != C_LIVE || fifo_len == PUB_MAX_IN_FLIGHT) {
            st.publish_skipped++;
            continue;
        }
        struct room *room = &rooms[r];
        room->seq++;
        struct req q = {.id = next_req_id++, .seq = room->seq, .t_sent = now, .room = r};
        fifo[(fifo_head + fifo_len) % PUB_MAX_IN_FLIGHT] = q;
        fifo_len++;
        char frame[128];
        int n = snprintf(frame, sizeof frame, "{\"type\":\"req\",\"id\":%" PRIu64 ",\"text\":\"room-%u %" PRIu64 "\"}",
                         q.id, r, q.seq);
        send_frame(pub, OP_TEXT, frame, (size_t)n, now);
        st.published++;
    }
}

/* --------------------------------------------------- the reachability probe */

static void reach_close(uint64_t now, bool connected) {
    abort_fd(reach_fd);
    reach_fd = -1;
    reach_next = now + REACH_EVERY_NS;
    if (!connected)
        reach_refused = true;
    else if (reach_refused && !t_reachable) {
        t_reachable = now;
        reachable_from = "probe";
    }
}

static void reach_poll(uint64_t now) {
    if (cfg.scenario != SC_RESTART || phase != P_STORM || t_reachable || reach_fd >= 0 || now < reach_next)
        return;
    reach_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (reach_fd < 0)
        die("socket: %s", strerror(errno));
    bind_source(reach_fd, 0);
    if (connect(reach_fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) == 0) {
        reach_close(now, true);
        return;
    }
    if (errno != EINPROGRESS) {
        reach_close(now, false);
        return;
    }
    ep_ctl(EPOLL_CTL_ADD, reach_fd, EPOLLOUT, &reach_tag);
}

static void on_reach(uint64_t now) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(reach_fd, SOL_SOCKET, SO_ERROR, &err, &len);
    reach_close(now, err == 0);
}

/* ------------------------------------------------------------- phase logic */

static void set_phase(enum phase p, uint64_t now) {
    phase = p;
    t_phase = now;
}

static void begin_storm(uint64_t now) {
    t_storm = now;
    cpu_storm0 = self_cpu_ns();
    wait_storm0 = self_wait_ns();
    set_phase(P_STORM, now);
}

/* Scenario cut: every client aborts its link at once. */
static void cut(uint64_t now) {
    begin_storm(now);
    for (size_t i = 0; i < n_clients; i++) {
        struct client *c = &clients[i];
        if (c->state == C_FINAL)
            continue;
        /* stream.js sees 1006 on an open socket: retry() with full jitter */
        if (now - c->t_open >= ms_to_ns(cfg.stable_after_ms))
            c->attempt = 0;
        conn_release(c);
        c->state = C_IDLE;
        retry(c, now, -1);
    }
}

static bool tail_caught_up(bool count) {
    bool all = true;
    for (size_t i = 0; i < n_clients; i++) {
        struct client *c = &clients[i];
        struct room *room = &rooms[c->room];
        if (room->head < 0 || room->session != pub_session || c->state != C_LIVE)
            continue;
        if (c->offset < room->head) {
            all = false;
            if (count) {
                st.tail_clients++;
                st.tail_missing += (uint64_t)(room->head - c->offset);
            }
        }
    }
    return all;
}

static void finish(uint64_t now) {
    tail_caught_up(true);
    for (long r = 0; r < cfg.rooms; r++)
        if (rooms[r].head < 0 || rooms[r].session != pub_session)
            st.rooms_unchecked++;
    set_phase(P_DONE, now);
}

static void tick(uint64_t now) {
    switch (phase) {
    case P_SETUP: {
        if (pub->state == C_IDLE && pub->fd < 0 && pub->gen == 0)
            dial(pub, now);
        size_t pending = launched - n_setup_joined;
        while (pub->state == C_LIVE && launched < n_clients && pending < (size_t)cfg.connect_concurrency) {
            dial(&clients[launched++], now);
            pending++;
        }
        if (n_setup_joined == n_clients && pub->state == C_LIVE) {
            t_ready = now;
            set_phase(P_STEADY, now);
        } else if (now - t_begin > secs_to_ns(cfg.setup_timeout)) {
            size_t states[C_FINAL + 1] = {0};
            for (size_t i = 0; i < launched; i++)
                states[clients[i].state]++;
            die("setup timed out: %zu of %zu clients joined; of those launched: %zu waiting to redial, "
                "%zu connecting, %zu upgrading, %zu waiting for joined, %zu probing, %zu closed for good; "
                "%" PRIu64 " handshakes failed (refused %" PRIu64 ", reset %" PRIu64 ", timeout %" PRIu64
                ", http %" PRIu64 ", other %" PRIu64 "); publisher %s",
                n_setup_joined, n_clients, states[C_IDLE] + states[C_CLOSING], states[C_CONNECTING],
                states[C_UPGRADING], states[C_JOINING], states[C_PROBING], states[C_FINAL], st.setup_failures,
                st.setup_failure_kinds[F_REFUSED], st.setup_failure_kinds[F_RESET],
                st.setup_failure_kinds[F_TIMEOUT], st.setup_failure_kinds[F_HTTP], st.setup_failure_kinds[F_OTHER],
                pub->state == C_LIVE ? "connected" : "not connected");
        }
        break;
    }
    case P_STEADY:
        if (now - t_phase >= secs_to_ns(cfg.steady)) {
            fprintf(stderr, "ready\n");
            if (cfg.scenario == SC_RESTART)
                set_phase(P_WAIT_DOWN, now);
            else if (cfg.wait_go)
                set_phase(P_GO, now);
            else
                cut(now);
        }
        break;
    case P_GO:
        if (go)
            cut(now);
        break;
    case P_WAIT_DOWN:
        if (now - t_phase > secs_to_ns(cfg.down_timeout))
            die("the server did not go away within %.0f s of \"ready\"", cfg.down_timeout);
        break;
    case P_STORM:
        reach_poll(now);
        if (n_done == n_clients || now - t_storm > secs_to_ns(cfg.storm_timeout)) {
            t_all_back = n_done == n_clients ? now : 0;
            cpu_storm1 = self_cpu_ns();
            wait_storm1 = self_wait_ns();
            set_phase(P_AFTER, now);
            /* at once, not at the next progress tick: the harness stops its profiler here */
            fprintf(stderr, "progress after: the storm is over, %zu/%zu back\n", n_done, n_clients);
        }
        break;
    case P_AFTER:
        if (now - t_phase >= secs_to_ns(cfg.after)) {
            publishing = false;
            set_phase(P_DRAIN, now);
        }
        break;
    case P_DRAIN:
        if ((fifo_len == 0 && tail_caught_up(false)) || now - t_phase > secs_to_ns(cfg.drain_timeout))
            finish(now);
        break;
    case P_DONE:
        break;
    }
    if (stop_requested && phase != P_DONE)
        die("interrupted by a signal during the %s phase", phase_names[phase]);
}

static void progress(uint64_t now) {
    double t = ns_to_s(now - t_phase);
    switch (phase) {
    case P_SETUP:
        fprintf(stderr, "progress setup %zu/%zu joined\n", n_setup_joined, n_clients);
        break;
    case P_STEADY:
    case P_GO:
    case P_WAIT_DOWN:
        fprintf(stderr, "progress %s %.0fs %" PRIu64 " deliveries\n", phase_names[phase], t, st.deliveries);
        break;
    case P_STORM:
        fprintf(stderr, "progress storm %.1fs %zu/%zu upgraded, %zu/%zu back\n", t, n_back, n_clients, n_done,
                n_clients);
        break;
    case P_AFTER:
    case P_DRAIN:
        fprintf(stderr, "progress %s %.0fs\n", phase_names[phase], t);
        break;
    case P_DONE:
        break;
    }
}

/* ------------------------------------------------------------------ output */

static void series_json(FILE *f) {
    fprintf(f, "\"per_bucket\":{\"bucket_ms\":%.1f", cfg.bucket_ms);
    for (int s = 0; s < N_SERIES; s++) {
        fprintf(f, ",\"%s\":[", series_names[s]);
        for (size_t b = 0; b <= last_bucket; b++)
            fprintf(f, "%s%u", b ? "," : "", series[s][b]);
        fputc(']', f);
    }
    fputc('}', f);
}

static void print_report(void) {
    FILE *f = stdout;
    uint64_t ref = t_storm;
    if (cfg.scenario == SC_RESTART) {
        if (!t_reachable) { /* no refusal seen: the first upgrade after the drop */
            for (size_t i = 0; i < n_clients; i++)
                if (clients[i].back && (!t_reachable || clients[i].t_back < t_reachable))
                    t_reachable = clients[i].t_back;
            reachable_from = "first upgrade";
        }
        ref = t_reachable ? t_reachable : t_storm;
    }
    uint64_t last_back = 0, last_done = 0;
    size_t left_behind = 0, final_clients = 0, gaps = 0;
    for (size_t i = 0; i < n_clients; i++) {
        struct client *c = &clients[i];
        if (c->back) {
            hist_add(&back_hist, c->t_back > ref ? c->t_back - ref : 0);
            if (c->t_back > last_back)
                last_back = c->t_back;
        }
        if (c->done) {
            hist_add(&done_hist, c->t_done > ref ? c->t_done - ref : 0);
            if (c->t_done > last_done)
                last_done = c->t_done;
        } else {
            left_behind++;
        }
        final_clients += c->state == C_FINAL;
        gaps += c->gap;
    }
    bool all_back = left_behind == 0;
    bool gaps_ok = cfg.scenario == SC_CUT ? gaps == 0 : gaps == n_clients;
    bool ok = all_back && gaps_ok && st.lost == 0 && st.duplicates == 0 && st.seq_errors == 0 &&
              st.wrong_channel == 0 && st.protocol_errors == 0 && st.extra_joins == 0 && st.tail_missing == 0 &&
              st.steady_drops == 0 && st.publish_errors == 0 && st.rooms_unchecked == 0;

    fprintf(f, "{\"scenario\":\"%s\",\"clients\":%zu,\"rooms\":%ld,\"rate_per_room\":%.3f", scenario_names[cfg.scenario],
            n_clients, cfg.rooms, cfg.rate);
    fprintf(f, ",\"backoff\":{\"min_delay_ms\":%.0f,\"max_delay_ms\":%.0f,\"stable_after_ms\":%.0f,"
               "\"connect_timeout_ms\":%.0f,\"probe\":%s}",
            cfg.min_delay_ms, cfg.max_delay_ms, cfg.stable_after_ms, cfg.connect_timeout_ms,
            cfg.probe ? "true" : "false");
    fprintf(f, ",\"source_addresses\":%zu,\"setup_s\":%.3f,\"setup_failures\":%" PRIu64, n_sources ? n_sources : 1,
            t_ready ? ns_to_s(t_ready - t_begin) : 0.0, st.setup_failures);
    fprintf(f, ",\"t_disrupted_ns\":%" PRIu64 ",\"t_reference_ns\":%" PRIu64, t_storm, ref);
    if (cfg.scenario == SC_RESTART) {
        fprintf(f, ",\"reachable_from\":\"%s\",\"downtime_s\":%.3f", reachable_from,
                t_reachable > t_storm ? ns_to_s(t_reachable - t_storm) : 0.0);
    }
    /* The storm's figures: from the reference (the cut; the server reachable
     * again) until the last client was upgraded, and was back. */
    fprintf(f, ",\"all_back\":%s,\"left_behind\":%zu,\"final_closes\":%zu", all_back ? "true" : "false", left_behind,
            final_clients);
    if (all_back)
        fprintf(f, ",\"all_back_s\":%.3f,\"all_upgraded_s\":%.3f,\"since_disruption_s\":%.3f",
                last_done > ref ? ns_to_s(last_done - ref) : 0.0, last_back > ref ? ns_to_s(last_back - ref) : 0.0,
                ns_to_s(last_done - t_storm));
    fputc(',', f);
    hist_json(f, "upgraded_ms", &back_hist);
    fputc(',', f);
    hist_json(f, "back_ms", &done_hist);
    fprintf(f, ",\"attempts\":{\"dials\":%" PRIu64 ",\"opened\":%" PRIu64 ",\"dropped_after_open\":%" PRIu64
               ",\"probes\":%" PRIu64 ",\"probes_answered\":%" PRIu64,
            st.dials, st.opened, st.dropped_after_open, st.probes, st.probes_answered);
    for (int k = 0; k < N_FAILURES; k++)
        fprintf(f, ",\"failed_%s\":%" PRIu64, failure_names[k], st.failures[k]);
    fprintf(f, "},\"close_codes\":{");
    for (int i = 0; i < MAX_CODES && st.close_count[i]; i++)
        fprintf(f, "%s\"%d\":%" PRIu64, i ? "," : "", st.close_code[i], st.close_count[i]);
    fprintf(f, "},");
    series_json(f);
    fprintf(f,
            ",\"check\":{\"ok\":%s,\"all_back\":%s,\"gaps_as_expected\":%s,\"recovered_true\":%" PRIu64
            ",\"recovered_false\":%" PRIu64 ",\"clients_with_gap\":%zu,\"joins_old_epoch\":%" PRIu64
            ",\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"seq_errors\":%" PRIu64 ",\"wrong_channel\":%" PRIu64
            ",\"protocol_errors\":%" PRIu64 ",\"extra_joins\":%" PRIu64 ",\"steady_drops\":%" PRIu64
            ",\"tail_missing\":%" PRIu64 ",\"tail_clients\":%" PRIu64 ",\"rooms_unchecked\":%" PRIu64
            ",\"server_errors\":%" PRIu64 ",\"first_server_error\":",
            ok ? "true" : "false", all_back ? "true" : "false", gaps_ok ? "true" : "false", st.recovered_true,
            st.recovered_false, gaps, st.joins_old_epoch, st.lost, st.duplicates, st.seq_errors, st.wrong_channel,
            st.protocol_errors, st.extra_joins, st.steady_drops, st.tail_missing, st.tail_clients,
            st.rooms_unchecked, st.server_errors);
    json_string(f, st.first_server_error, sizeof st.first_server_error);
    fprintf(f,
            "},\"traffic\":{\"published\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"unacked\":%" PRIu64
            ",\"publish_errors\":%" PRIu64 ",\"publish_skipped\":%" PRIu64 ",\"publisher_connects\":%" PRIu64
            ",\"deliveries\":%" PRIu64 ",\"replayed\":%" PRIu64 ",\"fresh_joins\":%" PRIu64 ",",
            st.published, st.acked, st.unacked, st.publish_errors, st.publish_skipped, st.pub_connects,
            st.deliveries, st.replayed, st.fresh_joins);
    hist_json(f, "publish_rtt_ms", &rtt_hist);
    fprintf(f, ",\"publish_rtt_storm_max_ms\":%.3f}", (double)rtt_storm_max / (double)NS_PER_MS);
    uint64_t storm_wall = t_storm && cpu_storm1 ? (t_all_back ? t_all_back : t_phase) - t_storm : 0;
    double lg_cpu = cpu_storm1 > cpu_storm0 ? ns_to_s(cpu_storm1 - cpu_storm0) : 0.0;
    fprintf(f, ",\"loadgen_storm_cpu_s\":%.3f,\"loadgen_storm_cpu_share\":%.4f,\"loadgen_storm_wait_s\":%.3f",
            lg_cpu, storm_wall ? lg_cpu / ns_to_s(storm_wall) : 0.0,
            wait_storm1 > wait_storm0 ? ns_to_s(wait_storm1 - wait_storm0) : 0.0);
    fprintf(f, "}\n");
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: storm SCENARIO --port P [options]     SCENARIO: cut | restart\n"
            "  --host ADDR              IPv4 address of the server (127.0.0.1)\n"
            "  --port P                 server port (required)\n"
            "  --path PATH              the clients' route (/ws)\n"
            "  --pub-path PATH          the publisher's route (/pub)\n"
            "  --clients N              nucleus.v1 clients (19000)\n"
            "  --rooms R                rooms; client i subscribes to room-<i mod R> (100)\n"
            "  --rate M                 messages/s published to each room (2)\n"
            "  --connect-concurrency K  handshakes in flight while the clients first connect (64)\n"
            "  --steady S               seconds of traffic before the disruption (2)\n"
            "  --after S                seconds of traffic after every client is back (1)\n"
            "  --min-delay MS --max-delay MS --stable-after MS --connect-timeout MS\n"
            "                           stream.js's reconnect options (500, 30000, 5000, 10000)\n"
            "  --no-probe               no HTTP probe after a failed handshake\n"
            "  --cut-on now|stdin       cut: at once after \"ready\" (now), or once stdin closes\n"
            "  --setup-timeout S        (180)   --down-timeout S  restart: the server must go away (60)\n"
            "  --storm-timeout S        give up waiting for clients to come back (120)\n"
            "  --drain-timeout S        wait at most S for the tail (15)\n"
            "  --bucket-ms MS           width of the per-bucket series (100)\n"
            "  --sources K              loopback source addresses 127.0.0.1 and up, clients spread\n"
            "                           over them (one per 5000 clients; only with a 127.x host)\n"
            "  --cpu N                  pin this process to CPU N\n");
}

static double parse_num(const char *opt, const char *s, double lo, double hi) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "storm: bad value for --%s: %s\n", opt, s);
        exit(1);
    }
    return v;
}

static void parse_args(int argc, char **argv) {
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, 'P'},
        {"pub-path", required_argument, 0, 'Q'},
        {"clients", required_argument, 0, 'n'},
        {"rooms", required_argument, 0, 'r'},
        {"rate", required_argument, 0, 'R'},
        {"connect-concurrency", required_argument, 0, 'k'},
        {"steady", required_argument, 0, 's'},
        {"after", required_argument, 0, 'a'},
        {"min-delay", required_argument, 0, 'm'},
        {"max-delay", required_argument, 0, 'M'},
        {"stable-after", required_argument, 0, 'b'},
        {"connect-timeout", required_argument, 0, 'c'},
        {"no-probe", no_argument, 0, 'N'},
        {"cut-on", required_argument, 0, 'g'},
        {"setup-timeout", required_argument, 0, 'S'},
        {"down-timeout", required_argument, 0, 'd'},
        {"storm-timeout", required_argument, 0, 'T'},
        {"drain-timeout", required_argument, 0, 'D'},
        {"bucket-ms", required_argument, 0, 'B'},
        {"sources", required_argument, 0, 'A'},
        {"cpu", required_argument, 0, 'C'},
        {0, 0, 0, 0},
    };
    if (argc < 2) {
        usage(stderr);
        exit(1);
    }
    if (strcmp(argv[1], "cut") == 0) {
        cfg.scenario = SC_CUT;
    } else if (strcmp(argv[1], "restart") == 0) {
        cfg.scenario = SC_RESTART;
    } else {
        bool help = strcmp(argv[1], "--help") == 0;
        usage(help ? stdout : stderr);
        exit(help ? 0 : 1);
    }
    long port = 0;
    optind = 2;
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *name = opts[idx].name;
        switch (ch) {
        case 'H': cfg.host = optarg; break;
        case 'p': port = (long)parse_num(name, optarg, 1, 65535); break;
        case 'P': cfg.path = optarg; break;
        case 'Q': cfg.pub_path = optarg; break;
        case 'n': cfg.clients = (long)parse_num(name, optarg, 1, 1000000); break;
        case 'r': cfg.rooms = (long)parse_num(name, optarg, 1, MAX_ROOMS); break;
        case 'R': cfg.rate = parse_num(name, optarg, 0.01, 1e5); break;
        case 'k': cfg.connect_concurrency = (long)parse_num(name, optarg, 1, 100000); break;
        case 's': cfg.steady = parse_num(name, optarg, 0, 86400); break;
        case 'a': cfg.after = parse_num(name, optarg, 0, 86400); break;
        case 'm': cfg.min_delay_ms = parse_num(name, optarg, 0, 1e7); break;
        case 'M': cfg.max_delay_ms = parse_num(name, optarg, 0, 1e7); break;
        case 'b': cfg.stable_after_ms = parse_num(name, optarg, 0, 1e7); break;
        case 'c': cfg.connect_timeout_ms = parse_num(name, optarg, 1, 1e7); break;
        case 'N': cfg.probe = false; break;
        case 'g':
            if (strcmp(optarg, "stdin") == 0 || strcmp(optarg, "now") == 0) {
                cfg.wait_go = strcmp(optarg, "stdin") == 0;
                break;
            }
            fprintf(stderr, "storm: --cut-on takes now or stdin, not %s\n", optarg);
            exit(1);
        case 'S': cfg.setup_timeout = parse_num(name, optarg, 0.1, 86400); break;
        case 'd': cfg.down_timeout = parse_num(name, optarg, 0.1, 86400); break;
        case 'T': cfg.storm_timeout = parse_num(name, optarg, 0.1, 86400); break;
        case 'D': cfg.drain_timeout = parse_num(name, optarg, 0, 86400); break;
        case 'B': cfg.bucket_ms = parse_num(name, optarg, 1, 60000); break;
        case 'A': cfg.sources = (long)parse_num(name, optarg, 1, 250); break;
        case 'C': cfg.cpu = (int)parse_num(name, optarg, 0, 4095); break;
        default:
            usage(stderr);
            exit(1);
        }
    }
    if (port == 0) {
        fprintf(stderr, "storm: --port is required\n");
        exit(1);
    }
    cfg.addr.sin_family = AF_INET;
    cfg.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, cfg.host, &cfg.addr.sin_addr) != 1) {
        fprintf(stderr, "storm: --host must be an IPv4 address: %s\n", cfg.host);
        exit(1);
    }
}

static void raise_nofile(size_t need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = need;
    if (rl.rlim_max < need)
        rl.rlim_max = need; /* needs CAP_SYS_RESOURCE; falls back below */
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < need)
            die("need %zu file descriptors, RLIMIT_NOFILE allows %llu", need, (unsigned long long)rl.rlim_cur);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    setvbuf(stderr, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (cfg.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cfg.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            die("sched_setaffinity: %s", strerror(errno));
    }
    random_bytes(&rng_state, sizeof rng_state);
    rng_state |= 1;

    n_clients = (size_t)cfg.clients;
    raise_nofile(n_clients + 32);
    if ((ntohl(cfg.addr.sin_addr.s_addr) >> 24) == 127) {
        n_sources = cfg.sources ? (size_t)cfg.sources : (n_clients + CLIENTS_PER_SOURCE - 1) / CLIENTS_PER_SOURCE;
        sources = calloc(n_sources, sizeof *sources);
        if (!sources)
            die("out of memory");
        for (size_t j = 0; j < n_sources; j++) {
            sources[j].sin_family = AF_INET;
            sources[j].sin_addr.s_addr = htonl((127u << 24) + 1 + (uint32_t)j);
        }
    }
    clients = calloc(n_clients + 1, sizeof *clients);
    rooms = calloc((size_t)cfg.rooms, sizeof *rooms);
    fifo = calloc(PUB_MAX_IN_FLIGHT, sizeof *fifo);
    bucket_ns = ms_to_ns(cfg.bucket_ms);
    for (int s = 0; s < N_SERIES; s++)
        series[s] = calloc(MAX_BUCKETS, sizeof *series[s]);
    if (!clients || !rooms || !fifo || !series[N_SERIES - 1])
        die("out of memory");
    for (size_t i = 0; i <= n_clients; i++) {
        clients[i].fd = -1;
        clients[i].offset = clients[i].seq = -1;
        clients[i].room = (uint32_t)(i % (size_t)cfg.rooms);
    }
    pub = &clients[n_clients];
    pub->is_pub = true;
    for (long r = 0; r < cfg.rooms; r++)
        rooms[r].head = -1;
    pub_period_ns = (uint64_t)((double)NS_PER_S / (cfg.rate * (double)cfg.rooms));
    if (pub_period_ns == 0)
        pub_period_ns = 1;

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0)
        die("signalfd: %s", strerror(errno));
    ep_ctl(EPOLL_CTL_ADD, sig_fd, EPOLLIN, &sig_fd);
    static int stdin_tag;
    if (cfg.wait_go) {
        /* Fails for a regular file or /dev/null: then there is nothing to wait for. */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &stdin_tag};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0)
            go = true;
    }

    t_begin = t_phase = mono_ns();
    next_pub_ns = t_begin;
    uint64_t next_progress = t_begin + PROGRESS_EVERY_NS;
    static struct epoll_event events[MAX_EVENTS];
    tick(t_begin);
    while (phase != P_DONE) {
        uint64_t now = mono_ns();
        uint64_t wake = now + 50 * NS_PER_MS;
        if (heap_n > 0 && heap[0].due < wake)
            wake = heap[0].due;
        if (publishing && next_pub_ns < wake)
            wake = next_pub_ns;
        int timeout = wake > now ? (int)((wake - now + NS_PER_MS - 1) / NS_PER_MS) : 0;
        if (phase == P_STORM && cfg.scenario == SC_RESTART && !t_reachable && timeout > 10)
            timeout = 10;
        int n = epoll_wait(ep, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            uint32_t evs = events[i].events;
            now = mono_ns();
            if (tag == &sig_fd) {
                struct signalfd_siginfo si;
                while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
                    stop_requested = true;
                continue;
            }
            if (tag == &stdin_tag) {
                char tmp[256];
                ssize_t got = read(STDIN_FILENO, tmp, sizeof tmp);
                if (got <= 0 && !(got < 0 && errno == EAGAIN)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
                    go = true;
                }
                continue;
            }
            if (tag == &reach_tag) {
                if (reach_fd >= 0)
                    on_reach(now);
                continue;
            }
            struct client *c = tag;
            uint32_t link = c->link;
            if (c->fd < 0)
                continue;
            if (evs & (EPOLLOUT | EPOLLERR))
                on_writable(c, now);
            if (c->link == link && (evs & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c, now);
        }
        now = mono_ns();
        while (heap_n > 0 && heap[0].due <= now) {
            struct tentry e = heap_pop();
            struct client *c = &clients[e.idx];
            if (e.gen == c->gen)
                on_timer(c, now);
        }
        publish_due(now);
        if (pub->state == C_LIVE && pub->out.len > 0 && !conn_flush(pub))
            io_failed(pub, now, errno);
        tick(now);
        if (now >= next_progress && phase != P_DONE) {
            progress(now);
            next_progress = now + PROGRESS_EVERY_NS;
        }
    }
    print_report();
    fflush(stdout);
    return 0; /* the kernel tears the sockets down */
}
