package options

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// maxSimGPUs is the most simulated GPUs one agent offers.
const maxSimGPUs = 1024

// AgentOptions are the node agent's: the GPU backend and its sampling, the
// /metrics endpoint, the kubelet's pod-resources mapping and per-process
// attribution.
type AgentOptions struct {
	Backend        string
	SimGPUs        int
	SimMIG         []int
	SimUtilization float64 // percent, every simulated GPU's at start
	NodeName       string
	SampleInterval time.Duration
	// SlowSampleInterval is how often NVML's slow fields are read.
	SlowSampleInterval time.Duration

	ListenAddress string
	WebConfigFile string

	PodResourcesSocket   string
	PodResourcesInterval time.Duration
	PodResourcesTimeout  time.Duration
	ResourceNames        []string

	ProcessAttribution bool
	HostProc           string

	// Collectors is a counters file in dcgm-exporter's format: the fields
	// to serve ("": the built-in list).
	Collectors                string
	CollectorsSkipUnsupported bool
	HostnameLabel             string

	// counters is Collectors parsed by Validate.
	counters *counters.Set
}

// hostnameNone is the --hostname-label value that leaves the label out.
const hostnameNone = "none"

// NewAgentOptions returns the defaults; the node is $NODE_NAME, else the
// host name.
func NewAgentOptions() *AgentOptions {
	node := os.Getenv("NODE_NAME")
	if node == "" {
		node, _ = os.Hostname()
	}
	return &AgentOptions{
		Backend:              "nvml",
		SimGPUs:              2,
		NodeName:             node,
		SampleInterval:       time.Second,
		SlowSampleInterval:   10 * time.Second,
		ListenAddress:        ":9400",
		PodResourcesSocket:   "/var/lib/kubelet/pod-resources/kubelet.sock",
		PodResourcesInterval: 2 * time.Second,
		PodResourcesTimeout:  time.Second,
		ProcessAttribution:   true,
		HostProc:             "/proc",
		HostnameLabel:        exposition.LabelHostname,
	}
}

// AddFlags registers the agent's flags.
func (o *AgentOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionGPU)
	fs.StringVar(&o.Backend, "backend", o.Backend, "GPU backend: nvml (real GPUs through libnvidia-ml) or sim (simulated GPUs, for demos and tests).")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Node name, exported as the node label (--hostname-label; default $NODE_NAME, else the host name).")
	fs.DurationVar(&o.SampleInterval, "sample-interval", o.SampleInterval, "Interval between GPU sampling rounds.")
	fs.DurationVar(&o.SlowSampleInterval, "slow-sample-interval", o.SlowSampleInterval, "Interval between readings of the fields that change slowly "+
		"or cost most to read (energy, violation times, ECC, retired-page, row-remapping and NVLink error counters, PCIe replays, vGPU license, "+
		"and the process table of a GPU at most one pod holds), with --backend=nvml; the rounds in between serve their last reading. "+
		"At least --sample-interval; 0 reads them every round.")
	fs.StringVarP(&o.Collectors, "collectors", "f", o.Collectors, "Counters file in dcgm-exporter's CSV format (\"DCGM_FIELD, type, help\" per line): the fields to serve, "+
		"with its types and help texts. Empty: the built-in list, dcgm-exporter's dcp-metrics-included.csv. The fields the aggregator reads are always served.")
	fs.BoolVar(&o.CollectorsSkipUnsupported, "collectors-skip-unsupported", o.CollectorsSkipUnsupported, "Skip the fields of --collectors that the agent cannot read "+
		"through NVML (each logged once) instead of refusing to start.")
	fs.StringVar(&o.HostnameLabel, "hostname-label", o.HostnameLabel, "Name of the node label on every device series: Hostname (what every released "+
		"dcgm-exporter writes), hostname (dcgm-exporter's unreleased main) or none.")

	fs = fss.FlagSet(sectionSimulation)
	fs.IntVar(&o.SimGPUs, "sim-gpus", o.SimGPUs, "Number of simulated GPUs with --backend=sim.")
	fs.IntSliceVar(&o.SimMIG, "sim-mig", o.SimMIG, "Indexes of simulated GPUs in MIG mode (each split 3g.40gb + 2g.20gb + 1g.10gb + 1g.10gb), with --backend=sim.")
	fs.Float64Var(&o.SimUtilization, "sim-utilization", o.SimUtilization, "Utilization (percent, 0-100) of every simulated GPU (every MIG instance's activity) at start, with --backend=sim: "+
		"an agent restarted with the load it left finds the GPUs still busy, as real ones would be.")

	fs = fss.FlagSet(sectionWeb)
	fs.StringVar(&o.ListenAddress, "web.listen-address", o.ListenAddress, "Address to serve /metrics, /healthz and /readyz on.")
	fs.StringVar(&o.WebConfigFile, "web.config.file", o.WebConfigFile, "Path to an exporter-toolkit web configuration file (TLS, basic auth).")

	fs = fss.FlagSet(sectionPodResources)
	fs.StringVar(&o.PodResourcesSocket, "pod-resources-socket", o.PodResourcesSocket, "The kubelet's pod-resources socket; empty disables pod attribution.")
	fs.DurationVar(&o.PodResourcesInterval, "pod-resources-interval", o.PodResourcesInterval, "Interval between refreshes of the GPU-to-pod mapping.")
	fs.DurationVar(&o.PodResourcesTimeout, "pod-resources-timeout", o.PodResourcesTimeout, "Timeout of one call to the kubelet's pod-resources API.")
	fs.StringSliceVar(&o.ResourceNames, "resource-names", o.ResourceNames, "Extra extended-resource names that hold GPUs, besides nvidia.com/gpu, nvidia.com/gpu.shared and nvidia.com/mig-*.")

	fs = fss.FlagSet(sectionAttribution)
	fs.BoolVar(&o.ProcessAttribution, "process-attribution", o.ProcessAttribution, "Attribute shared GPUs to pods per process (needs the host's PIDs: hostPID: true or --host-proc, and read access to pods); false gives every pod holding a GPU the GPU's values.")
	fs.StringVar(&o.HostProc, "host-proc", o.HostProc, "The host's /proc, where the PIDs of GPU processes are looked up (/proc with hostPID: true).")
}

// Complete bounds the default --pod-resources-timeout by
// --pod-resources-interval: a call may not outlast the interval, and a
// shorter interval given alone shortens the default; one given explicitly
// is validated instead.
func (o *AgentOptions) Complete(fs *pflag.FlagSet) {
	if !fs.Changed("pod-resources-timeout") && o.PodResourcesInterval > 0 {
		o.PodResourcesTimeout = min(o.PodResourcesTimeout, o.PodResourcesInterval)
	}
	// Likewise a --sample-interval longer than the default
	// --slow-sample-interval lengthens it.
	if !fs.Changed("slow-sample-interval") && o.SlowSampleInterval > 0 && checkInterval(o.SampleInterval) == nil {
		o.SlowSampleInterval = max(o.SlowSampleInterval, o.SampleInterval)
	}
}

// Validate reports every invalid agent flag. The checks that depend on
// --backend or --sim-gpus are left out while those are invalid.
func (o *AgentOptions) Validate() []error {
	var errs errorList
	backendOK := o.Backend == "nvml" || o.Backend == "sim"
	if !backendOK {
		errs.add(flagErrorf("backend", "%q is not a backend: use nvml or sim", o.Backend))
	}
	gpusOK := o.SimGPUs >= 0 && o.SimGPUs <= maxSimGPUs
	if o.Backend == "sim" && !gpusOK {
		errs.add(flagErrorf("sim-gpus", "%d out of range 0-%d", o.SimGPUs, maxSimGPUs))
	}
	if len(o.SimMIG) > 0 && backendOK {
		if o.Backend != "sim" {
			errs.add(flagErrorf("sim-mig", "only with --backend=sim"))
		} else if gpusOK {
			for _, i := range o.SimMIG {
				if i < 0 || i >= o.SimGPUs {
					errs.add(flagErrorf("sim-mig", "GPU %d out of range: %d simulated GPUs", i, o.SimGPUs))
					break
				}
			}
		}
	}
	if o.SimUtilization != 0 && backendOK {
		if o.Backend != "sim" {
			errs.add(flagErrorf("sim-utilization", "only with --backend=sim"))
		} else if !(o.SimUtilization >= 0 && o.SimUtilization <= 100) {
			errs.add(flagErrorf("sim-utilization", "%v out of range 0-100", o.SimUtilization))
		}
	}
	if o.NodeName == "" {
		errs.add(flagErrorf("node-name", "empty, and neither $NODE_NAME nor the host name is set"))
	}
	o.counters = nil
	if o.Collectors != "" {
		set, problems, err := readCounters(o.Collectors, o.CollectorsSkipUnsupported)
		switch {
		case err != nil:
			errs.add(&FlagError{Flag: "collectors", Err: err})
		case len(problems) > 0:
			for _, p := range problems {
				errs.add(&FlagError{Flag: "collectors", Err: p})
			}
		default:
			o.counters = set
		}
	}
	switch o.HostnameLabel {
	case exposition.LabelHostname, exposition.LabelHostnameLower, hostnameNone:
	default:
		errs.add(flagErrorf("hostname-label", "%q: use %s, %s or %s", o.HostnameLabel, exposition.LabelHostname, exposition.LabelHostnameLower, hostnameNone))
	}
	sampleErr := checkInterval(o.SampleInterval)
	if sampleErr != nil {
		errs.add(&FlagError{Flag: "sample-interval", Err: sampleErr})
	}
	if o.SlowSampleInterval != 0 {
		if err := checkInterval(o.SlowSampleInterval); err != nil {
			errs.add(&FlagError{Flag: "slow-sample-interval", Err: fmt.Errorf("%w (0 reads every round)", err)})
		} else if sampleErr == nil && o.SlowSampleInterval < o.SampleInterval {
			errs.add(flagErrorf("slow-sample-interval", "%v is shorter than --sample-interval (%v): use 0 to read every round", o.SlowSampleInterval, o.SampleInterval))
		}
	}
	if err := checkListenAddress(o.ListenAddress); err != nil {
		errs.add(&FlagError{Flag: "web.listen-address", Err: err})
	}
	if o.WebConfigFile != "" {
		if err := web.Validate(o.WebConfigFile); err != nil {
			errs.add(flagErrorf("web.config.file", "%v", err))
		}
	}
	if o.PodResourcesSocket != "" {
		if err := checkInterval(o.PodResourcesInterval); err != nil {
			errs.add(&FlagError{Flag: "pod-resources-interval", Err: err})
		}
		if o.PodResourcesTimeout <= 0 {
			errs.add(flagErrorf("pod-resources-timeout", "must be positive, got %v", o.PodResourcesTimeout))
		} else if o.PodResourcesTimeout > o.PodResourcesInterval && checkInterval(o.PodResourcesInterval) == nil {
			errs.add(flagErrorf("pod-resources-timeout", "%v is longer than --pod-resources-interval (%v)", o.PodResourcesTimeout, o.PodResourcesInterval))
		}
	}
	for _, n := range o.ResourceNames {
		if err := podmap.ValidateResourceName(n); err != nil {
			errs.add(flagErrorf("resource-names", "%v", err))
			break
		}
	}
	if o.ProcessAttribution && o.Backend == "nvml" {
		if fi, err := os.Stat(o.HostProc); err != nil || !fi.IsDir() {
			errs.add(flagErrorf("host-proc", "%q is not a readable directory", o.HostProc))
		}
	}
	return errs
}

// MaxSnapshotAge is how old a snapshot may be before /metrics stops serving
// it and /readyz fails.
func (o *AgentOptions) MaxSnapshotAge() time.Duration { return 3 * o.SampleInterval }

// PodResources is the kubelet mapping's configuration, its self-metrics
// registered in reg.
func (o *AgentOptions) PodResources(reg prometheus.Registerer) podmap.Options {
	return podmap.Options{
		Socket:             o.PodResourcesSocket,
		Interval:           o.PodResourcesInterval,
		Timeout:            o.PodResourcesTimeout,
		ExtraResourceNames: o.ResourceNames,
		Registerer:         reg,
	}
}

// Sampler is the sampler's configuration as far as flags set it: the
// caller adds the pod lookup, the attribution and where snapshots go.
func (o *AgentOptions) Sampler(reg prometheus.Registerer) collector.SamplerOptions {
	label := o.HostnameLabel
	if label == hostnameNone {
		label = ""
	}
	return collector.SamplerOptions{Node: o.NodeName, Interval: o.SampleInterval, Registerer: reg, Format: collector.NewFormat(o.Counters(), label)}
}

// Counters is the field selection: --collectors as Validate read it, or
// the built-in list.
func (o *AgentOptions) Counters() *counters.Set {
	if o.counters == nil {
		return counters.Default()
	}
	return o.counters
}

// readCounters reads a counters file.
func readCounters(path string, skip bool) (*counters.Set, []counters.Problem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	set, problems := counters.Parse(path, f, counters.Options{SkipUnsupported: skip})
	return set, problems, nil
}
