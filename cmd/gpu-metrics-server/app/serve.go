package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// listenHTTP listens on --web.listen-address, before anything else starts:
// a host that does not resolve, or is not this machine's, or a port in use,
// is a bad value of the flag, reported as such.
func listenHTTP(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &options.FlagError{Flag: "web.listen-address", Err: err}
	}
	return l, nil
}

// serveHTTP serves h on l (TLS and basic auth through an exporter-toolkit
// web config file when given) until ctx ends, then shuts down gracefully;
// it closes l. listening is called with the bound address. Connections are
// bounded (maxConnections) and time out (connbound.go).
func serveHTTP(ctx context.Context, l net.Listener, webConfig string, h http.Handler, listening func(net.Addr)) error {
	if listening != nil {
		listening(l.Addr())
	}
	bound := newConnBound(l, maxConnections())
	srv := newHTTPServer(h, bound)
	logger := slog.New(logr.ToSlogHandler(klog.Background()))
	flags := &web.FlagConfig{WebConfigFile: &webConfig}
	errc := make(chan error, 1)
	go func() { errc <- web.Serve(bound, srv, flags, logger) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down HTTP server", "address", l.Addr().String())
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHTTPServer is the agent's HTTP server of h, its connections tracked by
// bound.
func newHTTPServer(h http.Handler, bound *connBound) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		ConnState:         bound.track,
	}
}
