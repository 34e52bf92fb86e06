/* relay_ref: the C reference for the server relay.
 *
 * Does what the Python server does on its data path, as directly as this
 * machine allows: receive group datagrams (recvmmsg, with IP_RECVTTL so
 * the TTL-0 loop guard costs the same), put the v1 frame header in front
 * of the payload in place, and send the frame to every member with one
 * sendmmsg per datagram on one non-blocking socket. A member whose send
 * fails is counted and skipped; nothing waits for it. */
#include "bench_common.h"

#include <signal.h>
#include <sys/socket.h>

#define RECV_BATCH 64
#define MAX_MEMBERS 1024

static const char *USAGE =
    "--group IP --port PORT --ifaddr IP --members IP[,IP...] [--dport PORT] [--rcvbuf BYTES]";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv)
{
    const char *prog = "relay_ref";
    struct in_addr group = {0}, ifaddr = {0};
    long port = 0, dport = 0, rcvbuf = 0;
    char *member_list = NULL;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *val = argv[i + 1];
        if (!strcmp(flag, "--group"))
            group = parse_ipv4(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--ifaddr"))
            ifaddr = parse_ipv4(prog, flag, val, USAGE);
        else if (!strcmp(flag, "--port"))
            port = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--dport"))
            dport = parse_long(prog, flag, val, 1, 65535, USAGE);
        else if (!strcmp(flag, "--rcvbuf"))
            rcvbuf = parse_long(prog, flag, val, 0, 1 << 30, USAGE);
        else if (!strcmp(flag, "--members"))
            member_list = argv[i + 1];
        else {
            char msg[120];
            snprintf(msg, sizeof msg, "unknown option '%s'", flag);
            usage_error(prog, msg, USAGE);
        }
    }
    if (argc % 2 == 0)
        usage_error(prog, "every option takes a value", USAGE);
    if (!group.s_addr || !ifaddr.s_addr || !port || !member_list)
        usage_error(prog, "--group, --port, --ifaddr and --members are required", USAGE);
    if (!dport)
        dport = port;

    static struct sockaddr_in members[MAX_MEMBERS];
    int nmembers = 0;
    for (char *tok = strtok(member_list, ","); tok; tok = strtok(NULL, ",")) {
        if (nmembers == MAX_MEMBERS)
            usage_error(prog, "at most 1024 members", USAGE);
        members[nmembers].sin_family = AF_INET;
        members[nmembers].sin_port = htons((uint16_t)dport);
        members[nmembers].sin_addr = parse_ipv4(prog, "--members", tok, USAGE);
        nmembers++;
    }

    int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (rx < 0 || tx < 0)
        die("socket");
    int one = 1, zero = 0;
    setsockopt(rx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf && setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        die("SO_RCVBUFFORCE");
    if (setsockopt(rx, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof zero) < 0 ||
        setsockopt(rx, IPPROTO_IP, IP_RECVTTL, &one, sizeof one) < 0)
        die("receive socket options");
    struct sockaddr_in bind_addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                    .sin_addr = group};
    if (bind(rx, (struct sockaddr *)&bind_addr, sizeof bind_addr) < 0)
        die("bind");
    struct ip_mreqn mreq = {.imr_multiaddr = group, .imr_address = ifaddr};
    if (setsockopt(rx, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
        die("IP_ADD_MEMBERSHIP");

    /* Each receive slot has room for the header in front of the payload,
     * so the frame is built in place without copying the payload. */
    static unsigned char bufs[RECV_BATCH][FRAME_HEADER_LEN + MAX_DATAGRAM];
    static char controls[RECV_BATCH][64];
    static struct sockaddr_in sources[RECV_BATCH];
    struct mmsghdr rmsgs[RECV_BATCH];
    struct iovec riovs[RECV_BATCH];

    static struct mmsghdr smsgs[MAX_MEMBERS];
    struct iovec frame_iov;
    for (int m = 0; m < nmembers; m++) {
        smsgs[m].msg_hdr.msg_name = &members[m];
        smsgs[m].msg_hdr.msg_namelen = sizeof members[m];
        smsgs[m].msg_hdr.msg_iov = &frame_iov;
        smsgs[m].msg_hdr.msg_iovlen = 1;
    }

    /* No SA_RESTART: a signal interrupts recvmmsg so the counters get printed. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    uint64_t seq = (uint64_t)time(NULL) << 32;
    unsigned long long forwarded = 0, send_errors = 0, loop_drops = 0;
    while (!stop_requested) {
        for (int i = 0; i < RECV_BATCH; i++) {
            riovs[i].iov_base = bufs[i] + FRAME_HEADER_LEN;
            riovs[i].iov_len = MAX_DATAGRAM;
            memset(&rmsgs[i].msg_hdr, 0, sizeof rmsgs[i].msg_hdr);
            rmsgs[i].msg_hdr.msg_name = &sources[i];
            rmsgs[i].msg_hdr.msg_namelen = sizeof sources[i];
            rmsgs[i].msg_hdr.msg_iov = &riovs[i];
            rmsgs[i].msg_hdr.msg_iovlen = 1;
            rmsgs[i].msg_hdr.msg_control = controls[i];
            rmsgs[i].msg_hdr.msg_controllen = sizeof controls[i];
        }
        int n = recvmmsg(rx, rmsgs, RECV_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recvmmsg");
        }
        for (int i = 0; i < n; i++) {
            int ttl = -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&rmsgs[i].msg_hdr); c;
                 c = CMSG_NXTHDR(&rmsgs[i].msg_hdr, c))
                if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL)
                    memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
            if (ttl == 0) {
                loop_drops++;
                continue;
            }
            unsigned char *frame = bufs[i];
            frame_header_init(frame, group, (uint16_t)port, sources[i].sin_addr,
                              ntohs(sources[i].sin_port));
            put_be64(frame + 20, seq++);
            frame_iov.iov_base = frame;
            frame_iov.iov_len = FRAME_HEADER_LEN + rmsgs[i].msg_len;
            int done = 0;
            while (done < nmembers) {
                int sent = sendmmsg(tx, smsgs + done, (unsigned int)(nmembers - done), MSG_DONTWAIT);
                if (sent < 0) {
                    /* This member's copy failed; skip it, keep the others going. */
                    send_errors++;
                    done++;
                } else {
                    done += sent;
                }
            }
            forwarded++;
        }
    }
    printf("{\"forwarded\": %llu, \"send_errors\": %llu, \"loop_drops\": %llu}\n", forwarded,
           send_errors, loop_drops);
    return 0;
}
