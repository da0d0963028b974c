/*
 * loadgen.c - WebSocket load generator for the Nucleus Stream benchmark.
 *
 * One process, one thread, one epoll loop, libc only. It is a minimal
 * RFC 6455 client: an HTTP/1.1 upgrade with a random Sec-WebSocket-Key whose
 * Sec-WebSocket-Accept answer is verified, masked client frames (section
 * 5.3), server frames parsed with 7/16/64-bit lengths, fragmentation (5.4)
 * and frames split across reads, pings answered with pongs (5.5.2), and the
 * closing handshake (5.5.1, 7). The pieces it shares with storm.c (SHA-1,
 * base64, frame encoding and parsing, the histogram) are in wsclient.h.
 *
 * Modes (see usage()):
 *   fanout      N subscribers, one publisher keeping W messages in flight; a
 *               message completes when every subscriber got it.
 *   latency     the same set-up, the publisher sends R messages per second.
 *   handshakes  C workers open a connection, upgrade, close, again and again.
 *   opens       rounds of N connections opened and upgraded with K in flight,
 *               none closed until all N are open; then all close, and again.
 *   idle        N subscribers, held open until stdin closes or a signal.
 *
 * Before measuring, the publisher sends a "ready probe" and re-sends it until
 * every subscriber has received one: only then are all of them known to be in
 * the server's room. Data messages carry a sequence number and the
 * CLOCK_MONOTONIC time at which they were written, as 16 hex digits each, so
 * latency is measured by one clock, in one process.
 *
 * The "socketio" dialect speaks Engine.IO 4 / Socket.IO 5 over the same
 * frames: it waits for the open packet "0{...}", joins the default namespace
 * with "40", answers Engine.IO pings "2" with "3", and carries messages as
 * events 42["msg","<payload>"] both ways.
 *
 * Output: one JSON object on stdout at the end; "progress ..." lines and
 * "ready" (idle mode) on stderr. Exit status 0 on success, 2 on a fatal error
 * (the JSON object then has an "error" member), 1 on bad usage.
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
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "wsclient.h"

#define MAX_EVENTS 4096
#define MAX_MSG_SIZE 65536
#define PROBE_SETTLE_NS (200 * NS_PER_MS)
#define HS_TIMEOUT_NS (5 * NS_PER_S)  /* a handshake-mode connect + upgrade */
#define CLOSE_WAIT_NS NS_PER_S        /* then the server has this long to close TCP */
#define ROUND_SETTLE_NS (50 * NS_PER_MS) /* opens: pause between a round's closes and the next */
#define PROGRESS_EVERY_NS NS_PER_S
#define SIO_PREFIX "42[\"msg\",\""
#define SIO_PREFIX_LEN 10

enum mode { M_FANOUT, M_LATENCY, M_HANDSHAKES, M_IDLE, M_OPENS };
enum dialect { D_RAW, D_SOCKETIO };
enum role { R_SUB, R_PUB, R_HS, R_OPEN };
enum cstate { S_FREE, S_CONNECTING, S_UPGRADING, S_EIO_OPEN, S_SIO_CONNECT, S_OPEN, S_CLOSING };
enum phase { P_CONNECT, P_PROBE, P_WARMUP, P_MEASURE, P_DRAIN, P_HOLD, P_DONE };

static const char *const mode_names[] = {"fanout", "latency", "handshakes", "idle", "opens"};
static const char *const phase_names[] = {"connect", "probe", "warmup", "measure", "drain", "hold", "done"};

/* ------------------------------------------------------------------ config */

#define MAX_PIDS 16

static struct {
    enum mode mode;
    enum dialect dialect;
    struct sockaddr_in addr;
    const char *host;
    const char *sub_path;
    const char *pub_path;
    long subscribers;
    long window;
    double rate;
    double duration;
    double warmup;
    double warmup_max;
    long msg_size;
    long concurrency;
    long connect_concurrency;
    double setup_timeout;
    double drain_timeout;
    double hold;
    long server_pids[MAX_PIDS];
    int n_server_pids;
    long broker_pids[MAX_PIDS];
    int n_broker_pids;
    long coalesce_us;
    double overload_after;
    int cpu;
} cfg = {
    .host = "127.0.0.1",
    .subscribers = 1000,
    .window = 32,
    .rate = 20.0,
    .duration = 10.0,
    .warmup = 1.0,
    .warmup_max = 60.0,
    .msg_size = 100,
    .concurrency = 32,
    .connect_concurrency = 64,
    .setup_timeout = 120.0,
    .drain_timeout = 30.0,
    .hold = 600.0,
    .coalesce_us = 0,
    .overload_after = 3.0,
    .cpu = -1,
};

/* ---------------------------------------------------------------- utilities */

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
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
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loadgen: %s\n", msg);
    printf("{\"mode\":\"%s\",\"error\":", mode_names[cfg.mode]);
    json_string(stdout, msg);
    printf("}\n");
    fflush(stdout);
    exit(2);
}

/* ------------------------------------------------------------- connections */

struct conn {
    int fd;
    uint8_t role;
    uint8_t state;
    uint8_t frag_op;
    bool want_out;
    bool got_probe;
    bool close_sent;
    bool close_rcvd;
    bool counted; /* handshakes, opens: this connection's handshake was counted */
    uint64_t next_seq;
    uint64_t t_start;
    struct buf in;   /* bytes received but not parsed yet */
    struct buf out;  /* bytes not written yet */
    struct buf frag; /* a fragmented message being reassembled */
    char accept[WS_KEY_LEN]; /* the Sec-WebSocket-Accept value we expect */
};

/* What the publisher sent: indexed by sequence number (1-based). */
struct sent_msg {
    uint64_t sent_ns;
    uint32_t remaining;
    bool in_window;
};

static int ep = -1;
static int timer_fd = -1;
static int sig_fd = -1;
static struct conn *conns; /* subscribers, or handshake workers */
static size_t n_conns;
static struct conn pub_conn;
static bool pub_dirty;
static enum phase phase = P_CONNECT;
static uint64_t t_begin, t_phase, t_ready;
static size_t launched, ready_subs, probes_ok;
static uint64_t probe_sent_ns, last_probe_rx_ns;
static bool probe_sent;
static bool retry_pending;
static uint64_t in_flight;
static uint64_t next_seq = 1;
static uint64_t oldest_open = 1; /* latency mode: lowest seq not yet complete */
static bool overloaded;
static struct sent_msg *sent;
static size_t sent_cap;
static uint64_t next_send_ns, send_period_ns;
static bool stop_requested;
static char stop_reason[64] = "";
static char rx[1 << 18];
static struct hist lat_hist, done_hist, hs_hist;

static struct {
    uint64_t deliveries_total, deliveries_window;
    uint64_t completed_total, completed_window;
    uint64_t sent_window;
    uint64_t outstanding;
    uint64_t order_errors, size_errors, unknown_seq, protocol_errors, pub_received;
    uint64_t connect_errors, closed_by_server;
    uint64_t handshakes_total, handshakes_window, handshake_errors, close_timeouts;
    uint64_t max_send_lag_ns;
} st;

#define MAX_CPUS 64

/* Per-core jiffies from /proc/stat: busy covers user, nice, system, irq,
 * softirq and steal. Softirq time (loopback packet processing) is charged to
 * no process, so a core can be saturated while the process on it shows less. */
struct core_times {
    unsigned long long busy, softirq, total;
};

struct snap {
    uint64_t wall, self_cpu;
    long long server_ticks, broker_ticks;
    int n_cores;
    struct core_times cores[MAX_CPUS];
};
static struct snap snap0, snap1;

/* Opens mode: the current round, and the sum of the measured rounds' opening
 * intervals (wall and CPU time), reported as if it were one window. */
static struct {
    bool opening, closing;
    size_t ready;
    uint64_t t_round, next_round_ns;
    uint64_t rounds_window;
    struct snap start;
    struct snap sum;
} rnd;

/* utime+stime of one process (all its threads), in clock ticks; -1 if unreadable. */
static long long process_cpu_ticks(long pid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    /* Fields after the ")" that ends comm: state is field 3, utime 14, stime 15. */
    char *p = strrchr(text, ')');
    if (!p)
        return -1;
    p++;
    long long utime = -1, stime = -1;
    for (int field = 3; field <= 15; field++) {
        char *end;
        while (*p == ' ')
            p++;
        long long v = strtoll(p, &end, 10);
        if (field == 14)
            utime = v;
        if (field == 15)
            stime = v;
        while (*end && *end != ' ')
            end++;
        p = end;
    }
    return utime < 0 || stime < 0 ? -1 : utime + stime;
}

/* The sum over `pids`; -1 if there are none or one is unreadable (it exited). */
static long long pids_cpu_ticks(const long *pids, int n) {
    long long sum = 0;
    for (int i = 0; i < n; i++) {
        long long t = process_cpu_ticks(pids[i]);
        if (t < 0)
            return -1;
        sum += t;
    }
    return n > 0 ? sum : -1;
}

static int read_cores(struct core_times *cores) {
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < MAX_CPUS) {
        int cpu;
        unsigned long long v[8] = {0};
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
            continue;
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) < 9 || cpu != n)
            break;
        /* user nice system idle iowait irq softirq steal */
        cores[n].busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        cores[n].softirq = v[6];
        cores[n].total = cores[n].busy + v[3] + v[4];
        n++;
    }
    fclose(f);
    return n;
}

static void take_snap(struct snap *s) {
    s->wall = mono_ns();
    s->self_cpu = self_cpu_ns();
    s->server_ticks = pids_cpu_ticks(cfg.server_pids, cfg.n_server_pids);
    s->broker_ticks = pids_cpu_ticks(cfg.broker_pids, cfg.n_broker_pids);
    s->n_cores = read_cores(s->cores);
}

/* sum += b - a; a reading that failed once (-1, 0 cores) stays failed. */
static void add_snap_delta(struct snap *sum, const struct snap *a, const struct snap *b, bool first) {
    sum->wall += b->wall - a->wall;
    sum->self_cpu += b->self_cpu - a->self_cpu;
    long long *ticks[2] = {&sum->server_ticks, &sum->broker_ticks};
    long long from[2] = {a->server_ticks, a->broker_ticks}, to[2] = {b->server_ticks, b->broker_ticks};
    for (int i = 0; i < 2; i++) {
        if (from[i] < 0 || to[i] < 0 || (!first && *ticks[i] < 0))
            *ticks[i] = -1;
        else
            *ticks[i] += to[i] - from[i];
    }
    if (a->n_cores != b->n_cores || (!first && sum->n_cores != a->n_cores)) {
        sum->n_cores = 0;
        return;
    }
    sum->n_cores = a->n_cores;
    for (int i = 0; i < a->n_cores; i++) {
        sum->cores[i].busy += b->cores[i].busy - a->cores[i].busy;
        sum->cores[i].softirq += b->cores[i].softirq - a->cores[i].softirq;
        sum->cores[i].total += b->cores[i].total - a->cores[i].total;
    }
}

static void ep_ctl(int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void set_want_out(struct conn *c, bool on) {
    if (c->want_out == on)
        return;
    c->want_out = on;
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (on ? EPOLLOUT : 0u), c);
}

static void conn_release(struct conn *c, bool reset) {
    if (c->fd >= 0) {
        if (reset) { /* RST instead of FIN: no TIME_WAIT on this side */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd); /* also removes it from the epoll set */
    }
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->frag);
    c->fd = -1;
    c->state = S_FREE;
    c->want_out = false;
}

static bool conn_flush(struct conn *c) {
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

static void conn_failed(struct conn *c, const char *why);

static void ws_send(struct conn *c, unsigned opcode, const void *data, size_t len) {
    ws_frame(&c->out, opcode, data, len);
    if (c == &pub_conn) {
        pub_dirty = true; /* coalesced: flushed once per loop iteration */
        return;
    }
    if (!conn_flush(c))
        conn_failed(c, strerror(errno));
}

static void ws_send_close(struct conn *c, uint16_t code) {
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    c->close_sent = true;
    ws_send(c, OP_CLOSE, body, sizeof body);
}

static void start_conn(struct conn *c, enum role role) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise RLIMIT_NOFILE?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *c = (struct conn){.fd = fd, .role = (uint8_t)role, .state = S_CONNECTING, .next_seq = 1, .t_start = mono_ns()};

    char key[WS_KEY_LEN];
    ws_new_key(key, c->accept);

    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     role == R_PUB ? cfg.pub_path : cfg.sub_path, cfg.host, ntohs(cfg.addr.sin_port), key);
    if (n < 0 || (size_t)n >= sizeof req)
        die("request path too long");
    buf_append(&c->out, req, (size_t)n);

    c->want_out = true;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, c);
    if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) < 0 && errno != EINPROGRESS)
        conn_failed(c, strerror(errno));
}

/* ------------------------------------------------------------- the workload */

static size_t build_payload(char *dst, uint64_t seq, uint64_t ts) {
    static const char hex[] = "0123456789abcdef";
    size_t n = (size_t)cfg.msg_size;
    memset(dst, '.', n);
    if (seq == 0) {
        memcpy(dst, "probe", 5);
        return n;
    }
    for (int i = 15; i >= 0; i--, seq >>= 4)
        dst[i] = hex[seq & 15];
    dst[16] = ' ';
    for (int i = 15; i >= 0; i--, ts >>= 4)
        dst[17 + i] = hex[ts & 15];
    dst[33] = ' ';
    return n;
}

static bool parse_hex16(const char *p, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

/* Send message `seq` (0 is the ready probe) from the publisher. */
static void publish(uint64_t seq) {
    static char body[MAX_MSG_SIZE + 16];
    size_t off = 0;
    if (cfg.dialect == D_SOCKETIO) {
        memcpy(body, SIO_PREFIX, SIO_PREFIX_LEN);
        off = SIO_PREFIX_LEN;
    }
    uint64_t now = mono_ns();
    off += build_payload(body + off, seq, now);
    if (cfg.dialect == D_SOCKETIO) {
        body[off++] = '"';
        body[off++] = ']';
    }
    ws_send(&pub_conn, OP_TEXT, body, off);
    if (seq == 0)
        return;
    if (seq >= sent_cap) {
        size_t cap = sent_cap ? sent_cap * 2 : 4096;
        struct sent_msg *p = realloc(sent, cap * sizeof *p);
        if (!p)
            die("out of memory");
        memset(p + sent_cap, 0, (cap - sent_cap) * sizeof *p);
        sent = p;
        sent_cap = cap;
    }
    sent[seq] = (struct sent_msg){.sent_ns = now, .remaining = (uint32_t)n_conns, .in_window = phase == P_MEASURE};
    st.outstanding += n_conns;
    in_flight++;
    if (phase == P_MEASURE)
        st.sent_window++;
}

static void fill_window(void) {
    while (in_flight < (uint64_t)cfg.window)
        publish(next_seq++);
}

static void on_complete(struct sent_msg *m, uint64_t now) {
    st.completed_total++;
    in_flight--;
    bool counts = cfg.mode == M_FANOUT ? phase == P_MEASURE : m->in_window;
    if (counts) {
        st.completed_window++;
        hist_add(&done_hist, now - m->sent_ns);
    }
    if (cfg.mode == M_FANOUT && (phase == P_WARMUP || phase == P_MEASURE))
        fill_window();
}

static void on_delivery(struct conn *c, const char *p, size_t n, uint64_t now) {
    if (n >= 5 && memcmp(p, "probe", 5) == 0) {
        last_probe_rx_ns = now;
        if (!c->got_probe) {
            c->got_probe = true;
            probes_ok++;
        }
        return;
    }
    uint64_t seq, ts;
    if (n < 34 || !parse_hex16(p, &seq) || !parse_hex16(p + 17, &ts)) {
        st.protocol_errors++;
        return;
    }
    if (n != (size_t)cfg.msg_size)
        st.size_errors++;
    if (seq != c->next_seq)
        st.order_errors++;
    c->next_seq = seq + 1;
    if (seq == 0 || seq >= next_seq || sent[seq].remaining == 0) {
        st.unknown_seq++;
        return;
    }
    struct sent_msg *m = &sent[seq];
    m->remaining--;
    st.outstanding--;
    st.deliveries_total++;
    bool counts = cfg.mode == M_FANOUT ? phase == P_MEASURE : m->in_window;
    if (counts) {
        st.deliveries_window++;
        hist_add(&lat_hist, now > ts ? now - ts : 0);
    }
    if (m->remaining == 0)
        on_complete(m, now);
}

/* A connection finished its upgrade (and, for Socket.IO, its namespace join). */
static void on_ready(struct conn *c, uint64_t now) {
    c->state = S_OPEN;
    if (c->role == R_SUB) {
        ready_subs++;
    } else if (c->role == R_PUB) {
        phase = P_PROBE;
        t_phase = now;
    } else if (c->role == R_OPEN) { /* held open until the round's last one is */
        c->counted = true;
        st.handshakes_total++;
        if (phase == P_MEASURE) {
            st.handshakes_window++;
            hist_add(&hs_hist, now - c->t_start);
        }
        if (++rnd.ready == n_conns) {
            struct snap end;
            take_snap(&end);
            end.wall = now;
            if (phase == P_MEASURE) {
                add_snap_delta(&rnd.sum, &rnd.start, &end, rnd.rounds_window == 0);
                rnd.rounds_window++;
            }
            rnd.opening = false; /* tick() starts the closes */
        }
    } else { /* handshake worker: count it, then close politely */
        c->counted = true;
        st.handshakes_total++;
        if (phase == P_MEASURE) {
            st.handshakes_window++;
            hist_add(&hs_hist, now - c->t_start);
        }
        ws_send_close(c, 1000);
        if (c->fd >= 0) {
            c->state = S_CLOSING;
            c->t_start = now; /* from here on it times the close */
        }
    }
}

/* One complete data message arrived on connection c. */
static void on_message(struct conn *c, unsigned opcode, const char *p, size_t n, uint64_t now) {
    if (cfg.dialect == D_RAW) {
        if (opcode != OP_TEXT)
            st.protocol_errors++;
        else if (c->role == R_SUB)
            on_delivery(c, p, n, now);
        else if (c->role == R_PUB)
            st.pub_received++;
        return;
    }
    /* Engine.IO packet: type digit, then data. */
    if (n == 0) {
        st.protocol_errors++;
        return;
    }
    switch (p[0]) {
    case '0': /* open */
        if (c->state == S_EIO_OPEN) {
            c->state = S_SIO_CONNECT;
            ws_send(c, OP_TEXT, "40", 2);
        }
        return;
    case '2': { /* ping: answer with pong carrying the same data */
        char pong[64];
        size_t m = n < sizeof pong ? n : sizeof pong;
        memcpy(pong, p, m);
        pong[0] = '3';
        ws_send(c, OP_TEXT, pong, m);
        return;
    }
    case '3': /* pong */
    case '6': /* noop */
        return;
    case '4': /* message: a Socket.IO packet */
        if (n >= 2 && p[1] == '0') {
            if (c->state == S_SIO_CONNECT)
                on_ready(c, now);
            return;
        }
        if (n >= SIO_PREFIX_LEN + 2 && memcmp(p, SIO_PREFIX, SIO_PREFIX_LEN) == 0 && p[n - 2] == '"' &&
            p[n - 1] == ']') {
            if (c->role == R_SUB)
                on_delivery(c, p + SIO_PREFIX_LEN, n - SIO_PREFIX_LEN - 2, now);
            else if (c->role == R_PUB)
                st.pub_received++;
            return;
        }
        if (n >= 2 && (p[1] == '4' || p[1] == '1')) { /* connect_error, disconnect */
            conn_failed(c, "socket.io namespace refused or closed");
            return;
        }
        st.protocol_errors++;
        return;
    default:
        st.protocol_errors++;
    }
}

static void on_frame(struct conn *c, bool fin, unsigned opcode, const char *p, size_t n, uint64_t now) {
    switch (opcode) {
    case OP_PING:
        ws_send(c, OP_PONG, p, n);
        return;
    case OP_PONG:
        return;
    case OP_CLOSE:
        c->close_rcvd = true;
        if (!c->close_sent) {
            uint16_t code = n >= 2 ? (uint16_t)((uint8_t)p[0] << 8 | (uint8_t)p[1]) : 1000;
            ws_send_close(c, code);
        }
        /* Handshake workers closed first; now wait for the server to close
         * TCP (7.1.1), so TIME_WAIT stays on its side. */
        if ((c->role != R_HS && c->role != R_OPEN) || !c->counted) {
            char why[160];
            int code = n >= 2 ? (uint8_t)p[0] << 8 | (uint8_t)p[1] : 1005;
            int reason_len = n > 2 ? (int)(n - 2 > 100 ? 100 : n - 2) : 0;
            snprintf(why, sizeof why, "closed by server (code %d%s%.*s)", code, reason_len ? ": " : "",
                     reason_len, n > 2 ? p + 2 : "");
            conn_failed(c, why);
        }
        return;
    case OP_TEXT:
    case OP_BINARY:
        if (c->frag.len > 0 || c->frag_op) {
            st.protocol_errors++;
            return;
        }
        if (fin) {
            on_message(c, opcode, p, n, now);
        } else {
            c->frag_op = (uint8_t)opcode;
            buf_append(&c->frag, p, n);
        }
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
            on_message(c, op, c->frag.p, c->frag.len, now);
            if (c->fd >= 0)
                c->frag.len = 0;
        }
        return;
    default:
        conn_failed(c, "unknown opcode");
    }
}

/* Validate the upgrade response at the start of p; returns the header
 * length, 0 if incomplete. */
static size_t parse_upgrade(struct conn *c, char *p, size_t n) {
    char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HTTP_HEAD)
            conn_failed(c, "upgrade response too large");
        return 0;
    }
    size_t head_len = (size_t)(end - p) + 4;
    *end = '\0';
    if (strncmp(p, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(p, "\r\n");
        if (eol)
            *eol = '\0';
        char why[160];
        snprintf(why, sizeof why, "upgrade refused: %.120s", p);
        conn_failed(c, why);
        return 0;
    }
    if (!ws_accepted(p, c->accept)) {
        conn_failed(c, "bad Sec-WebSocket-Accept");
        return 0;
    }
    return head_len;
}

/* Parse as much of p as possible; returns the number of bytes consumed. */
static size_t parse(struct conn *c, char *p, size_t n, uint64_t now) {
    size_t off = 0;
    if (c->state == S_UPGRADING) {
        off = parse_upgrade(c, p, n);
        if (off == 0 || c->fd < 0)
            return 0;
        if (cfg.dialect == D_SOCKETIO)
            c->state = S_EIO_OPEN;
        else
            on_ready(c, now);
    }
    while (c->fd >= 0) {
        struct ws_frame_view f;
        size_t used = ws_parse_frame(p + off, n - off, &f);
        if (used == 0)
            break;
        if (used == WS_FRAME_TOO_LARGE) {
            conn_failed(c, "frame too large");
            break;
        }
        off += used;
        on_frame(c, f.fin, f.opcode, f.payload, f.len, now);
    }
    return off;
}

static void on_readable(struct conn *c) {
    for (int reads = 0; reads < 8 && c->fd >= 0; reads++) {
        ssize_t n = recv(c->fd, rx, sizeof rx, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_failed(c, strerror(errno));
            return;
        }
        if (n == 0) {
            if (c->state == S_CLOSING && (c->role == R_HS || c->role == R_OPEN)) {
                conn_release(c, false);
            } else {
                conn_failed(c, "connection closed by server");
            }
            return;
        }
        uint64_t now = mono_ns(); /* one timestamp per read: these bytes arrived together */
        if (c->in.len == 0) {
            size_t used = parse(c, rx, (size_t)n, now);
            if (c->fd >= 0 && used < (size_t)n)
                buf_append(&c->in, rx + used, (size_t)n - used);
        } else {
            buf_append(&c->in, rx, (size_t)n);
            size_t used = parse(c, c->in.p, c->in.len, now);
            if (c->fd >= 0)
                buf_consume(&c->in, used);
        }
        if ((size_t)n < sizeof rx)
            return;
    }
}

static void on_writable(struct conn *c) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_failed(c, strerror(err));
            return;
        }
        c->state = S_UPGRADING;
    }
    if (!conn_flush(c))
        conn_failed(c, strerror(errno));
}

static void conn_failed(struct conn *c, const char *why) {
    if (c->fd < 0)
        return;
    bool during_setup = phase == P_CONNECT || phase == P_PROBE;
    if (c->role == R_HS || c->role == R_OPEN) {
        if (!c->counted)
            st.handshake_errors++;
        else if (c->role == R_OPEN && c->state != S_CLOSING)
            st.closed_by_server++;
        if (c->role == R_OPEN && !c->counted)
            retry_pending = true; /* tick() opens the slot again */
        conn_release(c, true);
        if (st.handshake_errors > 100 && st.handshakes_total == 0)
            die("handshakes keep failing: %s", why);
        return;
    }
    if (c->role == R_PUB) {
        if (phase != P_DONE && phase != P_HOLD)
            die("publisher connection failed: %s", why);
        conn_release(c, true);
        return;
    }
    if (strncmp(why, "upgrade refused", 15) == 0 || strncmp(why, "bad Sec-WebSocket", 17) == 0)
        die("%s", why);
    if (during_setup && !c->got_probe) {
        st.connect_errors++;
        if (c->state == S_OPEN)
            ready_subs--;
        conn_release(c, true);
        if (st.connect_errors > 100 + n_conns / 10)
            die("too many failed subscriber connections (%" PRIu64 "), last: %s", st.connect_errors, why);
        retry_pending = true; /* tick() reconnects the slot, outside any event handler */
        return;
    }
    if (phase == P_DONE || phase == P_HOLD) {
        st.closed_by_server++;
        conn_release(c, true);
        return;
    }
    die("subscriber connection lost during the %s phase: %s", phase_names[phase], why);
}

/* ------------------------------------------------------------- phase logic */

static void set_phase(enum phase p, uint64_t now) {
    phase = p;
    t_phase = now;
}

static void start_timer(uint64_t first_ns, uint64_t period_ns) {
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(first_ns / NS_PER_S), .tv_nsec = (long)(first_ns % NS_PER_S)},
        .it_interval = {.tv_sec = (time_t)(period_ns / NS_PER_S), .tv_nsec = (long)(period_ns % NS_PER_S)},
    };
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime: %s", strerror(errno));
}

static void send_due(uint64_t now) {
    while (next_send_ns <= now && (phase == P_WARMUP || phase == P_MEASURE)) {
        uint64_t lag = now - next_send_ns;
        if (phase == P_MEASURE && lag > st.max_send_lag_ns)
            st.max_send_lag_ns = lag;
        publish(next_seq++);
        next_send_ns += send_period_ns;
    }
}

static void begin_workload(uint64_t now) {
    set_phase(cfg.warmup > 0 ? P_WARMUP : P_MEASURE, now);
    if (phase == P_MEASURE)
        take_snap(&snap0);
    if (cfg.mode == M_FANOUT) {
        fill_window();
    } else if (cfg.mode == M_LATENCY) {
        send_period_ns = (uint64_t)((double)NS_PER_S / cfg.rate);
        next_send_ns = now;
        start_timer(now + send_period_ns, send_period_ns);
        send_due(now);
    }
}

static void finish(uint64_t now) {
    set_phase(P_DONE, now);
    if (timer_fd >= 0)
        start_timer(0, 0);
}

static void retry_failed(void) {
    if (!retry_pending)
        return;
    retry_pending = false;
    for (size_t i = 0; i < launched; i++)
        if (conns[i].fd < 0)
            start_conn(&conns[i], R_SUB);
}

/* Latency mode: a server that cannot keep up with the offered rate only
 * grows its backlog, and latency then measures the test's length. Stop once
 * the oldest open message is older than --overload-after. */
static bool check_overload(uint64_t now) {
    while (oldest_open < next_seq && sent[oldest_open].remaining == 0)
        oldest_open++;
    if (oldest_open >= next_seq || now - sent[oldest_open].sent_ns < secs_to_ns(cfg.overload_after))
        return false;
    overloaded = true;
    if (phase == P_WARMUP)
        take_snap(&snap0);
    take_snap(&snap1);
    finish(now);
    return true;
}

/* Opens mode: one round opens every connection (K in flight), then closes
 * them all politely; phases change only between rounds, and only the opening
 * intervals of measured rounds are measured. */
static void opens_tick(uint64_t now) {
    if (rnd.opening) {
        for (size_t i = 0; i < launched; i++) {
            struct conn *c = &conns[i];
            if (c->fd >= 0 && !c->counted && now - c->t_start > HS_TIMEOUT_NS) {
                st.handshake_errors++;
                conn_release(c, true);
                retry_pending = true;
            }
        }
        if (now > rnd.t_round && now - rnd.t_round > secs_to_ns(cfg.setup_timeout))
            die("opens round timed out: %zu of %zu connections upgraded", rnd.ready, n_conns);
        if (retry_pending) {
            retry_pending = false;
            for (size_t i = 0; i < launched; i++)
                if (conns[i].fd < 0 && !conns[i].counted)
                    start_conn(&conns[i], R_OPEN);
        }
        while (launched < n_conns && launched - rnd.ready < (size_t)cfg.connect_concurrency)
            start_conn(&conns[launched++], R_OPEN);
        return;
    }
    if (rnd.closing) {
        bool busy = false;
        for (size_t i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            if (c->fd >= 0 && now - c->t_start > CLOSE_WAIT_NS) {
                st.close_timeouts++;
                conn_release(c, true);
            }
            busy |= c->fd >= 0;
        }
        if (!busy) {
            rnd.closing = false;
            rnd.next_round_ns = now + ROUND_SETTLE_NS;
        }
        return;
    }
    if (launched > 0) { /* the round's last upgrade just arrived: close them all */
        launched = 0;
        rnd.closing = true;
        for (size_t i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            ws_send_close(c, 1000);
            if (c->fd >= 0) {
                c->state = S_CLOSING;
                c->t_start = now;
            }
        }
        return;
    }
    if (now < rnd.next_round_ns)
        return;
    if (phase == P_WARMUP && now - t_phase >= secs_to_ns(cfg.warmup))
        set_phase(P_MEASURE, now);
    else if (phase == P_MEASURE && rnd.rounds_window > 0 && now - t_phase >= secs_to_ns(cfg.duration)) {
        set_phase(P_DONE, now);
        return;
    }
    rnd.opening = true;
    rnd.ready = 0;
    rnd.t_round = now;
    take_snap(&rnd.start);
    for (size_t i = 0; i < n_conns; i++)
        conns[i].counted = false;
    opens_tick(now);
}

static void tick(uint64_t now) {
    if (cfg.mode == M_OPENS) {
        if (phase == P_WARMUP || phase == P_MEASURE)
            opens_tick(now);
        if (stop_requested && phase != P_DONE)
            die("interrupted by a signal during the %s phase", phase_names[phase]);
        return;
    }
    if (phase == P_CONNECT || phase == P_PROBE)
        retry_failed();
    if (cfg.mode == M_LATENCY && (phase == P_WARMUP || phase == P_MEASURE) && check_overload(now))
        return;
    switch (phase) {
    case P_CONNECT: {
        size_t pending = launched - ready_subs;
        while (launched < n_conns && pending < (size_t)cfg.connect_concurrency) {
            start_conn(&conns[launched++], R_SUB);
            pending++;
        }
        if (ready_subs == n_conns && pub_conn.state == S_FREE)
            start_conn(&pub_conn, R_PUB);
        if (now - t_begin > secs_to_ns(cfg.setup_timeout))
            die("setup timed out: %zu of %zu subscribers upgraded", ready_subs, n_conns);
        break;
    }
    case P_PROBE:
        if (probes_ok == n_conns) {
            t_ready = now;
            if (cfg.mode == M_IDLE) {
                set_phase(P_HOLD, now);
                fprintf(stderr, "ready\n");
            } else {
                begin_workload(now);
            }
        } else if (!probe_sent || now - (last_probe_rx_ns > probe_sent_ns ? last_probe_rx_ns : probe_sent_ns) >
                                      PROBE_SETTLE_NS) {
            /* Only one probe in flight at a time, so a slow server is not
             * buried in probes before the measurement starts. */
            publish(0);
            probe_sent = true;
            probe_sent_ns = now;
        }
        if (now - t_begin > secs_to_ns(cfg.setup_timeout))
            die("setup timed out: %zu of %zu subscribers received the ready probe", probes_ok, n_conns);
        break;
    case P_WARMUP:
        /* Fan-out: the window opens once the pipeline delivers, i.e. after the
         * first message completed; a server that queues everything before it
         * writes anything would otherwise be measured while filling up. */
        if (now - t_phase >= secs_to_ns(cfg.warmup) &&
            (cfg.mode != M_FANOUT || st.completed_total > 0 || now - t_phase >= secs_to_ns(cfg.warmup_max))) {
            set_phase(P_MEASURE, now);
            take_snap(&snap0);
        }
        break;
    case P_MEASURE:
        if (now - t_phase >= secs_to_ns(cfg.duration)) {
            take_snap(&snap1);
            set_phase(P_DRAIN, now);
            if (timer_fd >= 0)
                start_timer(0, 0);
        }
        break;
    case P_DRAIN:
        if (cfg.mode == M_HANDSHAKES) {
            bool busy = false;
            for (size_t i = 0; i < n_conns; i++)
                busy |= conns[i].fd >= 0;
            if (!busy || now - t_phase > 2 * HS_TIMEOUT_NS)
                finish(now);
        } else if (st.outstanding == 0 || now - t_phase > secs_to_ns(cfg.drain_timeout)) {
            finish(now);
        }
        break;
    case P_HOLD:
        if (stop_requested || now - t_phase > secs_to_ns(cfg.hold)) {
            if (!stop_requested)
                snprintf(stop_reason, sizeof stop_reason, "hold time elapsed");
            finish(now);
        }
        break;
    case P_DONE:
        break;
    }
    if (cfg.mode == M_HANDSHAKES && phase != P_DONE) {
        for (size_t i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            uint64_t limit = c->state == S_CLOSING ? CLOSE_WAIT_NS : HS_TIMEOUT_NS;
            if (c->fd >= 0 && now - c->t_start > limit) {
                if (c->counted)
                    st.close_timeouts++;
                else
                    st.handshake_errors++;
                conn_release(c, true);
            }
            if (c->fd < 0 && phase < P_DRAIN)
                start_conn(c, R_HS);
        }
    }
    if (stop_requested && phase != P_DONE && phase != P_HOLD)
        die("interrupted by a signal during the %s phase", phase_names[phase]);
}

static void progress(uint64_t now) {
    double t = ns_to_s(now - t_phase);
    switch (phase) {
    case P_CONNECT:
        fprintf(stderr, "progress connect %zu/%zu upgraded\n", ready_subs, n_conns);
        break;
    case P_PROBE:
        fprintf(stderr, "progress probe %zu/%zu joined\n", probes_ok, n_conns);
        break;
    case P_WARMUP:
    case P_MEASURE:
        if (cfg.mode == M_HANDSHAKES || cfg.mode == M_OPENS)
            fprintf(stderr, "progress %s %.0fs %" PRIu64 " handshakes\n", phase_names[phase], t, st.handshakes_total);
        else
            fprintf(stderr, "progress %s %.0fs %" PRIu64 " deliveries\n", phase_names[phase], t, st.deliveries_total);
        break;
    case P_DRAIN:
        if (cfg.mode == M_HANDSHAKES)
            fprintf(stderr, "progress closing %.0fs\n", t);
        else
            fprintf(stderr, "progress drain %.0fs %" PRIu64 " deliveries outstanding\n", t, st.outstanding);
        break;
    case P_HOLD:
        fprintf(stderr, "progress hold %.0fs %zu connections\n", t, n_conns);
        break;
    case P_DONE:
        break;
    }
}

/* ------------------------------------------------------------------ output */

static void print_report(void) {
    FILE *f = stdout;
    if (cfg.mode == M_OPENS) { /* the measured rounds' opening intervals, end to end */
        snap1 = rnd.sum;
        snap0 = (struct snap){.n_cores = rnd.sum.n_cores};
    }
    bool measured = snap1.wall > snap0.wall;
    double wall = measured ? ns_to_s(snap1.wall - snap0.wall) : 0.0;
    fprintf(f, "{\"mode\":\"%s\",\"dialect\":\"%s\"", mode_names[cfg.mode],
            cfg.dialect == D_RAW ? "raw" : "socketio");
    if (cfg.mode == M_HANDSHAKES)
        fprintf(f, ",\"concurrency\":%zu", n_conns);
    else if (cfg.mode == M_OPENS)
        fprintf(f, ",\"connections\":%zu,\"concurrency\":%ld,\"rounds\":%" PRIu64, n_conns,
                cfg.connect_concurrency, rnd.rounds_window);
    else
        fprintf(f, ",\"subscribers\":%zu,\"msg_size\":%ld,\"setup_s\":%.3f", n_conns, cfg.msg_size,
                t_ready ? ns_to_s(t_ready - t_begin) : 0.0);

    if (cfg.mode == M_IDLE) {
        fprintf(f, ",\"held_s\":%.3f,\"stop\":", ns_to_s(mono_ns() - t_ready));
        json_string(f, stop_reason);
        fprintf(f, ",\"closed_by_server\":%" PRIu64 ",\"connect_errors\":%" PRIu64 ",\"loadgen_cpu_s\":%.3f}\n",
                st.closed_by_server, st.connect_errors, ns_to_s(self_cpu_ns()));
        return;
    }

    fprintf(f, ",\"warmup_s\":%.3f,\"duration_s\":%.3f",
            snap0.wall > t_ready && t_ready ? ns_to_s(snap0.wall - t_ready) : cfg.warmup, wall);
    if (cfg.mode == M_HANDSHAKES || cfg.mode == M_OPENS) {
        fprintf(f, ",\"handshakes\":%" PRIu64 ",\"handshakes_per_s\":%.1f,\"errors\":%" PRIu64
                   ",\"close_timeouts\":%" PRIu64 ",",
                st.handshakes_window, wall > 0 ? (double)st.handshakes_window / wall : 0.0, st.handshake_errors,
                st.close_timeouts);
        if (cfg.mode == M_OPENS)
            fprintf(f, "\"closed_by_server\":%" PRIu64 ",", st.closed_by_server);
        hist_json(f, "handshake_ms", &hs_hist);
    } else {
        uint64_t expected = (next_seq - 1) * n_conns;
        bool ok = st.outstanding == 0 && st.order_errors == 0 && st.size_errors == 0 && st.unknown_seq == 0 &&
                  st.protocol_errors == 0 && st.pub_received == 0 && st.closed_by_server == 0;
        if (cfg.mode == M_FANOUT)
            fprintf(f, ",\"window\":%ld", cfg.window);
        else
            fprintf(f, ",\"rate\":%.3f,\"offered_deliveries_per_s\":%.1f,\"max_send_lag_ms\":%.3f,\"overloaded\":%s",
                    cfg.rate, cfg.rate * (double)n_conns, (double)st.max_send_lag_ns / (double)NS_PER_MS,
                    overloaded ? "true" : "false");
        fprintf(f,
                ",\"messages_sent\":%" PRIu64 ",\"messages_completed\":%" PRIu64 ",\"deliveries\":%" PRIu64
                ",\"deliveries_per_s\":%.1f,\"messages_per_s\":%.2f,",
                next_seq - 1, st.completed_window, st.deliveries_window,
                wall > 0 ? (double)st.deliveries_window / wall : 0.0,
                wall > 0 ? (double)st.completed_window / wall : 0.0);
        hist_json(f, "latency_ms", &lat_hist);
        fputc(',', f);
        hist_json(f, "completion_ms", &done_hist);
        fprintf(f,
                ",\"check\":{\"ok\":%s,\"drained\":%s,\"expected_deliveries\":%" PRIu64 ",\"received\":%" PRIu64
                ",\"missing\":%" PRIu64 ",\"order_errors\":%" PRIu64 ",\"size_errors\":%" PRIu64
                ",\"unknown\":%" PRIu64 ",\"protocol_errors\":%" PRIu64 ",\"echoed_to_publisher\":%" PRIu64
                ",\"connect_errors\":%" PRIu64 "}",
                ok ? "true" : "false", st.outstanding == 0 ? "true" : "false", expected, st.deliveries_total,
                st.outstanding, st.order_errors, st.size_errors, st.unknown_seq, st.protocol_errors,
                st.pub_received, st.connect_errors);
    }
    double self_cpu = measured ? ns_to_s(snap1.self_cpu - snap0.self_cpu) : 0.0;
    fprintf(f, ",\"loadgen_cpu_s\":%.3f,\"loadgen_cpu_share\":%.4f", self_cpu, wall > 0 ? self_cpu / wall : 0.0);
    if (measured && snap0.server_ticks >= 0 && snap1.server_ticks >= 0) {
        double srv = (double)(snap1.server_ticks - snap0.server_ticks) / (double)sysconf(_SC_CLK_TCK);
        fprintf(f, ",\"server_cpu_s\":%.3f,\"server_cpu_share\":%.4f", srv, wall > 0 ? srv / wall : 0.0);
    }
    if (measured && snap0.broker_ticks >= 0 && snap1.broker_ticks >= 0) {
        double brk = (double)(snap1.broker_ticks - snap0.broker_ticks) / (double)sysconf(_SC_CLK_TCK);
        fprintf(f, ",\"broker_cpu_s\":%.3f,\"broker_cpu_share\":%.4f", brk, wall > 0 ? brk / wall : 0.0);
    }
    if (measured && snap0.n_cores == snap1.n_cores && snap0.n_cores > 0) {
        fprintf(f, ",\"cores\":[");
        for (int i = 0; i < snap0.n_cores; i++) {
            const struct core_times *a = &snap0.cores[i], *b = &snap1.cores[i];
            double total = (double)(b->total - a->total);
            fprintf(f, "%s{\"cpu\":%d,\"busy\":%.4f,\"softirq\":%.4f}", i ? "," : "", i,
                    total > 0 ? (double)(b->busy - a->busy) / total : 0.0,
                    total > 0 ? (double)(b->softirq - a->softirq) / total : 0.0);
        }
        fputc(']', f);
    }
    fprintf(f, "}\n");
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen MODE --port P [options]\n"
            "modes: fanout | latency | handshakes | idle | opens\n"
            "  --host ADDR            IPv4 address of the server (127.0.0.1)\n"
            "  --port P               server port (required)\n"
            "  --dialect raw|socketio plain WebSocket (default) or Engine.IO 4 / Socket.IO 5\n"
            "  --sub-path PATH        subscriber path (/sub; socketio: /socket.io/?EIO=4&transport=websocket)\n"
            "  --pub-path PATH        publisher path (/pub; socketio: the sub path + &role=pub)\n"
            "  --subscribers N        subscriber connections; opens: connections per round (1000)\n"
            "  --window W             fanout: messages in flight (32)\n"
            "  --rate R               latency: messages per second (20)\n"
            "  --duration S           measured window in seconds (10)\n"
            "  --warmup S             seconds of load before the window (1)\n"
            "  --warmup-max S         fanout: the window also waits for the first completed\n"
            "                         message, at most this long (60)\n"
            "  --size B               message payload bytes, 34..65536 (100)\n"
            "  --concurrency C        handshakes: concurrent workers (32)\n"
            "  --connect-concurrency K  upgrades in progress while connecting subscribers,\n"
            "                         or in an opens round (64)\n"
            "  --setup-timeout S      give up connecting after S seconds (120)\n"
            "  --drain-timeout S      wait at most S seconds for in-flight messages (30)\n"
            "  --overload-after S     latency: stop early, reporting \"overloaded\", once a message\n"
            "                         has waited S seconds for its last delivery (3)\n"
            "  --hold S               idle: hold at most S seconds (600)\n"
            "  --server-pid PID       read the server's CPU time from /proc/PID/stat; repeat it\n"
            "                         for a server of several processes (their sum)\n"
            "  --broker-pid PID       the same for a broker the server uses (redis-server),\n"
            "                         reported apart as broker_cpu_s\n"
            "  --coalesce-us U        after a small batch of events, sleep until U us have passed\n"
            "                         since the last wake-up: fewer reads and ACKs per delivery,\n"
            "                         but it can starve a fast server (0 = off, the default)\n"
            "  --cpu N                pin this process to CPU N\n");
}

static double parse_num(const char *opt, const char *s, double lo, double hi) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "loadgen: bad value for --%s: %s\n", opt, s);
        exit(1);
    }
    return v;
}

static void parse_args(int argc, char **argv) {
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'},          {"port", required_argument, 0, 'p'},
        {"dialect", required_argument, 0, 'd'},       {"sub-path", required_argument, 0, 's'},
        {"pub-path", required_argument, 0, 'P'},      {"subscribers", required_argument, 0, 'n'},
        {"window", required_argument, 0, 'w'},        {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'D'},      {"warmup", required_argument, 0, 'W'},
        {"size", required_argument, 0, 'b'},          {"concurrency", required_argument, 0, 'c'},
        {"connect-concurrency", required_argument, 0, 'k'}, {"setup-timeout", required_argument, 0, 'S'},
        {"drain-timeout", required_argument, 0, 'T'}, {"hold", required_argument, 0, 'h'},
        {"server-pid", required_argument, 0, 'i'},    {"cpu", required_argument, 0, 'C'},
        {"coalesce-us", required_argument, 0, 'o'},   {"overload-after", required_argument, 0, 'O'},
        {"warmup-max", required_argument, 0, 'M'},   {"broker-pid", required_argument, 0, 'B'},
        {0, 0, 0, 0},
    };
    if (argc < 2) {
        usage(stderr);
        exit(1);
    }
    const char *m = argv[1];
    if (strcmp(m, "fanout") == 0)
        cfg.mode = M_FANOUT;
    else if (strcmp(m, "latency") == 0)
        cfg.mode = M_LATENCY;
    else if (strcmp(m, "handshakes") == 0)
        cfg.mode = M_HANDSHAKES;
    else if (strcmp(m, "idle") == 0)
        cfg.mode = M_IDLE;
    else if (strcmp(m, "opens") == 0)
        cfg.mode = M_OPENS;
    else {
        usage(strcmp(m, "--help") == 0 ? stdout : stderr);
        exit(strcmp(m, "--help") == 0 ? 0 : 1);
    }
    long port = 0;
    optind = 2;
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *name = opts[idx].name;
        switch (ch) {
        case 'H': cfg.host = optarg; break;
        case 'p': port = (long)parse_num(name, optarg, 1, 65535); break;
        case 'd':
            if (strcmp(optarg, "raw") == 0)
                cfg.dialect = D_RAW;
            else if (strcmp(optarg, "socketio") == 0)
                cfg.dialect = D_SOCKETIO;
            else {
                fprintf(stderr, "loadgen: unknown dialect %s\n", optarg);
                exit(1);
            }
            break;
        case 's': cfg.sub_path = optarg; break;
        case 'P': cfg.pub_path = optarg; break;
        case 'n': cfg.subscribers = (long)parse_num(name, optarg, 1, 1000000); break;
        case 'w': cfg.window = (long)parse_num(name, optarg, 1, 1000000); break;
        case 'r': cfg.rate = parse_num(name, optarg, 0.01, 1e6); break;
        case 'D': cfg.duration = parse_num(name, optarg, 0.01, 86400); break;
        case 'W': cfg.warmup = parse_num(name, optarg, 0, 86400); break;
        case 'M': cfg.warmup_max = parse_num(name, optarg, 0, 86400); break;
        case 'b': cfg.msg_size = (long)parse_num(name, optarg, 34, MAX_MSG_SIZE); break;
        case 'c': cfg.concurrency = (long)parse_num(name, optarg, 1, 100000); break;
        case 'k': cfg.connect_concurrency = (long)parse_num(name, optarg, 1, 100000); break;
        case 'S': cfg.setup_timeout = parse_num(name, optarg, 0.1, 86400); break;
        case 'T': cfg.drain_timeout = parse_num(name, optarg, 0, 86400); break;
        case 'h': cfg.hold = parse_num(name, optarg, 0, 86400); break;
        case 'i':
        case 'B': {
            long *pids = ch == 'i' ? cfg.server_pids : cfg.broker_pids;
            int *n = ch == 'i' ? &cfg.n_server_pids : &cfg.n_broker_pids;
            if (*n == MAX_PIDS) {
                fprintf(stderr, "loadgen: at most %d --%s options\n", MAX_PIDS, name);
                exit(1);
            }
            pids[(*n)++] = (long)parse_num(name, optarg, 1, 4194304);
            break;
        }
        case 'C': cfg.cpu = (int)parse_num(name, optarg, 0, 4095); break;
        case 'o': cfg.coalesce_us = (long)parse_num(name, optarg, 0, 100000); break;
        case 'O': cfg.overload_after = parse_num(name, optarg, 0.001, 86400); break;
        default:
            usage(stderr);
            exit(1);
        }
    }
    if (port == 0) {
        fprintf(stderr, "loadgen: --port is required\n");
        exit(1);
    }
    cfg.addr.sin_family = AF_INET;
    cfg.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, cfg.host, &cfg.addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address: %s\n", cfg.host);
        exit(1);
    }
    static char default_pub[512];
    if (!cfg.sub_path)
        cfg.sub_path = cfg.dialect == D_SOCKETIO ? "/socket.io/?EIO=4&transport=websocket" : "/sub";
    if (!cfg.pub_path) {
        if (cfg.dialect == D_SOCKETIO) {
            snprintf(default_pub, sizeof default_pub, "%s%crole=pub", cfg.sub_path,
                     strchr(cfg.sub_path, '?') ? '&' : '?');
            cfg.pub_path = default_pub;
        } else {
            cfg.pub_path = "/pub";
        }
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

    n_conns = (size_t)(cfg.mode == M_HANDSHAKES ? cfg.concurrency : cfg.subscribers);
    raise_nofile(n_conns + 64);
    conns = calloc(n_conns, sizeof *conns);
    if (!conns)
        die("out of memory");
    for (size_t i = 0; i < n_conns; i++)
        conns[i].fd = -1;
    pub_conn.fd = -1;

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
    if (cfg.mode == M_LATENCY) {
        timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (timer_fd < 0)
            die("timerfd_create: %s", strerror(errno));
        ep_ctl(EPOLL_CTL_ADD, timer_fd, EPOLLIN, &timer_fd);
    }
    static int stdin_tag;
    if (cfg.mode == M_IDLE) {
        /* Fails for a regular file or /dev/null: then signals and --hold end it. */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &stdin_tag};
        epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev);
    }

    t_begin = t_phase = mono_ns();
    if (cfg.mode == M_HANDSHAKES) {
        set_phase(cfg.warmup > 0 ? P_WARMUP : P_MEASURE, t_begin);
        if (phase == P_MEASURE)
            take_snap(&snap0);
    } else if (cfg.mode == M_OPENS) {
        set_phase(cfg.warmup > 0 ? P_WARMUP : P_MEASURE, t_begin);
    }
    uint64_t next_progress = t_begin + PROGRESS_EVERY_NS;
    static struct epoll_event events[MAX_EVENTS];

    tick(t_begin);
    while (phase != P_DONE) {
        int n = epoll_wait(ep, events, MAX_EVENTS, phase == P_PROBE ? 10 : 50);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        uint64_t woke = mono_ns();
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            uint32_t evs = events[i].events;
            if (tag == &sig_fd) {
                struct signalfd_siginfo si;
                while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
                    stop_requested = true;
                    snprintf(stop_reason, sizeof stop_reason, "signal %u", si.ssi_signo);
                }
                continue;
            }
            if (tag == &timer_fd) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) > 0)
                    send_due(mono_ns());
                continue;
            }
            if (tag == &stdin_tag) {
                char tmp[256];
                ssize_t got = read(STDIN_FILENO, tmp, sizeof tmp);
                if (got <= 0 && !(got < 0 && errno == EAGAIN)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
                    stop_requested = true;
                    snprintf(stop_reason, sizeof stop_reason, "stdin closed");
                }
                continue;
            }
            struct conn *c = tag;
            int fd = c->fd;
            if (fd < 0)
                continue;
            if (evs & (EPOLLOUT | EPOLLERR))
                on_writable(c);
            if (c->fd == fd && (evs & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c);
        }
        uint64_t now = mono_ns();
        tick(now);
        if (pub_dirty && pub_conn.fd >= 0) {
            pub_dirty = false;
            if (!conn_flush(&pub_conn))
                conn_failed(&pub_conn, strerror(errno));
        }
        if (now >= next_progress && phase != P_DONE) {
            progress(now);
            next_progress = now + PROGRESS_EVERY_NS;
        }
        /* Interrupt coalescing: at saturation, let frames pile up in the
         * socket buffers so one recv() (and one TCP ACK) carries several. */
        if (cfg.coalesce_us > 0 && n > 0 && n < MAX_EVENTS && (phase == P_MEASURE || phase == P_WARMUP || phase == P_DRAIN)) {
            uint64_t until = woke + (uint64_t)cfg.coalesce_us * 1000;
            uint64_t t = mono_ns();
            if (t < until) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(until - t)};
                nanosleep(&ts, NULL);
            }
        }
    }
    print_report();
    fflush(stdout);
    /* Exit without closing each socket: the kernel tears them down. */
    return 0;
}
