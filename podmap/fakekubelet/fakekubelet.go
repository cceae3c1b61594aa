// Package fakekubelet is a kubelet pod-resources API for tests: a real gRPC
// PodResourcesListerServer on a unix socket whose answers, latency and
// failures the test scripts.
package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Names of the pod SetGarbage adds.
const (
	GarbageNamespace = "fakekubelet"
	GarbagePod       = "garbage"
	GarbageContainer = "garbage"
	GarbageResource  = "nvidia.com/gpu"
)

// Server is a fake kubelet pod-resources endpoint. Its methods are safe for
// concurrent use. Get (a single pod) answers Unimplemented.
type Server struct {
	podresourcesv1.UnimplementedPodResourcesListerServer

	path     string
	grpc     *grpc.Server
	stopped  chan struct{}
	stopOnce sync.Once
	served   chan struct{} // closed when Serve returned

	listCalls        atomic.Int64
	allocatableCalls atomic.Int64

	mu                       sync.Mutex
	pods                     []*podresourcesv1.PodResources
	allocatable              []*podresourcesv1.ContainerDevices
	allocatableUnimplemented bool
	delay                    time.Duration
	err                      error
	garbage                  []string
}

// Start listens on socketPath (creating its directory; a stale socket file
// left there is removed) and serves in the background until Stop.
func Start(socketPath string) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return nil, fmt.Errorf("fakekubelet: %w", err)
	}
	if err := removeSocket(socketPath); err != nil {
		return nil, fmt.Errorf("fakekubelet: %w", err)
	}
	lis, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("fakekubelet: %w", err)
	}
	s := &Server{
		path:    socketPath,
		grpc:    grpc.NewServer(),
		stopped: make(chan struct{}),
		served:  make(chan struct{}),
	}
	podresourcesv1.RegisterPodResourcesListerServer(s.grpc, s)
	go func() {
		defer close(s.served)
		// Serve returns nil after Stop; any other error also ends
		// serving, which callers observe as Unavailable.
		_ = s.grpc.Serve(lis)
	}()
	return s, nil
}

// removeSocket removes path if it is a socket; it leaves any other file
// alone (Listen then reports it).
func removeSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return nil
	}
	return os.Remove(path)
}

// Path returns the socket path the server listens on.
func (s *Server) Path() string { return s.path }

// SetPods sets the pods List answers with. The server keeps its own copy.
func (s *Server) SetPods(pods []*podresourcesv1.PodResources) {
	c := cloneAll(pods)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = c
}

// SetAllocatable sets the devices GetAllocatableResources answers with.
func (s *Server) SetAllocatable(devs []*podresourcesv1.ContainerDevices) {
	c := cloneAll(devs)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allocatable = c
}

// SetAllocatableUnimplemented makes GetAllocatableResources answer
// Unimplemented (an old kubelet) while on is true.
func (s *Server) SetAllocatableUnimplemented(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allocatableUnimplemented = on
}

// SetDelay makes each call wait d, or until the caller gives up or the
// server stops, before answering.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetError makes each call fail with err until SetError(nil). An error
// without a gRPC status reaches the caller as codes.Unknown.
func (s *Server) SetError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// SetGarbage adds to List's answer a pod (GarbageNamespace/GarbagePod)
// whose container holds ids under GarbageResource, raw; nil removes it.
func (s *Server) SetGarbage(ids []string) {
	c := append([]string(nil), ids...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.garbage = c
}

// ListCalls returns how many List calls the server received, failed ones
// included.
func (s *Server) ListCalls() int { return int(s.listCalls.Load()) }

// AllocatableCalls returns how many GetAllocatableResources calls the
// server received, failed ones included.
func (s *Server) AllocatableCalls() int { return int(s.allocatableCalls.Load()) }

// Stop stops serving, ends calls in progress and removes the socket; Start
// may then be called again on the same path. Stop is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		close(s.stopped)
		s.grpc.Stop()
		<-s.served
		_ = removeSocket(s.path) // the listener normally removed it already
	})
}

// List implements podresourcesv1.PodResourcesListerServer.
func (s *Server) List(ctx context.Context, _ *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	s.listCalls.Add(1)
	s.mu.Lock()
	delay, failure := s.delay, s.err
	// The stored messages are never modified (the setters store copies),
	// so the answer may share them.
	pods := slices.Clip(s.pods)
	if len(s.garbage) > 0 {
		pods = append(pods, GPUPod(GarbageNamespace, GarbagePod, GarbageContainer, GarbageResource, s.garbage...))
	}
	s.mu.Unlock()
	if err := s.wait(ctx, delay); err != nil {
		return nil, err
	}
	if failure != nil {
		return nil, failure
	}
	return &podresourcesv1.ListPodResourcesResponse{PodResources: pods}, nil
}

// GetAllocatableResources implements podresourcesv1.PodResourcesListerServer.
func (s *Server) GetAllocatableResources(ctx context.Context, _ *podresourcesv1.AllocatableResourcesRequest) (*podresourcesv1.AllocatableResourcesResponse, error) {
	s.allocatableCalls.Add(1)
	s.mu.Lock()
	delay, failure, unimplemented := s.delay, s.err, s.allocatableUnimplemented
	devs := s.allocatable
	s.mu.Unlock()
	if err := s.wait(ctx, delay); err != nil {
		return nil, err
	}
	if unimplemented {
		return nil, status.Error(codes.Unimplemented, "method GetAllocatableResources not implemented")
	}
	if failure != nil {
		return nil, failure
	}
	return &podresourcesv1.AllocatableResourcesResponse{Devices: devs}, nil
}

// wait sleeps d unless ctx ends or the server stops first.
func (s *Server) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.stopped:
		return status.Error(codes.Unavailable, "fakekubelet stopped")
	}
}

// GPUPod returns a pod whose one container holds deviceIDs under resource.
func GPUPod(namespace, pod, container, resource string, deviceIDs ...string) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{
		Namespace: namespace,
		Name:      pod,
		Containers: []*podresourcesv1.ContainerResources{{
			Name: container,
			Devices: []*podresourcesv1.ContainerDevices{{
				ResourceName: resource,
				DeviceIds:    append([]string(nil), deviceIDs...),
			}},
		}},
	}
}

func cloneAll[M proto.Message](in []M) []M {
	if in == nil {
		return nil
	}
	out := make([]M, len(in))
	for i, m := range in {
		out[i] = proto.Clone(m).(M)
	}
	return out
}
