// Package store keeps, for every pod, a short window of the readings of the
// GPUs it holds, and answers the aggregated values the custom metrics API
// serves; and, for every node, the same windows of all of its GPUs, held
// by a pod or idle (AppendNodes, NodeValue), for the node metrics. It is
// fed by the scraper (aggregator mode) or in-process
// (standalone mode), and read by the provider; it does no I/O.
//
// Time has two meanings here. A sample's Time is the real time the reading
// was taken (reported by the agent); it is what the API reports as the
// value's timestamp. Windows and staleness are judged on the store's own
// clock at receipt (the "at" given to Append and the "now" given to
// queries), so that a source with a skewed clock can neither keep old data
// alive nor hide fresh data.
//
// Several sources may report one device of one pod (on an A100 in MIG mode
// the agent reports an instance's memory and dcgm-exporter its engine
// activity). The store keeps each reading (utilization, memory used, memory
// total, power) per source precedence with its own times, and serves, field
// by field, the reading of the highest precedence that is fresh (received
// within the stale-after period): a lower precedence fills in a field the
// higher one lacks or let go stale, and never mixes with it.
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

// Precedences of the sources the aggregator reads (Sample.Precedence).
const (
	// PrecedenceExporter is dcgm-exporter's: whole-device values stamped
	// with the time the aggregator received them.
	PrecedenceExporter uint8 = 0
	// PrecedenceAgent is the agent's (scraped, or fed in-process in
	// standalone mode): snapshot-timed values, with a pod's own share of a
	// shared device. It outranks dcgm-exporter's.
	PrecedenceAgent uint8 = 1
)

// Sample is one reading of one device (a GPU, or a MIG instance) attributed
// to one pod.
type Sample struct {
	// Namespace and Pod name the pod holding the device (Append). A
	// node sample (AppendNodes) leaves them empty.
	Namespace string
	Pod       string
	// Node names the node the device is on: the key of a node sample
	// (AppendNodes), which carries the whole device's readings whether a
	// pod holds it or not. Append ignores it.
	Node string
	// Container names the container holding the device; the parser joins
	// the names of several containers of the pod holding it (sorted,
	// comma separated). The store ignores it: a pod holding a device
	// through several containers holds it once.
	Container string
	// Device identifies the device: its UUID, with "/<GPU instance id>"
	// appended for a MIG instance (a series carrying GPU_I_ID, whose UUID
	// label is the parent GPU's, as both the agent and dcgm-exporter label
	// it), so that every source gives one instance the same key.
	Device string
	// Time is the real time the reading was taken. A reading whose Time is
	// not after the newest one stored for the same pod, device and
	// precedence is a copy of a snapshot already stored and is skipped.
	Time time.Time
	// Precedence ranks the reading's source (PrecedenceAgent,
	// PrecedenceExporter; higher wins): for each field, a fresh reading
	// of a higher precedence is served instead of any of a lower one,
	// and a device's utilization mean uses only the readings of one
	// precedence. Sources of one precedence share its readings.
	Precedence uint8
	// Present says which of the readings below are set.
	Present Fields
	// Utilization is the pod's utilization of the device in percent
	// (0-100). It is the device's utilization, or, where a source can
	// attribute a shared device's load to the pods sharing it, the pod's
	// own share (the parser decides which reading wins).
	Utilization float64
	// MemoryUsedBytes and MemoryTotalBytes are the device's frame buffer
	// in use (or the pod's own, on a shared device) and in total.
	MemoryUsedBytes  float64
	MemoryTotalBytes float64
	// PowerWatts is the device's power draw.
	PowerWatts float64
}
