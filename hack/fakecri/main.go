// Command fakecri serves a fake container runtime (CRI) on a unix socket for
// the end-to-end tests' kubelets: k8s.io/cri-client/pkg/fake, the fake
// kubemark uses, with what a real kubelet needs of it to admit and run pods.
// Sandboxes and containers are records only; no process runs.
//
// On top of the fake, it
//   - reports a non-zero image size and image-filesystem usage (on the
//     directory --image-fs), without which the kubelet fails containers with
//     CreateContainerConfigError and its eviction manager complains;
//   - gives each container the log path the kubelet asked for (the fake
//     reports none, and the kubelet then cleans files matching "*" in its
//     working directory) and creates that file;
//   - says it uses the cgroupfs cgroup driver;
//   - gives a sandbox in the node's network namespace (a hostNetwork pod)
//     no IP of its own, as real runtimes do, so that the kubelet gives the
//     pod the node's IPs (the fake gives every sandbox 192.168.192.168).
//
// It runs until SIGINT or SIGTERM, then stops serving and removes its socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
)

// Sizes the fake image service reports: every image, and the image
// filesystem's usage.
const (
	defaultImageSize = 64 << 20
	fsUsedBytes      = 1 << 30
	fsUsedInodes     = 1000
)

func main() {
	klog.InitFlags(nil)
	socket := flag.String("socket", "", "unix socket to serve the CRI runtime and image services on (required)")
	imageFS := flag.String("image-fs", "", "directory reported as the image filesystem's mount point (required; created if missing)")
	imageSize := flag.Uint64("image-size", defaultImageSize, "size in bytes reported for every image (must be positive)")
	flag.Parse()
	if *socket == "" || *imageFS == "" || *imageSize == 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "fakecri: --socket and --image-fs are required, --image-size must be positive, and no arguments are taken")
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*socket, *imageFS, *imageSize); err != nil {
		klog.ErrorS(err, "fakecri failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(socket, imageFS string, imageSize uint64) error {
	if err := os.MkdirAll(imageFS, 0o755); err != nil {
		return err
	}
	rt := newRuntime(imageFS, imageSize)
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return err
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, rt)
	runtimeapi.RegisterImageServiceServer(srv, rt)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	klog.InfoS("Serving a fake container runtime", "socket", socket, "imageFS", imageFS, "imageSize", imageSize)
	select {
	case sig := <-sigs:
		klog.InfoS("Stopping", "signal", sig)
		srv.Stop()
		<-served
		return nil
	case err := <-served:
		return err
	}
}

// runtime is the fake remote runtime with the kubelet's needs filled in.
// Its gRPC methods are the fake's, but for CreateContainer.
type runtime struct {
	*fake.RemoteRuntime
}

func newRuntime(imageFS string, imageSize uint64) *runtime {
	f := fake.NewFakeRemoteRuntime()
	f.RuntimeService.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: true},
	}}
	f.RuntimeService.FakeLinuxConfiguration = &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}
	f.ImageService.SetFakeImageSize(imageSize)
	usage := []*runtimeapi.FilesystemUsage{{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: imageFS},
		UsedBytes:  &runtimeapi.UInt64Value{Value: fsUsedBytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: fsUsedInodes},
	}}
	f.ImageService.SetFakeFilesystemUsage(usage)
	f.ImageService.SetFakeContainerFilesystemUsage(usage)
	return &runtime{RemoteRuntime: f}
}

// RunPodSandbox runs the sandbox in the fake; one in the node's network
// namespace has no IP (the pod's are the node's).
func (r *runtime) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	resp, err := r.RemoteRuntime.RunPodSandbox(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.GetConfig().GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		return resp, nil
	}
	svc := r.RuntimeService
	svc.Lock()
	defer svc.Unlock()
	if s, ok := svc.Sandboxes[resp.PodSandboxId]; ok {
		s.Network = &runtimeapi.PodSandboxNetworkStatus{}
	}
	return resp, nil
}

// CreateContainer creates the container in the fake and gives it the log
// path the kubelet asked for: the sandbox's log directory joined with the
// container's log path, created as an empty file.
func (r *runtime) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	resp, err := r.RemoteRuntime.CreateContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	dir, rel := req.GetSandboxConfig().GetLogDirectory(), req.GetConfig().GetLogPath()
	if dir == "" || rel == "" {
		return resp, nil
	}
	path := filepath.Join(dir, rel)
	if err := createLogFile(path); err != nil {
		return nil, fmt.Errorf("creating the log file of container %s: %w", resp.ContainerId, err)
	}
	svc := r.RuntimeService
	svc.Lock()
	defer svc.Unlock()
	if c, ok := svc.Containers[resp.ContainerId]; ok {
		c.LogPath = path
	}
	return resp, nil
}

// createLogFile creates path (and its directory) if it does not exist.
func createLogFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	return f.Close()
}
