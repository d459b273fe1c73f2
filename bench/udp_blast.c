/*
 * udp_blast: a UDP load generator for bench/lvs that costs its CPU as little as possible, so
 * that the director, not the generator, is what is measured. It writes whole Ethernet frames
 * (IPv4/UDP, 64-byte payload) on an AF_PACKET socket with sendmmsg, past the qdisc, to the
 * director's MAC; the client's own UDP stack is skipped. Source ports cycle over FLOWS values,
 * so FLOWS=1 is one flow (as iperf3 -u) and FLOWS=64 interleaves 64 flows packet by packet.
 *
 * Usage: udp_blast IFACE DST_MAC SRC_IP DST_IP DST_PORT SECONDS FLOWS
 * Prints: sent=<frames>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { BATCH = 64, PAYLOAD = 64, FRAME = 14 + 20 + 8 + PAYLOAD };

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
    if (!inet_pton(AF_INET, argv[3], &source) || !inet_pton(AF_INET, argv[4], &destination)) {
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
    static unsigned char frames[BATCH][FRAME];
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    for (int i = 0; i < BATCH; i++) {
        unsigned char *f = frames[i];
        memcpy(f, mac, 6);
        memcpy(f + 6, (unsigned char[]){2, 0, 0, 0, 0, 1}, 6);
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
        struct udphdr *udp = (struct udphdr *)(f + 34);
        udp->dest = htons(port);
        udp->len = htons(8 + PAYLOAD);
        udp->check = 0; /* no UDP checksum: IPv4 allows it */
        memset(f + 42, 7, PAYLOAD);
        vectors[i].iov_base = f;
        vectors[i].iov_len = FRAME;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    time_t end = time(NULL) + seconds;
    long sent = 0;
    unsigned next = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < BATCH; i++) {
            struct udphdr *udp = (struct udphdr *)(frames[i] + 34);
            udp->source = htons(10000 + next++ % flows);
        }
        int n = sendmmsg(fd, messages, BATCH, 0);
        if (n > 0) sent += n;
    }
    printf("sent=%ld\n", sent);
    return 0;
}
