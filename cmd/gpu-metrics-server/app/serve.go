package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/klog/v2"
)

// serveHTTP serves h on addr (TLS and basic auth through an
// exporter-toolkit web config file when given) until ctx ends, then shuts
// down gracefully. listening is called with the bound address. Connections
// are bounded (maxConnections) and time out (connbound.go).
func serveHTTP(ctx context.Context, addr, webConfig string, h http.Handler, listening func(net.Addr)) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
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
