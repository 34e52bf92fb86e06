/* blast: paced UDP load generator for the benchmark.
 *
 * Sends datagrams of a fixed size at a fixed rate (or as fast as it can)
 * for a fixed time, batching with sendmmsg so the generator is not what
 * limits the measurement. Every payload starts with a sequence number
 * (counting from --seq-base, so a receiver can tell this run's datagrams
 * from late ones of an earlier run) and the send time (see PROBE_LEN).
 * Modes:
 *   multicast  to a group, TTL 1, loopback on (the relay on this host reads
 *              the looped copy; the copy on the wire is dropped by the bridge)
 *   unicast    plain datagrams to one address (kernel baseline)
 *   frame      v1 relay frames to one address (feeds a relay client)
 * Prints one JSON object with what was actually sent. */
#include "bench_common.h"

#include <math.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define MAX_BATCH 64

static const char *USAGE =
    "--mode multicast|unicast|frame --dst IP --port PORT --size BYTES --duration-ms MS\n"
    "       [--rate PPS (0: as fast as possible)] [--batch N] [--netns PATH] [--ifaddr IP]\n"
    "       [--seq-base N] [--group IP --group-port PORT (frame mode)] [--sport PORT]";

int main(int argc, char **argv)
{
    const char *prog = "blast";
    const char *mode = NULL, *netns = NULL;
    struct in_addr dst = {0}, ifaddr = {0}, group = {0};
    int have_dst = 0, have_ifaddr = 0, have_group = 0;
    long port = 0, size = 0, duration_ms = 0, rate = 0, batch = 16, group_port = 0, sport = 0;
    unsigned long long seq_base = 0;

    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc)
            usage_error(prog, "every option takes a value", USAGE);
        const char *val = argv[++i];
        if (!strcmp(flag, "--mode"))
            mode = val;
        else if (!strcmp(flag, "--dst"))
            dst = parse_ipv4(prog, flag, val, USAGE), have_dst = 1;
        else if (!strcmp(flag, "--port"))
            port = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--size"))
            size = parse_long(prog, flag, val, PROBE_LEN, 1472 - FRAME_HEADER_LEN, USAGE);
        else if (!strcmp(flag, "--duration-ms"))
            duration_ms = parse_long(prog, flag, val, 1, 3600000, USAGE);
        else if (!strcmp(flag, "--rate"))
            rate = parse_long(prog, flag, val, 0, 100000000, USAGE);
        else if (!strcmp(flag, "--batch"))
            batch = parse_long(prog, flag, val, 1, MAX_BATCH, USAGE);
        else if (!strcmp(flag, "--netns"))
            netns = val;
        else if (!strcmp(flag, "--ifaddr"))
            ifaddr = parse_ipv4(prog, flag, val, USAGE), have_ifaddr = 1;
        else if (!strcmp(flag, "--seq-base"))
            seq_base = parse_u64(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--group"))
            group = parse_ipv4(prog, flag, val, USAGE), have_group = 1;
        else if (!strcmp(flag, "--group-port"))
            group_port = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--sport"))
            sport = parse_long(prog, flag, val, 1, 65535, USAGE);
        else {
            char msg[120];
            snprintf(msg, sizeof msg, "unknown option '%s'", flag);
            usage_error(prog, msg, USAGE);
        }
    }
    if (!mode || !have_dst || !port || !size || !duration_ms)
        usage_error(prog, "--mode, --dst, --port, --size and --duration-ms are required", USAGE);
    int is_multicast = !strcmp(mode, "multicast");
    int is_frame = !strcmp(mode, "frame");
    if (!is_multicast && !is_frame && strcmp(mode, "unicast"))
        usage_error(prog, "--mode must be multicast, unicast or frame", USAGE);
    if (is_multicast && !have_ifaddr)
        usage_error(prog, "multicast mode needs --ifaddr (the interface to send on)", USAGE);
    if (is_frame && (!have_group || !group_port))
        usage_error(prog, "frame mode needs --group and --group-port for the frame header", USAGE);

    /* Sleeps end within microseconds instead of the default 50 us slack. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    if (netns)
        enter_netns(netns);

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
    struct sockaddr_in local = {.sin_family = AF_INET};
    if (have_ifaddr)
        local.sin_addr = ifaddr;
    local.sin_port = htons((uint16_t)sport);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
        die("bind");
    socklen_t local_len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &local_len);
    if (is_multicast) {
        int ttl = 1, loop = 1;
        if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &ifaddr, sizeof ifaddr) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) < 0)
            die("multicast socket options");
    }

    /* Connected: the route is looked up once and kept in the socket. Sending to an
     * address per message would look it up (and, for a group, allocate a route entry)
     * for every datagram, which cost the generator about a sixth of its CPU. */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = dst};
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
        die("connect");
    size_t header_len = is_frame ? FRAME_HEADER_LEN : 0;
    size_t datagram_len = header_len + (size_t)size;
    static unsigned char buffers[MAX_BATCH][1500];
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iovs[MAX_BATCH];
    memset(buffers, 0, sizeof buffers);
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < MAX_BATCH; i++) {
        if (is_frame)
            frame_header_init(buffers[i], group, (uint16_t)group_port, local.sin_addr,
                              ntohs(local.sin_port));
        /* Filler after the probe fields so payloads are not all zero. */
        for (size_t b = header_len + PROBE_LEN; b < datagram_len; b++)
            buffers[i][b] = (unsigned char)b;
        iovs[i].iov_base = buffers[i];
        iovs[i].iov_len = datagram_len;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    unsigned long long sent = 0, send_errors = 0;
    uint64_t start_ns = now_realtime_ns();
    double start = now_monotonic_s();
    double end = start + (double)duration_ms / 1000.0;
    for (;;) {
        double now = now_monotonic_s();
        if (now >= end)
            break;
        long want = batch;
        if (rate > 0) {
            /* Datagrams due by now; sleep until the next one is due. */
            unsigned long long due = (unsigned long long)((now - start) * (double)rate) + 1;
            if (due <= sent) {
                double next = start + (double)sent / (double)rate;
                if (next > end)
                    next = end;
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                double wait = next - now;
                ts.tv_sec += (time_t)wait;
                ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                continue;
            }
            if ((long)(due - sent) < want)
                want = (long)(due - sent);
        }
        uint64_t stamp = now_realtime_ns();
        for (long i = 0; i < want; i++) {
            unsigned char *p = buffers[i];
            uint64_t seq = seq_base + sent + (uint64_t)i;
            if (is_frame)
                put_be64(p + 20, seq);
            put_be64(p + header_len, seq);
            put_be64(p + header_len + 8, stamp);
        }
        int n = sendmmsg(fd, msgs, (unsigned int)want, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* ENOBUFS, or ECONNREFUSED after an ICMP port unreachable (nothing listened
             * yet, as while a relay starts): the datagram was not sent; count, go on. */
            send_errors++;
            continue;
        }
        sent += (unsigned long long)n;
    }
    double elapsed = now_monotonic_s() - start;
    printf("{\"sent\": %llu, \"elapsed\": %.6f, \"start_ns\": %llu, \"send_errors\": %llu, "
           "\"datagram_len\": %zu}\n",
           sent, elapsed, (unsigned long long)start_ns, send_errors, datagram_len);
    return 0;
}
