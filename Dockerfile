# ulvs director image: build with cargo, run on slim Debian.
#   docker build -t ulvs .
#   docker run --network host -v /etc/lbd:/etc/lbd ulvs            # your config at /etc/lbd/lbd.yaml
#   docker run --network host ulvs demo
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lbd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lbd /usr/local/bin/lbd
COPY config/lbd.yaml /etc/lbd/lbd.yaml
VOLUME /etc/lbd
ENTRYPOINT ["/usr/local/bin/lbd"]
CMD ["--config", "/etc/lbd/lbd.yaml"]
