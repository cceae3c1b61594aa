package delegate

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultServicePort is the port of a "namespace/service" target without
// one: the APIService's own default.
const DefaultServicePort = 443

// Target is where metrics we do not serve are forwarded (--delegate-to):
// a Service of the cluster, reached the way kube-apiserver reaches an
// APIService's Service, or an https URL.
type Target struct {
	// Service names the Service; nil for a URL target.
	Service *ServiceRef
	// URL is the base URL of the delegate: https://<service>.<namespace>.svc:<port>
	// for a Service (the name kube-apiserver verifies the serving
	// certificate against), or the URL given.
	URL *url.URL
}

// ServiceRef is a Service port: the APIService's spec.service.
type ServiceRef struct {
	Namespace, Name string
	Port            int32
}

// String is namespace/name:port.
func (s ServiceRef) String() string {
	return s.Namespace + "/" + s.Name + ":" + strconv.Itoa(int(s.Port))
}

// Host is the DNS name the Service's certificate is verified against.
func (s ServiceRef) Host() string { return s.Name + "." + s.Namespace + ".svc" }

// String names the target in logs and error messages: the Service
// (namespace/name:port) or the URL.
func (t Target) String() string {
	if t.Service != nil {
		return t.Service.String()
	}
	if t.URL == nil {
		return ""
	}
	return t.URL.String()
}

// ParseTarget parses --delegate-to: "namespace/service[:port]" (port 443
// when absent) or "https://host[:port]" (no path, query, fragment or user
// information: the custom metrics paths are appended as they are).
func ParseTarget(s string) (Target, error) {
	if s == "" {
		return Target{}, errors.New("empty")
	}
	if strings.Contains(s, "://") {
		return parseURL(s)
	}
	return parseService(s)
}

func parseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, err
	}
	switch {
	case u.Scheme != "https":
		return Target{}, fmt.Errorf("%q: the scheme must be https (the forwarded requests carry a bearer token)", s)
	case u.Host == "" || u.Hostname() == "":
		return Target{}, fmt.Errorf("%q: no host", s)
	case u.User != nil:
		return Target{}, fmt.Errorf("%q: user information is not allowed; use --delegate-bearer-token-file", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return Target{}, fmt.Errorf("%q: give only https://host[:port]; the custom metrics paths are appended to it", s)
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil {
			return Target{}, fmt.Errorf("%q: %w", s, err)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return Target{}, fmt.Errorf("%q: empty port", s)
	}
	return Target{URL: &url.URL{Scheme: "https", Host: u.Host}}, nil
}

func parseService(s string) (Target, error) {
	ns, rest, ok := strings.Cut(s, "/")
	if !ok {
		return Target{}, fmt.Errorf("%q: want namespace/service[:port] or https://host[:port]", s)
	}
	name, portText, hasPort := strings.Cut(rest, ":")
	port := int32(DefaultServicePort)
	if hasPort {
		p, err := parsePort(portText)
		if err != nil {
			return Target{}, fmt.Errorf("%q: %w", s, err)
		}
		port = p
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return Target{}, fmt.Errorf("%q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return Target{}, fmt.Errorf("%q: service %q: %s", s, name, strings.Join(errs, "; "))
	}
	ref := &ServiceRef{Namespace: ns, Name: name, Port: port}
	return Target{
		Service: ref,
		URL:     &url.URL{Scheme: "https", Host: net.JoinHostPort(ref.Host(), strconv.Itoa(int(port)))},
	}, nil
}

// parsePort parses a decimal port 1-65535.
func parsePort(s string) (int32, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return int32(p), nil
}
