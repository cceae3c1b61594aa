// Package exposition is the contract between the agent and the aggregator:
// the metric families the agent serves on /metrics (dcgm-exporter's names,
// types, help texts and units for the device fields), what the aggregator
// reads from each, and the label names of the series.
//
// Each family is one row of a table. The agent's renderer
// (collector) writes every device field a reading holds, in the table's
// order; the aggregator's parser (metricsapi/scrape) reads the families that
// have a Role. A new device field is one Field constant and its row.
//
// The package is a leaf: it imports nothing of this module.
package exposition

import (
	"math"
)

// Type is a family's Prometheus metric type.
type Type uint8

const (
	Gauge Type = iota
	Counter
)

// String is the type as the text format's TYPE line spells it.
func (t Type) String() string {
	if t == Counter {
		return "counter"
	}
	return "gauge"
}

// Unit is what a family's values measure. A backend gives each value in the
// unit's base (bytes for MiB, the unit itself otherwise); the exposition
// carries it in the unit (FromBase), and the aggregator turns it back
// (ToBase).
type Unit uint8

const (
	// Count is a plain number (an error count, a mode flag).
	Count Unit = iota
	// Percent is 0-100.
	Percent
	// Ratio is 0-1.
	Ratio
	// MiB is whole mebibytes (dcgm-exporter's frame-buffer fields), from
	// bytes.
	MiB
	Bytes
	Watts
	Celsius
	MHz
	Millijoules
	// Seconds is a duration or, for the snapshot timestamp, Unix time.
	Seconds
	// Nanoseconds is a duration (DCGM's violation times).
	Nanoseconds
	// BytesPerSecond is a data rate.
	BytesPerSecond
	// MiBPerSecond is DCGM's NVLink bandwidth unit: KiB per second divided
	// by 1000, as DCGM computes it.
	MiBPerSecond
)

const bytesPerMiB = 1 << 20

// String names the unit as docs/metrics.md does.
func (u Unit) String() string {
	switch u {
	case Percent:
		return "%"
	case Ratio:
		return "ratio"
	case MiB:
		return "MiB"
	case Bytes:
		return "bytes"
	case Watts:
		return "W"
	case Celsius:
		return "°C"
	case MHz:
		return "MHz"
	case Millijoules:
		return "mJ"
	case Seconds:
		return "s"
	case Nanoseconds:
		return "ns"
	case BytesPerSecond:
		return "B/s"
	case MiBPerSecond:
		return "MiB/s"
	}
	return "count"
}

// FromBase converts a value in the unit's base to the unit: bytes to whole
// MiB (rounded down, as dcgm-exporter's integers); other units are their
// own base.
func (u Unit) FromBase(v float64) float64 {
	if u == MiB {
		return math.Floor(v / bytesPerMiB)
	}
	return v
}

// ToBase converts a value in the unit to the unit's base: MiB to bytes.
func (u Unit) ToBase(v float64) float64 {
	if u == MiB {
		return v * bytesPerMiB
	}
	return v
}

// Max is the largest plausible value in the unit: 100 for a percentage, 1
// for a ratio, +Inf otherwise.
func (u Unit) Max() float64 {
	switch u {
	case Percent:
		return 100
	case Ratio:
		return 1
	}
	return math.Inf(1)
}

// Role is what the aggregator reads from a family. Each role is read from
// exactly one family.
type Role uint8

const (
	// RoleNone: the aggregator skips the family without looking at it.
	RoleNone Role = iota
	// RoleUtilization is a device's utilization.
	RoleUtilization
	// RoleEngineActive is the graphics engine's activity: the
	// utilization of a device that has none of its own (a MIG instance).
	RoleEngineActive
	RoleMemoryUsed
	RoleMemoryFree
	// RoleMemoryReserved counts toward the memory total (used + free +
	// reserved).
	RoleMemoryReserved
	RolePower
	// RolePodUtilization and RolePodMemoryUsed are one pod's share of a
	// device several pods hold; they replace the device's values for that
	// pod.
	RolePodUtilization
	RolePodMemoryUsed
	// RoleSampleTime is the time of the agent's snapshot: the samples'
	// time, and the mark of the agent's exposition.
	RoleSampleTime
	NumRoles
)

// Family is one row of the table: a metric family as the exposition carries
// it.
type Family struct {
	Name string
	Type Type
	Help string
	Unit Unit
	// Role is what the aggregator reads from the family.
	Role Role
}
