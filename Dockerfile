# syntax=docker/dockerfile:1
# beacon: build in the Go image, run from a small, non-root image.
#
#   docker build -t beacon .
#   docker run --rm beacon hunt --help

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that editing code does not invalidate their layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/beacon ./cmd/beacon
# The state directory must belong to the runtime user: a volume mounted on
# it takes the image directory's owner.
RUN mkdir -p /out/var/lib/beacon/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/beacon /usr/local/bin/beacon
COPY --from=build --chown=65532:65532 /out/var/lib/beacon /var/lib/beacon
# The detector's Pebble state; mount a volume here to keep it across restarts.
VOLUME /var/lib/beacon
WORKDIR /var/lib/beacon
# /metrics, /livez, /readyz, /beacons (run listens on 127.0.0.1 unless told
# otherwise). No curl in the image: `beacon health` is the healthcheck.
EXPOSE 9464
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/beacon"]
CMD ["--help"]
