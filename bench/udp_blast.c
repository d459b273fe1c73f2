/*
 * udp_blast: a UDP load generator for bench/lvs that costs its CPU as little as possible, so
 * that the director, not the generator, is what is measured. It writes whole Ethernet frames
 * (IPv4/UDP or IPv6/UDP, 64-byte payload) on an AF_PACKET socket with sendmmsg, past the
 * qdisc, to the director's MAC; the client's own UDP stack is skipped. Source ports cycle over
 * FLOWS values, so FLOWS=1 is one flow (as iperf3 -u) and FLOWS=64 interleaves 64 flows packet
 * by packet. The family follows the addresses; IPv6 datagrams carry the UDP checksum IPv6
 * requires (updated for each source port).
 *
 * Usage: udp_blast IFACE DST_MAC SRC_IP DST_IP DST_PORT SECONDS FLOWS
 * Prints: sent=<frames>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { BATCH = 64, PAYLOAD = 64, FRAME4 = 14 + 20 + 8 + PAYLOAD, FRAME6 = 14 + 40 + 8 + PAYLOAD };

/* The one's complement sum of `len` bytes (even), not yet folded. */
static unsigned sum16(const unsigned char *data, int len) {
    unsigned sum = 0;
    for (int i = 0; i < len; i += 2) sum += (data[i] << 8) | data[i + 1];
    return sum;
}

static unsigned short fold(unsigned sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)sum;
}

static unsigned short ip_checksum(const unsigned char *header) {
    unsigned sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (header[i] << 8) | header[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons((unsigned short)~sum);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: udp_blast IFACE DST_MAC SRC_IP DST_IP DST_PORT SECONDS FLOWS\n");
        return 2;
    }
    unsigned char mac[6];
    if (sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "udp_blast: bad MAC %s\n", argv[2]);
        return 2;
    }
    struct in_addr source, destination;
    struct in6_addr source6, destination6;
    int ipv6 = strchr(argv[4], ':') != NULL;
    if (ipv6 ? (!inet_pton(AF_INET6, argv[3], &source6) || !inet_pton(AF_INET6, argv[4], &destination6))
             : (!inet_pton(AF_INET, argv[3], &source) || !inet_pton(AF_INET, argv[4], &destination))) {
        fprintf(stderr, "udp_blast: bad address\n");
        return 2;
    }
    int port = atoi(argv[5]), seconds = atoi(argv[6]), flows = atoi(argv[7]);
    if (flows < 1) flows = 1;
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("udp_blast: socket"); return 1; }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll link = {0};
    link.sll_family = AF_PACKET;
    link.sll_ifindex = (int)if_nametoindex(argv[1]);
    link.sll_halen = 6;
    memcpy(link.sll_addr, mac, 6);
    if (link.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&link, sizeof link) != 0) {
        perror("udp_blast: interface");
        return 1;
    }
    static unsigned char frames[BATCH][FRAME6];
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    int ip_len = ipv6 ? 40 : 20, frame = ipv6 ? FRAME6 : FRAME4, udp_at = 14 + ip_len;
    /* IPv6: the UDP checksum's sum over everything but the source port. */
    unsigned partial = 0;
    for (int i = 0; i < BATCH; i++) {
        unsigned char *f = frames[i];
        memcpy(f, mac, 6);
        memcpy(f + 6, (unsigned char[]){2, 0, 0, 0, 0, 1}, 6);
        if (ipv6) {
            f[12] = 0x86;
            f[13] = 0xdd;
            struct ip6_hdr *ip = (struct ip6_hdr *)(f + 14);
            ip->ip6_flow = htonl(6u << 28);
            ip->ip6_plen = htons(8 + PAYLOAD);
            ip->ip6_nxt = IPPROTO_UDP;
            ip->ip6_hlim = 64;
            ip->ip6_src = source6;
            ip->ip6_dst = destination6;
        } else {
            f[12] = 0x08;
            f[13] = 0x00;
            struct iphdr *ip = (struct iphdr *)(f + 14);
            ip->version = 4;
            ip->ihl = 5;
            ip->tot_len = htons(20 + 8 + PAYLOAD);
            ip->ttl = 64;
            ip->protocol = IPPROTO_UDP;
            ip->saddr = source.s_addr;
            ip->daddr = destination.s_addr;
            ip->check = ip_checksum(f + 14);
        }
        struct udphdr *udp = (struct udphdr *)(f + udp_at);
        udp->dest = htons(port);
        udp->len = htons(8 + PAYLOAD);
        udp->check = 0; /* IPv4: no UDP checksum, as it allows; IPv6: set per datagram below */
        memset(f + udp_at + 8, 7, PAYLOAD);
        if (ipv6 && i == 0) {
            /* Pseudo-header (addresses, length, protocol) and the datagram, source port 0. */
            partial = sum16(f + 14 + 8, 32) + (8 + PAYLOAD) + IPPROTO_UDP + sum16(f + udp_at, 8 + PAYLOAD);
        }
        vectors[i].iov_base = f;
        vectors[i].iov_len = frame;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    time_t end = time(NULL) + seconds;
    long sent = 0;
    unsigned next = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < BATCH; i++) {
            struct udphdr *udp = (struct udphdr *)(frames[i] + udp_at);
            unsigned source_port = 10000 + next++ % flows;
            udp->source = htons(source_port);
            if (ipv6) {
                unsigned short check = (unsigned short)~fold(partial + source_port);
                udp->check = htons(check ? check : 0xffff);
            }
        }
        int n = sendmmsg(fd, messages, BATCH, 0);
        if (n > 0) sent += n;
    }
    printf("sent=%ld\n", sent);
    return 0;
}
