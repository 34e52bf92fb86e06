/* client_ref: the C reference for the client's re-delivery.
 *
 * Receives v1 frames from one server on a unicast port (recvmmsg), checks
 * them as the Python client must (length, magic, version, header length,
 * no tag, sender address, group and group port), and re-delivers the
 * payloads as multicast on the delivery interface with TTL 0 and loopback
 * on, one sendmmsg per received batch. */
#include "bench_common.h"

#include <signal.h>
#include <sys/socket.h>

#define BATCH 64

static const char *USAGE =
    "--server-ip IP --port SERVER_PORT --group IP --group-port PORT --ifaddr IP [--rcvbuf BYTES]";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv)
{
    const char *prog = "client_ref";
    struct in_addr server = {0}, group = {0}, ifaddr = {0};
    long port = 0, group_port = 0, rcvbuf = 0;

    if (argc % 2 == 0)
        usage_error(prog, "every option takes a value", USAGE);
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *val = argv[i + 1];
        if (!strcmp(flag, "--server-ip"))
            server = parse_ipv4(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--group"))
            group = parse_ipv4(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--ifaddr"))
            ifaddr = parse_ipv4(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--port"))
            port = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--group-port"))
            group_port = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--rcvbuf"))
            rcvbuf = parse_long(prog, flag, val, 0, 1 << 30, USAGE);
        else {
            char msg[120];
            snprintf(msg, sizeof msg, "unknown option '%s'", flag);
            usage_error(prog, msg, USAGE);
        }
    }
    if (!server.s_addr || !group.s_addr || !ifaddr.s_addr || !port || !group_port)
        usage_error(prog, "--server-ip, --port, --group, --group-port and --ifaddr are required",
                    USAGE);

    int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (rx < 0 || tx < 0)
        die("socket");
    if (rcvbuf && setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        die("SO_RCVBUFFORCE");
    struct sockaddr_in bind_addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (bind(rx, (struct sockaddr *)&bind_addr, sizeof bind_addr) < 0)
        die("bind");
    int ttl = 0, loop = 1;
    if (setsockopt(tx, IPPROTO_IP, IP_MULTICAST_IF, &ifaddr, sizeof ifaddr) < 0 ||
        setsockopt(tx, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) < 0 ||
        setsockopt(tx, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) < 0)
        die("multicast socket options");

    static unsigned char bufs[BATCH][MAX_DATAGRAM + FRAME_HEADER_LEN];
    static struct sockaddr_in sources[BATCH];
    struct mmsghdr rmsgs[BATCH], smsgs[BATCH];
    struct iovec riovs[BATCH], siovs[BATCH];
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)group_port),
                             .sin_addr = group};
    unsigned char expected_group[6];
    memcpy(expected_group, &group.s_addr, 4);
    put_be16(expected_group + 4, (uint16_t)group_port);

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    unsigned long long delivered = 0, rejected = 0, deliver_errors = 0;
    while (!stop_requested) {
        for (int i = 0; i < BATCH; i++) {
            riovs[i].iov_base = bufs[i];
            riovs[i].iov_len = sizeof bufs[i];
            memset(&rmsgs[i].msg_hdr, 0, sizeof rmsgs[i].msg_hdr);
            rmsgs[i].msg_hdr.msg_name = &sources[i];
            rmsgs[i].msg_hdr.msg_namelen = sizeof sources[i];
            rmsgs[i].msg_hdr.msg_iov = &riovs[i];
            rmsgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(rx, rmsgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recvmmsg");
        }
        int out = 0;
        for (int i = 0; i < n; i++) {
            const unsigned char *f = bufs[i];
            unsigned int len = rmsgs[i].msg_len;
            unsigned int header_len = len >= FRAME_HEADER_LEN ? f[4] : 0;
            if (len < FRAME_HEADER_LEN || f[0] != 'M' || f[1] != 'C' || f[2] != 1 || f[3] != 0 ||
                header_len < FRAME_HEADER_LEN || header_len > len ||
                sources[i].sin_addr.s_addr != server.s_addr ||
                memcmp(f + 8, expected_group, sizeof expected_group) != 0) {
                rejected++;
                continue;
            }
            siovs[out].iov_base = bufs[i] + header_len;
            siovs[out].iov_len = len - header_len;
            memset(&smsgs[out].msg_hdr, 0, sizeof smsgs[out].msg_hdr);
            smsgs[out].msg_hdr.msg_name = &to;
            smsgs[out].msg_hdr.msg_namelen = sizeof to;
            smsgs[out].msg_hdr.msg_iov = &siovs[out];
            smsgs[out].msg_hdr.msg_iovlen = 1;
            out++;
        }
        int done = 0;
        while (done < out) {
            int sent = sendmmsg(tx, smsgs + done, (unsigned int)(out - done), MSG_DONTWAIT);
            if (sent < 0) {
                deliver_errors++;
                done++;
            } else {
                done += sent;
            }
        }
        delivered += (unsigned long long)out;
    }
    printf("{\"delivered\": %llu, \"rejected\": %llu, \"deliver_errors\": %llu}\n", delivered,
           rejected, deliver_errors);
    return 0;
}
