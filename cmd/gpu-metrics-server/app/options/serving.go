package options

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
)

// ServingOptions are custom-metrics-apiserver's options of the custom
// metrics API server: secure serving, delegated authentication and
// authorization, audit and features.
type ServingOptions struct {
	*server.Options

	// anyFreePort makes --secure-port=0 mean a free port, bound when the
	// configuration is built (the demo), instead of an invalid port.
	anyFreePort bool
}

// NewServingOptions returns custom-metrics-apiserver's defaults as the
// server package sets them (port 6443, delegated authn/authz).
func NewServingOptions() *ServingOptions { return &ServingOptions{Options: server.NewOptions()} }

// NewLoopbackServingOptions are NewServingOptions bound to 127.0.0.1, where
// --secure-port=0 picks a free port.
func NewLoopbackServingOptions() *ServingOptions {
	o := NewServingOptions()
	o.SecureServing.BindAddress = net.ParseIP("127.0.0.1")
	o.anyFreePort = true
	return o
}

// servingSection is one of custom-metrics-apiserver's option sets: its help
// section, its validation, and the flags an error of it that names no flag
// is about.
type servingSection struct {
	addFlags func(*cliflag.NamedFlagSets)
	validate func() []error
	flags    string
}

// sections are o's option sets, validated on v (o itself or a copy).
func (o *ServingOptions) sections(v *server.Options) []servingSection {
	return []servingSection{
		{func(f *cliflag.NamedFlagSets) { o.SecureServing.AddFlags(f.FlagSet(sectionServing)) }, v.SecureServing.Validate, "secure-port"},
		{func(f *cliflag.NamedFlagSets) { o.Authentication.AddFlags(f.FlagSet(sectionAuthn)) }, v.Authentication.Validate, "authentication-*"},
		{func(f *cliflag.NamedFlagSets) { o.Authorization.AddFlags(f.FlagSet(sectionAuthz)) }, v.Authorization.Validate, "authorization-*"},
		{func(f *cliflag.NamedFlagSets) { o.Audit.AddFlags(f.FlagSet(sectionAudit)) }, v.Audit.Validate, "audit-*"},
		{func(f *cliflag.NamedFlagSets) { o.Features.AddFlags(f.FlagSet(sectionFeatures)) }, v.Features.Validate, "profiling"}, // its checks report nothing today
	}
}

// AddFlags registers custom-metrics-apiserver's flags, one help section per
// option set.
func (o *ServingOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	for _, s := range o.sections(o.Options) {
		s.addFlags(fss)
	}
}

// Complete makes --kubeconfig the default of the delegated authentication
// and authorization kubeconfigs, and, when the server runs without
// delegated authentication (InsecureLoopback), skips the lookups these
// would make in the cluster at start.
func (o *ServingOptions) Complete(kube *KubeOptions) {
	if kube.Kubeconfig != "" {
		if o.Authentication.RemoteKubeConfigFile == "" {
			o.Authentication.RemoteKubeConfigFile = kube.Kubeconfig
		}
		if o.Authorization.RemoteKubeConfigFile == "" {
			o.Authorization.RemoteKubeConfigFile = kube.Kubeconfig
		}
	}
	if o.InsecureLoopback {
		o.Authentication.SkipInClusterLookup = true
		o.Authentication.RemoteKubeConfigFileOptional = true
		o.Authorization.RemoteKubeConfigFileOptional = true
	}
}

// flagInMessage finds a flag named in an option's error.
var flagInMessage = regexp.MustCompile(`--([a-z0-9][a-z0-9.-]*)`)

// Validate reports every invalid serving option, each naming the flag its
// message mentions, else its section's flags (the audit options' messages
// name none). A --secure-port of 0 is valid where it picks a free port.
func (o *ServingOptions) Validate() []error {
	v := o.Options
	if o.anyFreePort && v.SecureServing.BindPort == 0 && v.SecureServing.Listener == nil {
		// Validate a copy with a placeholder port: nothing is bound here.
		ss := *v.SecureServing.SecureServingOptions
		ss.BindPort = 1
		withLoopback := *v.SecureServing
		withLoopback.SecureServingOptions = &ss
		cm := *v.CustomMetricsAdapterServerOptions
		cm.SecureServing = &withLoopback
		v = &server.Options{CustomMetricsAdapterServerOptions: &cm, InsecureLoopback: v.InsecureLoopback}
	}
	var errs []error
	var seen []string
	for _, s := range o.sections(v) {
		for _, err := range s.validate() {
			seen = append(seen, err.Error())
			errs = append(errs, servingFlagError(err, s.flags))
		}
	}
	// The server's own checks (loopback without authentication) come after
	// those of the sections, which it repeats.
	for _, err := range v.Validate() {
		if !slices.Contains(seen, err.Error()) {
			errs = append(errs, servingFlagError(err, "secure-port"))
		}
	}
	return append(errs, o.validateFiles()...)
}

// validateFiles checks the certificate files, which the server would read
// only when it starts.
func (o *ServingOptions) validateFiles() []error {
	var errs errorList
	ck := o.SecureServing.ServerCert.CertKey
	switch {
	case ck.CertFile != "" && ck.KeyFile == "":
		errs.add(flagErrorf("tls-private-key-file", "required with --tls-cert-file"))
	case ck.CertFile == "" && ck.KeyFile != "":
		errs.add(flagErrorf("tls-cert-file", "required with --tls-private-key-file"))
	}
	files := []struct{ flag, path string }{
		{"tls-cert-file", ck.CertFile},
		{"tls-private-key-file", ck.KeyFile},
	}
	if a := o.Authentication; a != nil {
		files = append(files,
			struct{ flag, path string }{"client-ca-file", a.ClientCert.ClientCA},
			struct{ flag, path string }{"requestheader-client-ca-file", a.RequestHeader.ClientCAFile})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if err := checkReadableFile(f.path); err != nil {
			errs.add(&FlagError{Flag: f.flag, Err: err})
		}
	}
	return errs
}

// servingFlagError turns a custom-metrics-apiserver option error into a
// FlagError naming the flag its message mentions, else fallback.
func servingFlagError(err error, fallback string) *FlagError {
	flag := fallback
	if m := flagInMessage.FindStringSubmatch(err.Error()); m != nil {
		flag = strings.TrimSuffix(m[1], ".")
	}
	return &FlagError{Flag: flag, Err: err}
}

// Config is the server's options, with the free port of --secure-port=0
// bound now where it picks one, so that the URLs printed show it.
func (o *ServingOptions) Config() (*server.Options, error) {
	ss := o.SecureServing
	if o.anyFreePort && ss.BindPort == 0 && ss.Listener == nil {
		l, err := net.Listen("tcp", net.JoinHostPort(ss.BindAddress.String(), "0"))
		if err != nil {
			return nil, fmt.Errorf("binding a free port for --secure-port=0: %w", err)
		}
		ss.Listener = l
		ss.BindPort = l.Addr().(*net.TCPAddr).Port
	}
	return o.Options, nil
}
