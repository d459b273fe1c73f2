# ulvs director image: lbd and lbadm, with iproute2 for the packet modes.
#   docker build -t ulvs .
#   docker run --network host -v /etc/lbd:/etc/lbd ulvs            # your config at /etc/lbd/lbd.yaml
#   docker run --network host ulvs demo
#   docker exec <container> lbadm list -n                           # lbadm talks to lbd's admin API
# nat, dr and tun need more: --cap-add NET_ADMIN --device /dev/net/tun (and CAP_BPF, or
# --privileged, for eBPF packet steering with several workers). See README, Docker.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lbd --bin lbadm

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lbd /src/target/release/lbadm /usr/local/bin/
COPY config/lbd.yaml /etc/lbd/lbd.yaml
VOLUME /etc/lbd
ENTRYPOINT ["/usr/local/bin/lbd"]
CMD ["--config", "/etc/lbd/lbd.yaml"]
