package podmap

import (
	"fmt"
	"strings"
)

// Extended resource names the mapping always considers; every name starting
// with migResourcePrefix is considered too.
const (
	resourceGPU       = "nvidia.com/gpu"
	resourceGPUShared = "nvidia.com/gpu.shared"
	migResourcePrefix = "nvidia.com/mig-"
)

// resourceSet decides which extended resources are GPUs.
type resourceSet map[string]struct{}

// newResourceSet returns the default GPU resource names plus extra.
func newResourceSet(extra []string) resourceSet {
	s := resourceSet{resourceGPU: {}, resourceGPUShared: {}}
	for _, name := range extra {
		s[name] = struct{}{}
	}
	return s
}

// has reports whether devices allocated under name are GPUs.
func (s resourceSet) has(name string) bool {
	if _, ok := s[name]; ok {
		return true
	}
	return strings.HasPrefix(name, migResourcePrefix)
}

// ValidateResourceName checks an extra extended-resource name (as given to
// the agent's --resource-names): "<domain>/<name>" with both parts non-empty
// and no whitespace or comma.
func ValidateResourceName(name string) error {
	domain, rest, ok := strings.Cut(name, "/")
	if !ok || domain == "" || rest == "" || strings.Contains(rest, "/") {
		return fmt.Errorf("resource name %q: want <domain>/<name>, e.g. example.com/gpu", name)
	}
	if strings.ContainsAny(name, " \t\r\n,") {
		return fmt.Errorf("resource name %q: contains whitespace or a comma", name)
	}
	return nil
}
