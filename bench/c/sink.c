/* sink: counting receiver for the benchmark.
 *
 * One process holds every receiving socket: for each --sock it enters the
 * given network namespace, opens the socket there and comes back, so 256
 * members cost one process, not 256. Datagrams are drained with recvmmsg
 * and counted per socket. Every datagram carries the kernel's receive
 * timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME): the latest one says when the
 * last copy arrived however late this process reads it, and with --latency
 * the timestamp minus the send time in the payload is recorded for every
 * datagram. SO_RXQ_OVFL reports datagrams the kernel
 * dropped at these sockets, so a run where the sink itself was too slow is
 * visible instead of being blamed on the relay. Datagrams whose sequence
 * number is below --min-seq were sent in an earlier trial and are counted
 * apart as stale.
 *
 * Prints "ready" once every socket is open; on SIGTERM or SIGINT prints
 * one JSON object with the counts and exits. */
#include "bench_common.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define BATCH 64
#define MAX_SOCKS 4096
#define MAX_SAMPLES (8u << 20)

static const char *USAGE =
    "--sock NETNS_PATH,PORT[,GROUP,IFADDR] [--sock ...] [--offset BYTES] [--len BYTES]\n"
    "       [--rcvbuf BYTES] [--min-seq N] [--latency]";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

struct member {
    int fd;
    unsigned long long packets;
    uint32_t kernel_drops;
};

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int open_socket(const char *prog, char *spec, int rcvbuf)
{
    char *fields[4] = {0};
    int count = 0;
    for (char *tok = strtok(spec, ","); tok && count < 4; tok = strtok(NULL, ","))
        fields[count++] = tok;
    if (count != 2 && count != 4)
        usage_error(prog, "--sock wants NETNS_PATH,PORT or NETNS_PATH,PORT,GROUP,IFADDR", USAGE);
    long port = parse_long(prog, "--sock port", fields[1], 1, 65535, USAGE);

    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0)
        die("/proc/self/ns/net");
    enter_netns(fields[0]);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket");
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        die("SO_RCVBUFFORCE (run as root)");
    setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
        die("SO_TIMESTAMPNS");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (count == 4) {
        struct ip_mreqn mreq = {0};
        mreq.imr_multiaddr = parse_ipv4(prog, "--sock group", fields[2], USAGE);
        mreq.imr_address = parse_ipv4(prog, "--sock ifaddr", fields[3], USAGE);
        addr.sin_addr = mreq.imr_multiaddr;
        if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof zero) < 0)
            die("IP_MULTICAST_ALL");
        if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
            die("IP_ADD_MEMBERSHIP");
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (setns(home, CLONE_NEWNET) < 0)
        die("setns back");
    close(home);
    return fd;
}

int main(int argc, char **argv)
{
    const char *prog = "sink";
    static struct member members[MAX_SOCKS];
    int nmembers = 0;
    long offset = 0, expected_len = 0, rcvbuf = 4 << 20;
    int latency = 0;
    unsigned long long min_seq = 0;
    char *specs[MAX_SOCKS];
    int nspecs = 0;

    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--latency")) {
            latency = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage_error(prog, "option without a value", USAGE);
        char *val = argv[++i];
        if (!strcmp(flag, "--sock")) {
            if (nspecs == MAX_SOCKS)
                usage_error(prog, "too many --sock options", USAGE);
            specs[nspecs++] = val;
        } else if (!strcmp(flag, "--offset"))
            offset = parse_long(prog, flag, val, 0, 1400, USAGE);
        else if (!strcmp(flag, "--len"))
            expected_len = parse_long(prog, flag, val, 0, MAX_DATAGRAM, USAGE);
        else if (!strcmp(flag, "--min-seq"))
            min_seq = parse_u64(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--rcvbuf"))
            rcvbuf = parse_long(prog, flag, val, 4096, 1 << 30, USAGE);
        else {
            char msg[120];
            snprintf(msg, sizeof msg, "unknown option '%s'", flag);
            usage_error(prog, msg, USAGE);
        }
    }
    if (nspecs == 0)
        usage_error(prog, "at least one --sock is required", USAGE);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nspecs; i++) {
        members[i].fd = open_socket(prog, specs[i], (int)rcvbuf);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, members[i].fd, &ev) < 0)
            die("epoll_ctl");
        nmembers++;
    }

    int64_t *samples = NULL;
    if (latency) {
        samples = malloc(sizeof *samples * MAX_SAMPLES);
        if (!samples)
            die("malloc");
    }
    size_t nsamples = 0;
    unsigned long long bad = 0, stale = 0;
    int64_t last_ns = 0;   /* kernel arrival time of the latest counted datagram */

    static unsigned char bufs[BATCH][2048];
    static char controls[BATCH][256];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];

    printf("ready\n");
    fflush(stdout);

    struct epoll_event events[64];
    for (;;) {
        /* After the stop signal, keep reading until nothing is left, so copies that
         * arrived just before it are counted. */
        int stopping = stop_requested;
        int ready = epoll_wait(ep, events, 64, stopping ? 0 : 200);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (ready == 0 && stopping)
            break;
        for (int e = 0; e < ready; e++) {
            struct member *m = &members[events[e].data.u32];
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iovs[i].iov_base = bufs[i];
                    iovs[i].iov_len = sizeof bufs[i];
                    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                    msgs[i].msg_hdr.msg_iov = &iovs[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                    msgs[i].msg_hdr.msg_control = controls[i];
                    msgs[i].msg_hdr.msg_controllen = sizeof controls[i];
                }
                int n = recvmmsg(m->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0)
                    break;
                for (int i = 0; i < n; i++) {
                    unsigned int len = msgs[i].msg_len;
                    if ((expected_len && len != (unsigned long)expected_len) ||
                        len < (unsigned long)(offset + PROBE_LEN)) {
                        bad++;
                        continue;
                    }
                    if (get_be64(bufs[i] + offset) < min_seq) {
                        stale++;
                        continue;
                    }
                    m->packets++;
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
                         c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                        if (c->cmsg_level != SOL_SOCKET)
                            continue;
                        if (c->cmsg_type == SO_RXQ_OVFL) {
                            memcpy(&m->kernel_drops, CMSG_DATA(c), sizeof m->kernel_drops);
                        } else if (c->cmsg_type == SO_TIMESTAMPNS) {
                            struct timespec ts;
                            memcpy(&ts, CMSG_DATA(c), sizeof ts);
                            int64_t arrived = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
                            if (arrived > last_ns)
                                last_ns = arrived;
                            if (latency && nsamples < MAX_SAMPLES) {
                                int64_t sent = (int64_t)get_be64(bufs[i] + offset + 8);
                                samples[nsamples++] = arrived - sent;
                            }
                        }
                    }
                }
                if (n < BATCH)
                    break;
            }
        }
    }

    unsigned long long total = 0, kernel_drops = 0;
    printf("{\"counts\": [");
    for (int i = 0; i < nmembers; i++) {
        printf("%s%llu", i ? ", " : "", members[i].packets);
        total += members[i].packets;
        kernel_drops += members[i].kernel_drops;
    }
    printf("], \"total\": %llu, \"bad\": %llu, \"stale\": %llu, \"sink_drops\": %llu, \"last_ns\": %lld",
           total, bad, stale, kernel_drops, (long long)last_ns);
    if (latency) {
        qsort(samples, nsamples, sizeof *samples, compare_i64);
        printf(", \"latency_ns\": {\"samples\": %zu", nsamples);
        if (nsamples) {
            printf(", \"min\": %lld, \"p50\": %lld, \"p99\": %lld, \"max\": %lld",
                   (long long)samples[0], (long long)samples[nsamples / 2],
                   (long long)samples[(nsamples * 99) / 100], (long long)samples[nsamples - 1]);
        }
        printf("}");
    }
    printf("}\n");
    return 0;
}
