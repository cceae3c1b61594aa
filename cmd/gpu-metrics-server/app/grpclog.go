package app

import (
	"fmt"

	"google.golang.org/grpc/grpclog"
	"k8s.io/klog/v2"
)

// grpcWarningLevel is the klog verbosity of gRPC's warnings. The kubelet
// pod-resources client (podmap) reconnects with backoff during a kubelet
// outage, and gRPC warns at every attempt; the refresher already logs an
// outage once when it starts and once when it ends. The API server library
// linked in this binary (k8s.io/apiserver's etcd3, unused here) installs a
// gRPC logger at init that prints those warnings at the default verbosity:
// 25 lines for two short kubelet outages.
const grpcWarningLevel = 4

// quietGRPC replaces gRPC's logger: warnings at -v=4, informational
// messages at -v=5, errors always. Call it before any gRPC use.
func quietGRPC() { grpclog.SetLoggerV2(grpcLogger{}) }

type grpcLogger struct{}

// depth skips grpcLogger's method and grpclog's own frames.
const grpcLogDepth = 4

func (grpcLogger) Info(args ...any)                 { grpcV(5, fmt.Sprint(args...)) }
func (grpcLogger) Infoln(args ...any)               { grpcV(5, fmt.Sprintln(args...)) }
func (grpcLogger) Infof(format string, args ...any) { grpcV(5, fmt.Sprintf(format, args...)) }
func (grpcLogger) Warning(args ...any)              { grpcV(grpcWarningLevel, fmt.Sprint(args...)) }
func (grpcLogger) Warningln(args ...any)            { grpcV(grpcWarningLevel, fmt.Sprintln(args...)) }
func (grpcLogger) Warningf(format string, args ...any) {
	grpcV(grpcWarningLevel, fmt.Sprintf(format, args...))
}
func (grpcLogger) Error(args ...any)   { klog.ErrorSDepth(grpcLogDepth, nil, fmt.Sprint(args...)) }
func (grpcLogger) Errorln(args ...any) { klog.ErrorSDepth(grpcLogDepth, nil, fmt.Sprintln(args...)) }
func (grpcLogger) Errorf(format string, args ...any) {
	klog.ErrorSDepth(grpcLogDepth, nil, fmt.Sprintf(format, args...))
}
func (grpcLogger) Fatal(args ...any)   { klog.FatalDepth(grpcLogDepth, args...) }
func (grpcLogger) Fatalln(args ...any) { klog.FatalDepth(grpcLogDepth, fmt.Sprintln(args...)) }
func (grpcLogger) Fatalf(format string, args ...any) {
	klog.FatalDepth(grpcLogDepth, fmt.Sprintf(format, args...))
}
func (grpcLogger) V(l int) bool { return klog.V(klog.Level(l)).Enabled() }

func grpcV(level klog.Level, msg string) {
	if v := klog.V(level); v.Enabled() {
		v.InfoSDepth(grpcLogDepth, msg)
	}
}
