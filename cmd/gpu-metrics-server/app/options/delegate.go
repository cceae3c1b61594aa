package options

import (
	"crypto/x509"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate"
)

// maxDelegateTimeout is the longest --delegate-timeout: kube-apiserver
// ends a request after a minute anyway.
const maxDelegateTimeout = time.Minute

// minDiscoveryInterval is the shortest --delegate-discovery-interval.
const minDiscoveryInterval = time.Second

// DelegateOptions name the adapter the aggregator forwards every custom
// metric it does not serve to (the previous owner of
// custom.metrics.k8s.io), how to reach it, and who to be to it.
type DelegateOptions struct {
	To                    string
	CAFile                string
	InsecureSkipTLSVerify bool
	BearerTokenFile       string
	Timeout               time.Duration
	DiscoveryInterval     time.Duration

	// given are the delegate flags set on the command line besides
	// --delegate-to (Complete).
	given []string
}

// delegateFlags are the flags that mean nothing without --delegate-to.
var delegateFlags = []string{"delegate-ca-file", "delegate-insecure-skip-tls-verify", "delegate-bearer-token-file", "delegate-timeout", "delegate-discovery-interval"}

// NewDelegateOptions returns the defaults: no delegate.
func NewDelegateOptions() *DelegateOptions {
	return &DelegateOptions{Timeout: delegate.DefaultTimeout, DiscoveryInterval: delegate.DefaultDiscoveryInterval}
}

// AddFlags registers the delegation flags.
func (o *DelegateOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionDelegate)
	fs.StringVar(&o.To, "delegate-to", o.To, "The adapter that served custom.metrics.k8s.io before (e.g. prometheus-adapter): every custom metric this server does not serve "+
		"is forwarded to it, its answer passed back unchanged. namespace/service[:port] (port 443 when absent; reached as kube-apiserver reaches an APIService's Service, "+
		"certificate verified as <service>.<namespace>.svc) or https://host[:port]. Empty: none.")
	fs.StringVar(&o.CAFile, "delegate-ca-file", o.CAFile, "PEM CA bundle verifying the delegate's serving certificate (default: the system roots); the APIService's caBundle.")
	fs.BoolVar(&o.InsecureSkipTLSVerify, "delegate-insecure-skip-tls-verify", o.InsecureSkipTLSVerify, "Do not verify the delegate's serving certificate, "+
		"as kube-apiserver did not when its APIService set insecureSkipTLSVerify. Logged at start.")
	fs.StringVar(&o.BearerTokenFile, "delegate-bearer-token-file", o.BearerTokenFile, "File holding the bearer token presented to the delegate, re-read as it changes "+
		"(default: this server's own credentials from --kubeconfig or the pod's ServiceAccount token).")
	fs.DurationVar(&o.Timeout, "delegate-timeout", o.Timeout, "Longest wait for the delegate's answer to a forwarded request (and a discovery refresh); past it the caller gets 503 naming the delegate. At most 1m.")
	fs.DurationVar(&o.DiscoveryInterval, "delegate-discovery-interval", o.DiscoveryInterval, "Period of the background refresh of the delegate's metric list, which discovery merges with ours.")
}

// Complete records which delegation flags were given.
func (o *DelegateOptions) Complete(fs *pflag.FlagSet) {
	o.given = o.given[:0]
	for _, name := range delegateFlags {
		if fs.Changed(name) {
			o.given = append(o.given, name)
		}
	}
}

// Enabled reports whether a delegate is configured.
func (o *DelegateOptions) Enabled() bool { return o.To != "" }

// Validate reports every invalid delegation flag: a malformed
// --delegate-to, unreadable files, a CA and no verification at once, a
// flag without --delegate-to. Nothing is dialled: an unreachable delegate
// is reported down at run time.
func (o *DelegateOptions) Validate() []error {
	var errs errorList
	if !o.Enabled() {
		for _, name := range o.given {
			errs.add(flagErrorf(name, "has no effect without --delegate-to"))
		}
		return errs
	}
	if _, err := delegate.ParseTarget(o.To); err != nil {
		errs.add(flagErrorf("delegate-to", "%v", err))
	}
	if o.CAFile != "" {
		if pem, err := os.ReadFile(o.CAFile); err != nil {
			errs.add(flagErrorf("delegate-ca-file", "%v", err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			errs.add(flagErrorf("delegate-ca-file", "%s holds no PEM certificate", o.CAFile))
		}
		if o.InsecureSkipTLSVerify {
			errs.add(flagErrorf("delegate-insecure-skip-tls-verify", "contradicts --delegate-ca-file: verify the delegate with a CA, or not at all"))
		}
	}
	if o.BearerTokenFile != "" {
		if b, err := os.ReadFile(o.BearerTokenFile); err != nil {
			errs.add(flagErrorf("delegate-bearer-token-file", "%v", err))
		} else if strings.TrimSpace(string(b)) == "" {
			errs.add(flagErrorf("delegate-bearer-token-file", "%s is empty", o.BearerTokenFile))
		}
	}
	if o.Timeout <= 0 || o.Timeout > maxDelegateTimeout {
		errs.add(flagErrorf("delegate-timeout", "%v is not in (0, %v]", o.Timeout, maxDelegateTimeout))
	}
	if o.DiscoveryInterval < minDiscoveryInterval {
		errs.add(flagErrorf("delegate-discovery-interval", "%v is below the minimum of %v", o.DiscoveryInterval, minDiscoveryInterval))
	}
	return errs
}

// Config is the configuration of the validated delegate, but for what
// only the running aggregator has: its credentials and Kubernetes client
// (TransportConfig.Credentials and .Services) and the transport built with
// them (Config.Transport).
func (o *DelegateOptions) Config() (delegate.Config, delegate.TransportConfig, error) {
	target, err := delegate.ParseTarget(o.To)
	if err != nil {
		return delegate.Config{}, delegate.TransportConfig{}, flagErrorf("delegate-to", "%v", err)
	}
	return delegate.Config{Target: target, Timeout: o.Timeout, DiscoveryInterval: o.DiscoveryInterval},
		delegate.TransportConfig{
			Target: target, BearerTokenFile: o.BearerTokenFile,
			CAFile: o.CAFile, InsecureSkipTLSVerify: o.InsecureSkipTLSVerify,
		}, nil
}
