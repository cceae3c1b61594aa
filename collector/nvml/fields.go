package nvml

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// fieldValue is an NVML field value that supplies a device field: directly,
// or as a counter whose rate between two rounds is the field (rate: the
// counters of one field are summed, then divided by the seconds between
// their timestamps, times scale).
type fieldValue struct {
	field exposition.Field
	id    uint32
	scope uint32
	rate  bool
	scale float64
}

// allLinks is the scope of an NVLink field value over every link of the
// GPU, as DCGM asks it.
const allLinks = math.MaxUint32

// fieldValues are the device fields read through nvmlDeviceGetFieldValues:
// one call per GPU per round for all of them.
var fieldValues = []fieldValue{
	{field: exposition.MemoryTemp, id: nvml.FI_DEV_MEMORY_TEMP},
	{field: exposition.TotalEnergy, id: nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION},
	{field: exposition.PCIeReplayCounter, id: nvml.FI_DEV_PCIE_REPLAY_COUNTER},
	{field: exposition.PowerViolation, id: nvml.FI_DEV_PERF_POLICY_POWER},
	{field: exposition.ThermalViolation, id: nvml.FI_DEV_PERF_POLICY_THERMAL},
	{field: exposition.SyncBoostViolation, id: nvml.FI_DEV_PERF_POLICY_SYNC_BOOST},
	{field: exposition.BoardLimitViolation, id: nvml.FI_DEV_PERF_POLICY_BOARD_LIMIT},
	{field: exposition.LowUtilViolation, id: nvml.FI_DEV_PERF_POLICY_LOW_UTILIZATION},
	{field: exposition.ReliabilityViolation, id: nvml.FI_DEV_PERF_POLICY_RELIABILITY},
	{field: exposition.ECCSBEVolatileTotal, id: nvml.FI_DEV_ECC_SBE_VOL_TOTAL},
	{field: exposition.ECCDBEVolatileTotal, id: nvml.FI_DEV_ECC_DBE_VOL_TOTAL},
	{field: exposition.ECCSBEAggregateTotal, id: nvml.FI_DEV_ECC_SBE_AGG_TOTAL},
	{field: exposition.ECCDBEAggregateTotal, id: nvml.FI_DEV_ECC_DBE_AGG_TOTAL},
	{field: exposition.RetiredPagesSBE, id: nvml.FI_DEV_RETIRED_SBE},
	{field: exposition.RetiredPagesDBE, id: nvml.FI_DEV_RETIRED_DBE},
	{field: exposition.RetiredPagesPending, id: nvml.FI_DEV_RETIRED_PENDING},
	{field: exposition.NVLinkCRCFlitErrors, id: nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL},
	{field: exposition.NVLinkCRCDataErrors, id: nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL},
	{field: exposition.NVLinkReplayErrors, id: nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL},
	{field: exposition.NVLinkRecoveryErrors, id: nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL},
	// DCGM's NVLink bandwidth: the data bytes of every link in both
	// directions (KiB) per second between two readings, divided by 1000.
	{field: exposition.NVLinkBandwidthTotal, id: nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, scope: allLinks, rate: true, scale: 1.0 / 1000},
	{field: exposition.NVLinkBandwidthTotal, id: nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, scope: allLinks, rate: true, scale: 1.0 / 1000},
	{field: exposition.UncorrectableRemappedRows, id: nvml.FI_DEV_REMAPPED_UNC},
	{field: exposition.CorrectableRemappedRows, id: nvml.FI_DEV_REMAPPED_COR},
	{field: exposition.RowRemapFailure, id: nvml.FI_DEV_REMAPPED_FAILURE},
	// The PCIe rates of a GPU without GPM: its byte counters between
	// two rounds.
	{field: exposition.PCIeTXBytes, id: nvml.FI_DEV_PCIE_COUNT_TX_BYTES, rate: true, scale: 1},
	{field: exposition.PCIeRXBytes, id: nvml.FI_DEV_PCIE_COUNT_RX_BYTES, rate: true, scale: 1},
}

// slowFields are read at most every Options.SlowInterval, their last
// reading carried in between: counters and states that change rarely or
// slowly, some costly to read (on an H200, driver 580, the energy counter
// alone takes 4.2 ms of CPU, the thermal violation time 0.7 ms, where a
// round's other calls take microseconds: docs/gpu-smoke.md). None is a
// rate: a rate needs both of its readings from the same cadence.
var slowFields = exposition.FieldsOf(
	exposition.TotalEnergy, exposition.PCIeReplayCounter,
	exposition.PowerViolation, exposition.ThermalViolation, exposition.SyncBoostViolation,
	exposition.BoardLimitViolation, exposition.LowUtilViolation, exposition.ReliabilityViolation,
	exposition.ECCSBEVolatileTotal, exposition.ECCDBEVolatileTotal,
	exposition.ECCSBEAggregateTotal, exposition.ECCDBEAggregateTotal,
	exposition.RetiredPagesSBE, exposition.RetiredPagesDBE, exposition.RetiredPagesPending,
	exposition.NVLinkCRCFlitErrors, exposition.NVLinkCRCDataErrors,
	exposition.NVLinkReplayErrors, exposition.NVLinkRecoveryErrors,
	exposition.UncorrectableRemappedRows, exposition.CorrectableRemappedRows, exposition.RowRemapFailure,
	exposition.VGPULicenseStatus,
)

// slowDue reports whether a round at now reads the slow fields: the first
// round, every interval after the last read, and when the clock went back.
func (d *device) slowDue(now time.Time, interval time.Duration) bool {
	return interval <= 0 || d.slowAt.IsZero() || now.Sub(d.slowAt) >= interval || now.Before(d.slowAt)
}

// keepOrCarrySlow ends a successful round: one that read the slow fields
// keeps their values for the rounds until the next read; any other carries
// the last read values (a field absent from that read stays absent).
func (x *fieldReader) keepOrCarrySlow(now time.Time) {
	d := x.d
	if x.slowDue {
		d.slow, d.slowAt = x.r, now
		d.slow.Restrict(slowFields)
		return
	}
	for f := range exposition.NumFields {
		if v, ok := d.slow.Get(f); ok && slowFields.Has(f) {
			x.r.Set(f, v)
		}
	}
}

// nvlinkFields are the fields only a GPU with NVLink has: on one without,
// they are absent (not 0), whatever the driver answers for them.
var nvlinkFields = exposition.FieldsOf(exposition.NVLinkCRCFlitErrors, exposition.NVLinkCRCDataErrors,
	exposition.NVLinkReplayErrors, exposition.NVLinkRecoveryErrors, exposition.NVLinkBandwidthTotal)

// linkState is what a GPU's batch knows of its NVLinks.
type linkState uint8

const (
	// linksUnknown: not asked yet, or the answer failed: the link count
	// rides along with the next request that asks an NVLink field.
	linksUnknown linkState = iota
	linksPresent
	linksAbsent
)

// fieldValueFields are the fields fieldValues supply.
var fieldValueFields = func() (s exposition.FieldSet) {
	for _, v := range fieldValues {
		s.Add(v.field)
	}
	return s
}()

// counterState is a rate field's counters, summed, at the previous round.
type counterState struct {
	sum  float64
	usec int64
	have bool
}

// rateAcc sums a rate field's counters within a round.
type rateAcc struct {
	sum    float64
	usec   int64
	scale  float64
	n      int
	failed bool
}

// fieldBatch is one GPU's nvmlDeviceGetFieldValues request, rebuilt when
// the fields it asks change (a field answering NOT_SUPPORTED is dropped),
// and the state of its rate fields.
type fieldBatch struct {
	// fields are the fields asked; req and from are parallel: the NVML
	// field value and the fieldValues entry it came from.
	// from[i] is -1 for the NVLink link count.
	fields exposition.FieldSet
	req    []nvml.FieldValue
	from   []int
	links  linkState
	prev   [exposition.NumFields]counterState
	acc    [exposition.NumFields]rateAcc
}

// build prepares the request for the fields of want that fieldValues
// supply.
func (fb *fieldBatch) build(want exposition.FieldSet) {
	want = want.Intersect(fieldValueFields)
	if fb.req != nil && want == fb.fields {
		return
	}
	fb.fields = want
	fb.req, fb.from = make([]nvml.FieldValue, 0, len(fieldValues)+1), fb.from[:0]
	if fb.links == linksUnknown && want.Intersects(nvlinkFields) {
		// First, so that the NVLink fields after it are dropped in the
		// round that finds the GPU has no NVLink.
		fb.req = append(fb.req, nvml.FieldValue{FieldId: nvml.FI_DEV_NVLINK_LINK_COUNT})
		fb.from = append(fb.from, -1)
	}
	for i, v := range fieldValues {
		if want.Has(v.field) {
			fb.req = append(fb.req, nvml.FieldValue{FieldId: v.id, ScopeId: v.scope})
			fb.from = append(fb.from, i)
		}
	}
}

// readFieldValues reads the GPU's field values of want in one call; now
// stamps the counters whose value NVML does not time.
func (x *fieldReader) readFieldValues(want exposition.FieldSet, now time.Time) {
	d := x.d
	want.Remove(d.unsupported)
	if !x.slowDue {
		want.Remove(slowFields)
	}
	if d.gpm != nil {
		// GPM supplies the PCIe rates.
		want.Remove(gpmFields)
	}
	fb := &d.batch
	fb.build(want)
	if len(fb.req) == 0 {
		return
	}
	for i := range fb.req {
		// The request is reused: clear last round's answers.
		fb.req[i] = nvml.FieldValue{FieldId: fb.req[i].FieldId, ScopeId: fb.req[i].ScopeId}
	}
	if !x.checkSet("field values", d.handle.GetFieldValues(fb.req), fb.fields) {
		return
	}
	clear(fb.acc[:])
	for i := range fb.req {
		if fb.from[i] < 0 {
			if !x.linkCount(&fb.req[i]) {
				return
			}
			continue
		}
		fv, spec := &fb.req[i], &fieldValues[fb.from[i]]
		if d.unsupported.Has(spec.field) {
			continue // an NVLink field of a GPU found without NVLink
		}
		acc := &fb.acc[spec.field]
		switch ret := nvml.Return(fv.NvmlReturn); ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_INVALID_ARGUMENT:
			// The driver does not have the field for this GPU (or does
			// not know it).
			d.unsupported.Add(spec.field)
			acc.failed = true
			continue
		case nvml.ERROR_GPU_IS_LOST:
			x.check("field value", ret)
			return
		default:
			// Absent this round; the other fields stand.
			acc.failed = true
			continue
		}
		v, ok := fieldFloat(fv)
		switch {
		case !ok:
			acc.failed = true
		case !spec.rate:
			x.r.Set(spec.field, v)
		default:
			usec := fv.Timestamp
			if usec <= 0 {
				usec = now.UnixMicro()
			}
			acc.sum += v
			acc.usec = max(acc.usec, usec)
			acc.scale = spec.scale
			acc.n++
		}
	}
	if fb.links != linksUnknown && fb.from[0] < 0 {
		fb.req = nil // known: rebuilt without the count
	}
	for f := range exposition.NumFields {
		acc := &fb.acc[f]
		if acc.n == 0 && !acc.failed {
			continue
		}
		if acc.failed {
			fb.prev[f] = counterState{}
			continue
		}
		if v, ok := fb.rate(f, acc); ok {
			x.r.Set(f, v)
		}
	}
}

// linkCount reads the GPU's NVLink count from its answer in the batch: a
// GPU without NVLink (0 links, or the count not supported) has no NVLink
// fields from now on, logged once. False when the GPU is lost.
func (x *fieldReader) linkCount(fv *nvml.FieldValue) bool {
	fb := &x.d.batch
	switch ret := nvml.Return(fv.NvmlReturn); ret {
	case nvml.SUCCESS:
		if n, ok := fieldFloat(fv); !ok {
			return true // unreadable: asked again next round
		} else if n > 0 {
			fb.links = linksPresent
		} else {
			fb.links = linksAbsent
		}
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_INVALID_ARGUMENT:
		fb.links = linksAbsent
	case nvml.ERROR_GPU_IS_LOST:
		x.check("NVLink count", ret)
		return false
	default:
		return true // asked again next round
	}
	if fb.links == linksAbsent {
		x.d.unsupported.AddAll(nvlinkFields)
		klog.InfoS("GPU has no NVLink: its NVLink fields are absent", "uuid", x.d.info.UUID)
	}
	return true
}

// rate turns a rate field's counters into its rate since the previous
// round: false on the first round, when time did not advance, or when a
// counter went backwards (wrapped or reset): the next round has a rate
// again.
func (fb *fieldBatch) rate(f exposition.Field, acc *rateAcc) (float64, bool) {
	prev := fb.prev[f]
	fb.prev[f] = counterState{sum: acc.sum, usec: acc.usec, have: true}
	if !prev.have || acc.usec <= prev.usec || acc.sum < prev.sum {
		return 0, false
	}
	return (acc.sum - prev.sum) / (float64(acc.usec-prev.usec) / 1e6) * acc.scale, true
}

// fieldFloat decodes a field value's union by its type.
func fieldFloat(v *nvml.FieldValue) (float64, bool) {
	b := v.Value[:]
	switch nvml.ValueType(v.ValueType) {
	case nvml.VALUE_TYPE_DOUBLE:
		f := math.Float64frombits(binary.NativeEndian.Uint64(b))
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(binary.NativeEndian.Uint32(b)), true
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return float64(binary.NativeEndian.Uint64(b)), true
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(binary.NativeEndian.Uint64(b))), true
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(binary.NativeEndian.Uint32(b))), true
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return float64(binary.NativeEndian.Uint16(b)), true
	}
	return 0, false
}

// readLicense reads a vGPU guest's license status: 1 when the vGPU feature
// is licensed, 0 when it is not. A GPU without licensing (bare metal, a
// passthrough VM: NVML answers with no licensing, as an H200 does) has no
// license status: the field is absent there and not asked again.
func (x *fieldReader) readLicense() {
	if !x.slowDue || !x.want(exposition.VGPULicenseStatus) {
		return
	}
	lf, ret := x.d.handle.GetGridLicensableFeatures()
	if !x.check("licensable features", ret, exposition.VGPULicenseStatus) {
		return
	}
	if lf.IsGridLicenseSupported == 0 {
		x.d.unsupported.Add(exposition.VGPULicenseStatus)
		return
	}
	for i := 0; i < int(min(lf.LicensableFeaturesCount, uint32(len(lf.GridLicensableFeatures)))); i++ {
		if f := lf.GridLicensableFeatures[i]; nvml.GridLicenseFeatureCode(f.FeatureCode) == nvml.GRID_LICENSE_FEATURE_CODE_VGPU {
			v := 0.0
			if f.FeatureState > 0 {
				v = 1
			}
			x.r.Set(exposition.VGPULicenseStatus, v)
			return
		}
	}
}
