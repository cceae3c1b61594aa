package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

const (
	// kubeletSocket is the kubelet's registration socket in the
	// device-plugins directory.
	kubeletSocket = "kubelet.sock"
	// registerTimeout bounds one Register call.
	registerTimeout = 10 * time.Second
	// resync is how often the plugins are checked without a file-system
	// event: it retries a registration the kubelet refused or could not
	// take yet.
	resync = time.Second
)

// plugin serves one resource's DevicePlugin API on its own socket.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	res    devices.Resource
	ids    []string
	socket string // absolute path
	server *grpc.Server
	stop   chan struct{} // closed when the server is stopped
	served chan struct{} // closed when Serve returned
	// id of the socket file this server listens on, to notice the
	// kubelet deleting it.
	id fileID
}

// startPlugin listens on dir/socketName(res.Name), replacing any file left
// there, and serves.
func startPlugin(dir string, res devices.Resource) (*plugin, error) {
	p := &plugin{
		res:    res,
		ids:    res.IDs(),
		socket: filepath.Join(dir, socketName(res.Name)),
		server: grpc.NewServer(),
		stop:   make(chan struct{}),
		served: make(chan struct{}),
	}
	if err := os.Remove(p.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	lis, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, err
	}
	if p.id, err = fileIDOf(p.socket); err != nil {
		_ = lis.Close()
		return nil, err
	}
	pluginapi.RegisterDevicePluginServer(p.server, p)
	go func() {
		defer close(p.served)
		_ = p.server.Serve(lis) // ends with Stop
	}()
	return p, nil
}

// close stops serving; the socket file is removed if it is still this
// plugin's.
func (p *plugin) close() {
	close(p.stop)
	p.server.Stop()
	<-p.served
	if p.socketIntact() {
		_ = os.Remove(p.socket)
	}
}

// socketIntact reports whether the socket file is still the one this
// plugin listens on (a starting kubelet deletes every other file in its
// device-plugins directory).
func (p *plugin) socketIntact() bool {
	id, err := fileIDOf(p.socket)
	return err == nil && id == p.id
}

// GetDevicePluginOptions implements pluginapi.DevicePluginServer: no
// PreStartContainer, no preferred allocation.
func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch implements pluginapi.DevicePluginServer: the devices, all
// healthy, once; they never change.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	devs := make([]*pluginapi.Device, 0, len(p.ids))
	for _, id := range p.ids {
		devs = append(devs, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
	case <-p.stop:
	}
	return nil
}

// Allocate implements pluginapi.DevicePluginServer: each container gets
// NVIDIA_VISIBLE_DEVICES naming the devices behind the IDs it was given,
// as NVIDIA's plugin does (the fake container runtime ignores it).
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.GetContainerRequests() {
		var devs []string
		for _, id := range c.GetDevicesIds() {
			if !slices.Contains(p.ids, id) {
				return nil, status.Errorf(codes.InvalidArgument, "%s: unknown device %q", p.res.Name, id)
			}
			if d := devices.UUIDOf(id); !slices.Contains(devs, d) {
				devs = append(devs, d)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(devs, ",")},
		})
	}
	return resp, nil
}

// PreStartContainer implements pluginapi.DevicePluginServer; the kubelet
// does not call it (not asked for in the options).
func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// manager keeps one plugin per resource served and registered with the
// kubelet of dir, re-serving and re-registering whenever the kubelet
// restarts (it deletes the plugins' sockets and makes a new kubelet.sock).
type manager struct {
	dir       string
	resources []devices.Resource

	mu      sync.Mutex
	plugins map[string]*plugin // by resource name
	// registered maps a resource to the kubelet.sock it was registered
	// through.
	registered map[string]fileID
	// onRegistered, when set (tests), is called after each successful
	// registration.
	onRegistered func(resource string)
}

func newManager(dir string, resources []devices.Resource) *manager {
	return &manager{dir: dir, resources: resources, plugins: map[string]*plugin{}, registered: map[string]fileID{}}
}

// run serves and registers until ctx ends, then stops every plugin.
func (m *manager) run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	if err := w.Add(m.dir); err != nil {
		return fmt.Errorf("watching %s: %w", m.dir, err)
	}
	defer m.closeAll()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
		case err := <-w.Errors:
			klog.ErrorS(err, "Watching the device-plugins directory", "dir", m.dir)
		case <-tick.C:
		}
	}
}

// reconcile re-serves every plugin whose socket is gone and registers
// every plugin not yet registered with the kubelet now listening.
func (m *manager) reconcile(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, res := range m.resources {
		p := m.plugins[res.Name]
		if p != nil && p.socketIntact() {
			continue
		}
		if p != nil {
			klog.InfoS("Plugin socket removed (kubelet restarted?); serving again", "resource", res.Name, "socket", p.socket)
			p.close()
			delete(m.plugins, res.Name)
		}
		delete(m.registered, res.Name)
		np, err := startPlugin(m.dir, res)
		if err != nil {
			klog.ErrorS(err, "Serving device plugin", "resource", res.Name)
			continue
		}
		m.plugins[res.Name] = np
	}
	kubelet := filepath.Join(m.dir, kubeletSocket)
	id, err := fileIDOf(kubelet)
	if err != nil {
		return // no kubelet yet; its socket's creation wakes us
	}
	for _, res := range m.resources {
		p, ok := m.plugins[res.Name]
		if !ok || m.registered[res.Name] == id {
			continue
		}
		if err := register(ctx, kubelet, p); err != nil {
			klog.ErrorS(err, "Registering with the kubelet (retried)", "resource", res.Name)
			continue
		}
		m.registered[res.Name] = id
		klog.InfoS("Registered with the kubelet", "resource", res.Name, "devices", len(res.Devices), "socket", p.socket)
		if m.onRegistered != nil {
			m.onRegistered(res.Name)
		}
	}
}

func (m *manager) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, p := range m.plugins {
		p.close()
		delete(m.plugins, name)
	}
}

// register announces p to the kubelet listening on kubeletSock.
func register(ctx context.Context, kubeletSock string, p *plugin) error {
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(p.socket),
		ResourceName: p.res.Name,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}

// fileID tells one file at a path from another made there later: a new
// file may reuse a deleted one's inode number, not also its change time.
type fileID struct {
	ino   uint64
	ctime syscall.Timespec
}

// fileIDOf returns the identity of the file at path.
func fileIDOf(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("%s: no inode", path)
	}
	return fileID{ino: st.Ino, ctime: st.Ctim}, nil
}

// socketName is the file name of a resource's plugin socket in the
// kubelet's device-plugins directory, e.g. "gms-nvidia.com-mig-1g.10gb.sock".
func socketName(resource string) string {
	return "gms-" + strings.ReplaceAll(resource, "/", "-") + ".sock"
}
