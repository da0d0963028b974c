/*
 * wsclient.h - the RFC 6455 client pieces that loadgen.c and storm.c share.
 *
 * Static functions only, compiled into each program that includes it (each
 * is one translation unit; bench/loadgen.py's build() rebuilds a program when
 * this header is newer than its binary). Here: clocks, random bytes and the
 * masking-key generator, the SHA-1 and base64 of the handshake key and its
 * Sec-WebSocket-Accept check (4.1, 4.2.2), growable byte buffers, masked
 * client frames (5.2, 5.3), the server frame header parser, and a log-linear
 * latency histogram.
 *
 * The including file defines die(): a fatal error prints that program's own
 * JSON error report and exits 2. Nothing here knows about connections,
 * phases or reports.
 */
#ifndef WSCLIENT_H
#define WSCLIENT_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define NS_PER_S 1000000000ULL
#define NS_PER_MS 1000000ULL
#define MAX_FRAME (16u << 20)  /* larger server frames are a protocol error */
#define MAX_HTTP_HEAD 16384    /* an upgrade (or storm.c probe) response must fit in this */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN 32          /* room for a base64 key (24) or accept value (28) */
#define WS_FRAME_TOO_LARGE SIZE_MAX

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...);

/* ------------------------------------------------------------------ clocks */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t self_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t secs_to_ns(double s) { return (uint64_t)(s * (double)NS_PER_S); }
static double ns_to_s(uint64_t ns) { return (double)ns / (double)NS_PER_S; }

/* ---------------------------------------------------------- random numbers */

/* xorshift64*: masking keys (and storm.c's backoff jitter) only need to
 * differ per frame here (RFC 6455 10.3 asks for unpredictability against
 * proxies; there are none on loopback). Seed it from random_bytes() first.
 * Handshake keys come from getrandom(). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void random_bytes(void *dst, size_t n) {
    uint8_t *p = dst;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("getrandom: %s", strerror(errno));
        }
        p += got;
        n -= (size_t)got;
    }
}

/* ------------------------------------------------------- SHA-1 and base64 */

static uint32_t rol32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64)
        sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rem = len - i;
    memcpy(tail, data + i, rem);
    tail[rem] = 0x80;
    size_t tail_len = rem + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++)
        tail[tail_len - 1 - (size_t)j] = (uint8_t)(bits >> (8 * j));
    sha1_block(h, tail);
    if (tail_len == 128)
        sha1_block(h, tail + 64);
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (uint8_t)(h[j] >> 24);
        out[4 * j + 1] = (uint8_t)(h[j] >> 16);
        out[4 * j + 2] = (uint8_t)(h[j] >> 8);
        out[4 * j + 3] = (uint8_t)h[j];
    }
}

static size_t base64(const uint8_t *src, size_t n, char *dst) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)src[i + 1] << 8;
        if (i + 2 < n)
            v |= src[i + 2];
        dst[o++] = tbl[(v >> 18) & 63];
        dst[o++] = tbl[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        dst[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    dst[o] = '\0';
    return o;
}

/* ---------------------------------------------------------- the handshake */

/* A fresh Sec-WebSocket-Key (16 random bytes, base64) and the
 * Sec-WebSocket-Accept value the server must answer with (4.1, 4.2.2). */
static void ws_new_key(char key[WS_KEY_LEN], char accept[WS_KEY_LEN]) {
    uint8_t nonce[16];
    random_bytes(nonce, sizeof nonce);
    base64(nonce, sizeof nonce, key);
    char concat[64];
    int n = snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
    uint8_t digest[20];
    sha1((const uint8_t *)concat, (size_t)n, digest);
    base64(digest, sizeof digest, accept);
}

/* The value of header `name` (lower case, without the colon) in a response
 * head that ends in a NUL where its blank line was: leading blanks skipped,
 * *len up to the first blank or CR. NULL if the header is missing. */
static const char *ws_header(const char *head, const char *name, size_t *len) {
    size_t name_len = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, name_len) != 0 || line[name_len] != ':')
            continue;
        const char *v = line + name_len + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        *len = strcspn(v, " \t\r");
        return v;
    }
    return NULL;
}

/* Whether the response head carries the Sec-WebSocket-Accept that ws_new_key() expects. */
static bool ws_accepted(const char *head, const char *accept) {
    size_t n;
    const char *v = ws_header(head, "sec-websocket-accept", &n);
    return v && n == strlen(accept) && memcmp(v, accept, n) == 0;
}

/* ----------------------------------------------------------------- buffers */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        die("out of memory");
    b->p = p;
    b->cap = cap;
}

static void buf_append(struct buf *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_consume(struct buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        if (b->cap > 65536) { /* keep idle connections small */
            free(b->p);
            b->p = NULL;
            b->cap = 0;
        }
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(struct buf *b) {
    free(b->p);
    *b = (struct buf){0};
}

/* ------------------------------------------------------------------ frames */

/* Append one masked client frame to `out` (5.2, 5.3). */
static void ws_frame(struct buf *out, unsigned opcode, const void *data, size_t len) {
    uint8_t head[14];
    size_t h = 0;
    head[h++] = (uint8_t)(0x80u | opcode);
    if (len < 126) {
        head[h++] = (uint8_t)(0x80u | len);
    } else if (len < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = (uint8_t)(len >> 8);
        head[h++] = (uint8_t)len;
    } else {
        head[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            head[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key32 = (uint32_t)rng_next();
    uint8_t key[4];
    memcpy(key, &key32, 4);
    memcpy(head + h, key, 4);
    h += 4;
    buf_reserve(out, h + len);
    memcpy(out->p + out->len, head, h);
    uint8_t *dst = (uint8_t *)out->p + out->len + h;
    const uint8_t *src = data;
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] ^ key[i & 3];
    out->len += h + len;
}

/* One server frame, as ws_parse_frame() found it. */
struct ws_frame_view {
    bool fin;
    unsigned opcode;
    char *payload;
    size_t len;
};

/* The frame at the start of p (n bytes): its whole length, 0 while it is
 * incomplete, or WS_FRAME_TOO_LARGE as soon as its length says it is over
 * MAX_FRAME. Servers must not mask (5.1); a masked payload is tolerated and
 * unmasked in place. */
static size_t ws_parse_frame(char *p, size_t n, struct ws_frame_view *f) {
    if (n < 2)
        return 0;
    uint8_t b0 = (uint8_t)p[0], b1 = (uint8_t)p[1];
    size_t head = 2;
    uint64_t len = b1 & 0x7Fu;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)(uint8_t)p[2] << 8 | (uint8_t)p[3];
        head = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | (uint8_t)p[2 + i];
        head = 10;
    }
    if (len > MAX_FRAME)
        return WS_FRAME_TOO_LARGE;
    bool masked = b1 & 0x80u;
    if (masked)
        head += 4;
    if (n < head + len)
        return 0;
    char *payload = p + head;
    if (masked) {
        const char *key = payload - 4;
        for (size_t i = 0; i < len; i++)
            payload[i] ^= key[i & 3];
    }
    *f = (struct ws_frame_view){.fin = b0 & 0x80u, .opcode = b0 & 0x0Fu, .payload = payload, .len = (size_t)len};
    return head + (size_t)len;
}

/* --------------------------------------------------------------- histogram */

/* Log-linear histogram of nanosecond values: exact below 256 ns, then 128
 * sub-buckets per power of two (relative error under 0.4%). */
#define H_SUB_BITS 8
#define H_HALF (1u << (H_SUB_BITS - 1))
#define H_BUCKETS ((64 - H_SUB_BITS) * H_HALF + 2 * H_HALF)

struct hist {
    uint64_t count, sum, max;
    uint64_t b[H_BUCKETS];
};

static unsigned h_index(uint64_t v) {
    if (v < (1u << H_SUB_BITS))
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (H_SUB_BITS - 1);
    return shift * H_HALF + (unsigned)(v >> shift);
}

static uint64_t h_value(unsigned idx) {
    if (idx < (1u << H_SUB_BITS))
        return idx;
    unsigned shift = idx / H_HALF - 1;
    uint64_t mant = idx - shift * H_HALF;
    return (mant << shift) + (((uint64_t)1 << shift) - 1) / 2; /* bucket middle */
}

static void hist_add(struct hist *h, uint64_t v) {
    h->b[h_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static double hist_pct_ms(const struct hist *h, double pct) {
    if (h->count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = h_value(i);
            return (double)(v < h->max ? v : h->max) / (double)NS_PER_MS;
        }
    }
    return (double)h->max / (double)NS_PER_MS;
}

/* "name":{"count":..,"mean":..,"p50":..,"p90":..,"p99":..,"p999":..,"max":..} in ms. */
static void hist_json(FILE *f, const char *name, const struct hist *h) {
    fprintf(f, "\"%s\":{\"count\":%" PRIu64, name, h->count);
    if (h->count) {
        fprintf(f, ",\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f",
                (double)h->sum / (double)h->count / (double)NS_PER_MS, hist_pct_ms(h, 50), hist_pct_ms(h, 90),
                hist_pct_ms(h, 99), hist_pct_ms(h, 99.9), (double)h->max / (double)NS_PER_MS);
    }
    fputc('}', f);
}

#endif /* WSCLIENT_H */
