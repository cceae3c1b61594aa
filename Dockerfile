# syntax=docker/dockerfile:1
# Multi-stage build: cgo (go-nvml loads libnvidia-ml.so.1 at run time, which
# the NVIDIA container toolkit mounts into the container), then a small glibc
# runtime image running as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION=${VERSION}
# The kubectl plugin (kubectl gpu ...) is the same binary under the name
# kubectl-gpu; a directory is copied below so that the symlink stays one.
RUN mkdir -p /out/usr/bin && cp bin/gpu-metrics-server /out/usr/bin/ && \
    ln -s gpu-metrics-server /out/usr/bin/kubectl-gpu

# distroless/base carries glibc (needed by cgo and by libnvidia-ml) and
# nothing else: no shell, no package manager.
FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/usr/bin/ /usr/bin/
USER 65532:65532
EXPOSE 9400 6443
ENTRYPOINT ["gpu-metrics-server"]
