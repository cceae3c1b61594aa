package fakekubelet

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

const uuid = "GPU-5fd4ea4f-4d22-6a01-5e3c-9d3b8c7e5e7f"

// socketPath returns a short socket path in a fresh directory.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "kubelet.sock")
}

func start(t *testing.T, path string) *Server {
	t.Helper()
	s, err := Start(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func dial(t *testing.T, path string) podresourcesv1.PodResourcesListerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return podresourcesv1.NewPodResourcesListerClient(conn)
}

func list(client podresourcesv1.PodResourcesListerClient, timeout time.Duration) (*podresourcesv1.ListPodResourcesResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
}

func allocatable(client podresourcesv1.PodResourcesListerClient) (*podresourcesv1.AllocatableResourcesResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	return client.GetAllocatableResources(ctx, &podresourcesv1.AllocatableResourcesRequest{})
}

func TestAnswers(t *testing.T) {
	path := socketPath(t)
	s := start(t, path)
	client := dial(t, path)

	pods := []*podresourcesv1.PodResources{
		GPUPod("ns", "a", "c", "nvidia.com/gpu", uuid+"::0"),
		GPUPod("ns", "b", "c", "nvidia.com/gpu", uuid+"::1"),
	}
	devs := []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid + "::0", uuid + "::1"}}}
	s.SetPods(pods)
	s.SetAllocatable(devs)
	s.SetGarbage([]string{"bogus", "GPU-"})
	// The server keeps its own copies.
	pods[0].Name = "changed"
	devs[0].DeviceIds[0] = "changed"

	wantPods := []*podresourcesv1.PodResources{
		GPUPod("ns", "a", "c", "nvidia.com/gpu", uuid+"::0"),
		GPUPod("ns", "b", "c", "nvidia.com/gpu", uuid+"::1"),
		GPUPod(GarbageNamespace, GarbagePod, GarbageContainer, GarbageResource, "bogus", "GPU-"),
	}
	resp, err := list(client, testutil.DefaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if want := (&podresourcesv1.ListPodResourcesResponse{PodResources: wantPods}); !proto.Equal(resp, want) {
		t.Errorf("List = %v\nwant %v", resp, want)
	}

	alloc, err := allocatable(client)
	if err != nil {
		t.Fatal(err)
	}
	wantDevs := &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{
		{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid + "::0", uuid + "::1"}},
	}}
	if !proto.Equal(alloc, wantDevs) {
		t.Errorf("GetAllocatableResources = %v\nwant %v", alloc, wantDevs)
	}

	s.SetGarbage(nil)
	s.SetPods(nil)
	if resp, err := list(client, testutil.DefaultTimeout); err != nil || len(resp.GetPodResources()) != 0 {
		t.Errorf("List after clearing = %v, %v; want no pods", resp, err)
	}
	if got := s.ListCalls(); got != 2 {
		t.Errorf("ListCalls = %d, want 2", got)
	}
	if got := s.AllocatableCalls(); got != 1 {
		t.Errorf("AllocatableCalls = %d, want 1", got)
	}
	if s.Path() != path {
		t.Errorf("Path = %q, want %q", s.Path(), path)
	}
}

func TestScriptedFailures(t *testing.T) {
	tests := []struct {
		name   string
		script func(*Server)
		list   codes.Code
		alloc  codes.Code
	}{
		{"healthy", func(*Server) {}, codes.OK, codes.OK},
		{"status error", func(s *Server) { s.SetError(status.Error(codes.PermissionDenied, "no")) }, codes.PermissionDenied, codes.PermissionDenied},
		{"plain error", func(s *Server) { s.SetError(errors.New("boom")) }, codes.Unknown, codes.Unknown},
		{"old kubelet", func(s *Server) { s.SetAllocatableUnimplemented(true) }, codes.OK, codes.Unimplemented},
		{"error cleared", func(s *Server) {
			s.SetError(errors.New("boom"))
			s.SetError(nil)
		}, codes.OK, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			s := start(t, path)
			client := dial(t, path)
			tt.script(s)
			if _, err := list(client, testutil.DefaultTimeout); status.Code(err) != tt.list {
				t.Errorf("List: %v, want code %v", err, tt.list)
			}
			if _, err := allocatable(client); status.Code(err) != tt.alloc {
				t.Errorf("GetAllocatableResources: %v, want code %v", err, tt.alloc)
			}
		})
	}
}

func TestGetIsUnimplemented(t *testing.T) {
	path := socketPath(t)
	start(t, path)
	client := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	_, err := client.Get(ctx, &podresourcesv1.GetPodResourcesRequest{PodName: "a", PodNamespace: "ns"})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Get: %v, want Unimplemented", err)
	}
}

func TestDelayEndsWithCallerDeadline(t *testing.T) {
	path := socketPath(t)
	s := start(t, path)
	client := dial(t, path)
	s.SetDelay(time.Hour)
	if _, err := list(client, 50*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("List against a hung kubelet: %v, want DeadlineExceeded", err)
	}
	s.SetDelay(0)
	if _, err := list(client, testutil.DefaultTimeout); err != nil {
		t.Errorf("List after the delay was lifted: %v", err)
	}
}

func TestStopEndsDelayedCalls(t *testing.T) {
	path := socketPath(t)
	s := start(t, path)
	client := dial(t, path)
	s.SetDelay(time.Hour)
	errc := make(chan error, 1)
	go func() {
		_, err := list(client, time.Hour)
		errc <- err
	}()
	testutil.Eventually(t, "the call to reach the server", func() bool { return s.ListCalls() > 0 })
	s.Stop()
	if err := testutil.Receive(t, "the call to end", errc); status.Code(err) != codes.Unavailable {
		t.Errorf("List in progress at Stop: %v, want Unavailable", err)
	}
}

func TestStopAndRestart(t *testing.T) {
	path := socketPath(t)
	s := start(t, path)
	s.Stop()
	s.Stop() // idempotent
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after Stop: %v, want it removed", err)
	}
	client := dial(t, path)
	if _, err := list(client, testutil.DefaultTimeout); status.Code(err) != codes.Unavailable {
		t.Errorf("List with the server stopped: %v, want Unavailable", err)
	}

	s = start(t, path)
	s.SetPods([]*podresourcesv1.PodResources{GPUPod("ns", "p", "c", "nvidia.com/gpu", uuid)})
	if resp, err := list(dial(t, path), testutil.DefaultTimeout); err != nil || len(resp.GetPodResources()) != 1 {
		t.Errorf("List after restart = %v, %v; want one pod", resp, err)
	}
}

func TestStartReplacesStaleSocket(t *testing.T) {
	path := socketPath(t)
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	start(t, path)
	if _, err := list(dial(t, path), testutil.DefaultTimeout); err != nil {
		t.Errorf("List after replacing a stale socket: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
	}{
		{"a regular file is in the way", regular},
		{"parent is a file", filepath.Join(regular, "kubelet.sock")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := Start(tt.path); err == nil {
				s.Stop()
				t.Fatalf("Start(%q) succeeded, want an error", tt.path)
			}
		})
	}
	if _, err := os.Stat(regular); err != nil {
		t.Errorf("the regular file was disturbed: %v", err)
	}
}

func TestGPUPod(t *testing.T) {
	ids := []string{uuid + "::0", uuid + "::1"}
	got := GPUPod("ns", "p", "c", "nvidia.com/gpu", ids...)
	ids[0] = "changed"
	want := &podresourcesv1.PodResources{
		Namespace: "ns",
		Name:      "p",
		Containers: []*podresourcesv1.ContainerResources{{
			Name:    "c",
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{uuid + "::0", uuid + "::1"}}},
		}},
	}
	if !proto.Equal(got, want) {
		t.Errorf("GPUPod = %v, want %v", got, want)
	}
}
