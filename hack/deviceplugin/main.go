// Command deviceplugin is a Kubernetes device plugin for the end-to-end
// tests. It advertises to the kubelet the simulated GPUs of one node (those
// an agent with --backend=sim and the same --node-name, --sim-gpus and
// --sim-mig reports) under the names and IDs NVIDIA's device plugin uses:
//
//   - nvidia.com/gpu: each GPU not in MIG mode, as "GPU-<uuid>";
//   - nvidia.com/mig-<profile>: each MIG instance (mixed strategy), as
//     "MIG-<uuid>";
//   - with --replicas=N (time-slicing), each device as N IDs "<id>::<n>",
//     and with --rename-shared the names get the ".shared" suffix
//     (nvidia.com/gpu.shared), as the sharing config's renameByDefault does.
//
// Each resource is served on its own socket in the kubelet's device-plugins
// directory and registered through its kubelet.sock. A starting kubelet
// deletes those sockets: the plugin then serves and registers again. It runs
// until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

// maxGPUs bounds --gpus, as the agent's --sim-gpus is bounded.
const maxGPUs = 1024

func main() {
	klog.InitFlags(nil)
	l, dir, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "deviceplugin:", err)
		os.Exit(2)
	}
	resources, err := l.Resources()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deviceplugin:", err)
		os.Exit(2)
	}
	for _, r := range resources {
		klog.InfoS("Advertising", "resource", r.Name, "devices", r.IDs())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		klog.ErrorS(err, "Creating the device-plugins directory")
		klog.Flush()
		os.Exit(1)
	}
	if err := newManager(dir, resources).run(ctx); err != nil {
		klog.ErrorS(err, "Device plugin failed")
		klog.Flush()
		os.Exit(1)
	}
}

// parseFlags reads the command line; an invalid value is an error naming
// its flag.
func parseFlags(fs *flag.FlagSet, args []string) (devices.Layout, string, error) {
	var l devices.Layout
	var mig string
	fs.StringVar(&l.Node, "node", "", "node name the simulated GPUs belong to: the agent's --node-name (required)")
	fs.IntVar(&l.GPUs, "gpus", 0, "number of simulated GPUs: the agent's --sim-gpus (required)")
	fs.StringVar(&mig, "mig", "", "comma-separated indexes of the GPUs in MIG mode: the agent's --sim-mig")
	fs.IntVar(&l.Replicas, "replicas", 1, "time-slicing replicas of each device (1: not shared)")
	fs.BoolVar(&l.RenameShared, "rename-shared", false, "advertise time-sliced resources as <name>.shared")
	dir := fs.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugins directory")
	if err := fs.Parse(args); err != nil {
		return l, "", err
	}
	switch {
	case fs.NArg() > 0:
		return l, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	case l.Node == "":
		return l, "", fmt.Errorf("--node is required")
	case l.GPUs < 1 || l.GPUs > maxGPUs:
		return l, "", fmt.Errorf("--gpus=%d: want 1-%d", l.GPUs, maxGPUs)
	case l.Replicas < 1:
		return l, "", fmt.Errorf("--replicas=%d: want at least 1", l.Replicas)
	case l.RenameShared && l.Replicas == 1:
		return l, "", fmt.Errorf("--rename-shared needs --replicas above 1")
	case *dir == "":
		return l, "", fmt.Errorf("--plugin-dir is empty")
	}
	for f := range strings.SplitSeq(mig, ",") {
		if f == "" {
			continue
		}
		i, err := strconv.Atoi(f)
		if err != nil || i < 0 || i >= l.GPUs {
			return l, "", fmt.Errorf("--mig: %q is not a GPU index below %d", f, l.GPUs)
		}
		l.MIG = append(l.MIG, i)
	}
	return l, *dir, nil
}
