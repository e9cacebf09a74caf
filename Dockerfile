# iom binaries (iom, iom-worker, iom-bridge) on Debian 12, FFmpeg 5.1 from Debian.
#   docker build -t iom:dev --build-arg IOM_GIT_REVISION=$(git rev-parse --short HEAD) .
# Used by docker-compose.yml and deploy/k8s. (Not built in this repository's CI:
# the build machine has no Docker engine.)
FROM rust:1.88-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev pkg-config \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
      libavfilter-dev libavdevice-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG IOM_GIT_REVISION=unknown
ENV IOM_GIT_REVISION=${IOM_GIT_REVISION}
RUN cargo build --release --locked --bins \
 && install -m 0755 target/release/iom target/release/iom-worker target/release/iom-bridge /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 \
      libavfilter8 libavdevice59 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 990 --home-dir /nonexistent --shell /usr/sbin/nologin iom
COPY --from=build /usr/local/bin/iom /usr/local/bin/iom-worker /usr/local/bin/iom-bridge /usr/local/bin/
COPY config/settings.yml /usr/share/iom/settings.defaults.yml
USER iom
# /metrics of a worker (9471) or the bridge (9465), when metrics.listen says so.
EXPOSE 9465 9471
ENTRYPOINT ["/usr/local/bin/iom-worker"]
