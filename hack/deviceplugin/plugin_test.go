package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// fakeKubelet is the kubelet's registration service on dir/kubelet.sock:
// it passes each RegisterRequest on.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	server *grpc.Server
	reqs   chan *pluginapi.RegisterRequest
}

// startFakeKubelet does what a starting kubelet does to its device-plugins
// directory: it deletes every file in it, then listens on kubelet.sock.
func startFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("unix", filepath.Join(dir, kubeletSocket))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{server: grpc.NewServer(), reqs: make(chan *pluginapi.RegisterRequest, 16)}
	pluginapi.RegisterRegistrationServer(k.server, k)
	go func() { _ = k.server.Serve(lis) }()
	t.Cleanup(k.server.Stop)
	return k
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.reqs <- r
	return &pluginapi.Empty{}, nil
}

// registrations waits for n registrations and returns them by resource.
func (k *fakeKubelet) registrations(t *testing.T, n int) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	out := map[string]*pluginapi.RegisterRequest{}
	for range n {
		r := testutil.Receive(t, "a registration", k.reqs)
		out[r.ResourceName] = r
	}
	return out
}

// pluginDevices connects to a registered plugin as the kubelet does and
// returns the devices of its first ListAndWatch answer, and the
// environment Allocate gives a container asking for ids.
func pluginDevices(t *testing.T, dir string, r *pluginapi.RegisterRequest, ids []string) ([]string, map[string]string) {
	t.Helper()
	if r.Version != pluginapi.Version {
		t.Errorf("%s registered with version %q", r.ResourceName, r.Version)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := pluginapi.NewDevicePluginClient(conn)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range resp.Devices {
		if d.Health != pluginapi.Healthy {
			t.Errorf("device %s is %s", d.ID, d.Health)
		}
		got = append(got, d.ID)
	}
	alloc, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(alloc.ContainerResponses) != 1 {
		t.Fatalf("Allocate answered %d containers, want 1", len(alloc.ContainerResponses))
	}
	return got, alloc.ContainerResponses[0].Envs
}

// TestManagerRegistersAgainAfterKubeletRestart: every resource registers
// with the kubelet and serves its devices; a restarted kubelet (which
// deletes the plugins' sockets) gets every registration again, from
// plugins serving on new sockets.
func TestManagerRegistersAgainAfterKubeletRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "dp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	resources, err := devices.Layout{Node: "n", GPUs: 2, MIG: []int{1}, Replicas: 2}.Resources()
	if err != nil {
		t.Fatal(err)
	}
	check := func(regs map[string]*pluginapi.RegisterRequest) {
		t.Helper()
		if len(regs) != len(resources) {
			t.Fatalf("registered %d resources, want %d", len(regs), len(resources))
		}
		for _, res := range resources {
			r, ok := regs[res.Name]
			if !ok {
				t.Fatalf("%s did not register (got %v)", res.Name, regs)
			}
			got, env := pluginDevices(t, dir, r, res.IDs()[:1])
			if !slices.Equal(got, res.IDs()) {
				t.Errorf("%s lists %v, want %v", res.Name, got, res.IDs())
			}
			if want := devices.UUIDOf(res.IDs()[0]); env["NVIDIA_VISIBLE_DEVICES"] != want {
				t.Errorf("%s: Allocate(%s) gives NVIDIA_VISIBLE_DEVICES=%q, want %q", res.Name, res.IDs()[0], env["NVIDIA_VISIBLE_DEVICES"], want)
			}
		}
	}

	first := startFakeKubelet(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newManager(dir, resources).run(ctx) }()
	check(first.registrations(t, len(resources)))

	first.server.Stop()
	second := startFakeKubelet(t, dir)
	check(second.registrations(t, len(resources)))

	cancel()
	if err := testutil.Receive(t, "the manager to stop", done); err != nil {
		t.Fatal(err)
	}
	for _, res := range resources {
		if _, err := os.Stat(filepath.Join(dir, socketName(res.Name))); !os.IsNotExist(err) {
			t.Errorf("%s's socket left behind (%v)", res.Name, err)
		}
	}
}

// TestAllocateRefusesUnknownDevices: the plugin hands out only the IDs it
// advertised.
func TestAllocateRefusesUnknownDevices(t *testing.T) {
	p := &plugin{res: devices.Resource{Name: "nvidia.com/gpu"}, ids: []string{"GPU-a", "GPU-b"}}
	if _, err := p.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"GPU-c"}}}}); err == nil {
		t.Error("Allocate of an unknown device succeeded")
	}
	resp, err := p.Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"GPU-a", "GPU-b"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.ContainerResponses[0].Envs["NVIDIA_VISIBLE_DEVICES"]; got != "GPU-a,GPU-b" {
		t.Errorf("NVIDIA_VISIBLE_DEVICES=%q, want GPU-a,GPU-b", got)
	}
}
