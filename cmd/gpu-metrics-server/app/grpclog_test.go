package app

import (
	"testing"

	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc/grpclog"
	"k8s.io/klog/v2"
)

// TestQuietGRPC: with the default verbosity, gRPC's warnings (a reconnect
// attempt each) and informational messages are not logged; its errors are.
// klog writes through a synchronous logr sink here: nothing is flushed.
func TestQuietGRPC(t *testing.T) {
	var lines []string
	klog.SetLogger(funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0}))
	defer klog.ClearLogger()
	quietGRPC()
	for _, tt := range []struct {
		name string
		log  func()
		want int
	}{
		{"warning", func() { grpclog.Warning("reconnecting") }, 0},
		{"warningf", func() { grpclog.Warningf("reconnecting %d", 1) }, 0},
		{"info", func() { grpclog.Info("state change") }, 0},
		{"error", func() { grpclog.Error("broken") }, 1},
		{"errorf", func() { grpclog.Errorf("broken %d", 2) }, 1},
	} {
		lines = nil
		tt.log()
		if len(lines) != tt.want {
			t.Errorf("%s: %d lines logged %q, want %d", tt.name, len(lines), lines, tt.want)
		}
	}
	if grpclog.V(grpcWarningLevel) {
		t.Error("gRPC's verbose logging on at the default verbosity")
	}
}
