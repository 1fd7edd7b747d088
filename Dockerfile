# jetedge in a container: a build stage with the Rust toolchain, and a small
# runtime stage with the binary only.
#
#   docker build -t jetedge .
#   docker run -p 8080:8080 -v jetedge-data:/var/lib/jetedge \
#     -v $PWD/site.toml:/etc/jetedge/jetedge.toml:ro jetedge
#
# The store lives in the /var/lib/jetedge volume. The image carries the
# default config (conf/jetedge.toml), which listens on loopback only and so
# takes nothing from outside the container: mount a site's config whose
# [ingress] listen is "0.0.0.0:8080" and whose sources verify signatures
# (jetedge check refuses an unauthenticated source on a public listener).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/jetedge

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/jetedge jetedge \
    && install -d -o jetedge -m 0700 /var/lib/jetedge
COPY --from=build /src/target/release/jetedge /usr/local/bin/jetedge
COPY conf/jetedge.toml /etc/jetedge/jetedge.toml
USER jetedge
ENV JETEDGE_NODE__DATA_DIR=/var/lib/jetedge
VOLUME /var/lib/jetedge
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/jetedge"]
CMD ["run", "-c", "/etc/jetedge/jetedge.toml"]
