// Package collectortest holds fakes and helpers shared by the tests of the
// collector and its backends. It is imported only from _test.go files.
package collectortest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// Owners is a device-to-container lookup by UUID (a podmap.Lookup).
type Owners map[string][]podmap.Owner

// Owners implements podmap.Lookup.
func (o Owners) Owners(k podmap.DeviceKey) []podmap.Owner { return o[k.UUID] }

// Pods is a pod index (a collector.PodIndex): "namespace/name" to UID.
type Pods map[string]string

// UID implements collector.PodIndex.
func (p Pods) UID(namespace, name string) (string, bool) {
	uid, ok := p[namespace+"/"+name]
	return uid, ok
}

// Gauges returns the values of gauge vector name in reg by the value of its
// only label.
func Gauges(t testing.TB, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// ParseExposition parses a text exposition with Prometheus's own parser,
// failing the test when it does not parse.
func ParseExposition(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b)
	}
	return mfs
}

// Labels returns a series' labels by name.
func Labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// UnreadablePID is the PID whose cgroup Resolver cannot read.
const UnreadablePID = 666

// Resolver maps PIDs to pod UIDs ("" for a host process), as a
// collector.ProcessResolver: a PID it lacks is not visible (fs.ErrNotExist),
// and UnreadablePID's cgroup does not parse.
type Resolver map[uint32]string

// PodUID implements collector.ProcessResolver.
func (r Resolver) PodUID(pid uint32) (string, error) {
	if pid == UnreadablePID {
		return "", errors.New("cgroup: malformed")
	}
	uid, ok := r[pid]
	if !ok {
		return "", fmt.Errorf("process %d: %w", pid, fs.ErrNotExist)
	}
	return uid, nil
}
