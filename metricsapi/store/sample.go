// Package store keeps, for every pod, a short window of the readings of the
// GPUs it holds, and answers the aggregated values the custom metrics API
// serves. It is fed by the scraper (aggregator mode) or in-process
// (standalone mode), and read by the provider; it does no I/O.
//
// Time has two meanings here. A sample's Time is the real time the reading
// was taken (reported by the agent); it is what the API reports as the
// value's timestamp. Windows and staleness are judged on the store's own
// clock at receipt (the "at" given to Append and the "now" given to
// queries), so that a source with a skewed clock can neither keep old data
// alive nor hide fresh data.
package store

import "time"

// Fields is a set of the optional readings a Sample carries.
type Fields uint8

// The readings a Sample may carry. A device that does not report a reading
// simply leaves it out; the store never treats an absent reading as zero.
const (
	// FieldUtilization marks Sample.Utilization as present.
	FieldUtilization Fields = 1 << iota
	// FieldMemoryUsed marks Sample.MemoryUsedBytes as present.
	FieldMemoryUsed
	// FieldMemoryTotal marks Sample.MemoryTotalBytes as present.
	FieldMemoryTotal
	// FieldPower marks Sample.PowerWatts as present.
	FieldPower
)

// Has reports whether every field in want is in f.
func (f Fields) Has(want Fields) bool { return f&want == want }

// Sample is one reading of one device (a GPU, or a MIG instance) attributed
// to one container of a pod.
type Sample struct {
	// Namespace and Pod name the pod holding the device.
	Namespace string
	Pod       string
	// Container is the container holding the device. Several containers of
	// one pod holding the same device count as one device for the pod.
	Container string
	// Device identifies the device: its UUID, with "/<GPU instance id>"
	// appended for a MIG instance whose UUID label is the parent's.
	Device string
	// Time is the real time the reading was taken. A reading whose Time is
	// not after the newest one stored for the same pod and device is a
	// copy of a snapshot already stored and is skipped.
	Time time.Time
	// Present says which of the readings below are set.
	Present Fields
	// Utilization is the pod's utilization of the device in percent
	// (0-100). It is the device's utilization today; where a source can
	// attribute a shared device's load to the pods sharing it, it carries
	// the pod's own share instead (the parser decides which reading wins).
	Utilization float64
	// MemoryUsedBytes and MemoryTotalBytes are the device's frame buffer
	// in use and in total.
	MemoryUsedBytes  float64
	MemoryTotalBytes float64
	// PowerWatts is the device's power draw.
	PowerWatts float64
}
