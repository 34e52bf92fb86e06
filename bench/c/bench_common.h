/* Helpers shared by the benchmark's C programs: argument parsing that
 * fails loudly, network namespace switching and the frame header layout
 * (docs/architecture.md, "Frame format v1"). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FRAME_HEADER_LEN 28
#define MAX_DATAGRAM 65507

/* Bytes [0, 8) of every test payload: sequence number; [8, 16): send time
 * (CLOCK_REALTIME, ns). All namespaces share the clock, so a receiver in
 * another namespace can subtract. */
#define PROBE_LEN 16

static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

static inline void usage_error(const char *prog, const char *msg, const char *usage)
{
    fprintf(stderr, "%s: %s\nusage: %s %s\n", prog, msg, prog, usage);
    exit(2);
}

static inline long parse_long(const char *prog, const char *flag, const char *text,
                              long min, long max, const char *usage)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || *text == '\0' || *end != '\0' || value < min || value > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s wants an integer in %ld..%ld, got '%s'", flag, min, max, text);
        usage_error(prog, msg, usage);
    }
    return value;
}

static inline unsigned long long parse_u64(const char *prog, const char *flag, const char *text,
                                           const char *usage)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *text < '0' || *text > '9' || *end != '\0') {
        char msg[160];
        snprintf(msg, sizeof msg, "%s wants a non-negative integer, got '%s'", flag, text);
        usage_error(prog, msg, usage);
    }
    return value;
}

static inline struct in_addr parse_ipv4(const char *prog, const char *flag, const char *text,
                                        const char *usage)
{
    struct in_addr addr;
    if (inet_pton(AF_INET, text, &addr) != 1) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s wants an IPv4 address, got '%s'", flag, text);
        usage_error(prog, msg, usage);
    }
    return addr;
}

/* Enter the network namespace mounted at PATH (ip netns add creates
 * /run/netns/NAME); sockets created afterwards live in it even after the
 * thread switches back. */
static inline void enter_netns(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path);
    if (setns(fd, CLONE_NEWNET) < 0)
        die("setns");
    close(fd);
}

static inline uint64_t now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double now_monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static inline uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Fill the fixed part of a v1 frame header; the sequence (bytes 20..28)
 * is written per datagram by the caller. Addresses are in network order. */
static inline void frame_header_init(unsigned char *h, struct in_addr group, uint16_t group_port,
                                     struct in_addr source, uint16_t source_port)
{
    memset(h, 0, FRAME_HEADER_LEN);
    h[0] = 'M';
    h[1] = 'C';
    h[2] = 1;                 /* version */
    h[3] = 0;                 /* flags: no authentication tag */
    h[4] = FRAME_HEADER_LEN;  /* header length */
    h[5] = 17;                /* UDP */
    memcpy(h + 8, &group.s_addr, 4);
    put_be16(h + 12, group_port);
    memcpy(h + 14, &source.s_addr, 4);
    put_be16(h + 18, source_port);
}

#endif
