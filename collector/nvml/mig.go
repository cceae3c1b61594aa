package nvml

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
)

// migInstances enumerates the MIG devices of GPU parent when it is in MIG
// mode; nil otherwise. The layout is read once: the NVIDIA MIG manager
// stops the GPU's clients (this agent included) while it reconfigures a GPU.
func (b *backend) migInstances(parent *device) []*device {
	h := parent.handle
	current, _, ret := h.GetMigMode()
	if ret != nvml.SUCCESS || current != nvml.DEVICE_MIG_ENABLE {
		if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
			klog.ErrorS(errors.New(nvmlError(ret)), "Cannot read the GPU's MIG mode; treating it as a whole GPU", "uuid", parent.info.UUID)
		}
		return nil
	}
	parent.migEnabled = true
	count, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		klog.ErrorS(errors.New(nvmlError(ret)), "Cannot count the MIG instances of a GPU in MIG mode; they are not reported", "uuid", parent.info.UUID)
		return nil
	}
	activity := b.gpmSupported(parent)
	var total uint64
	if m, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		total = m.Total
	}
	var out []*device
	for i := 0; i < count; i++ {
		mh, ret := h.GetMigDeviceHandleByIndex(i)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue // no instance at this index
		}
		if ret != nvml.SUCCESS {
			klog.ErrorS(errors.New(nvmlError(ret)), "Skipping MIG instance whose handle cannot be read", "gpu", parent.info.UUID, "index", i)
			continue
		}
		d, err := b.identifyMIG(parent, mh, total, activity)
		if err != nil {
			klog.ErrorS(err, "Skipping MIG instance whose identity cannot be read", "gpu", parent.info.UUID, "index", i)
			continue
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *device) int {
		return cmp.Or(cmp.Compare(a.info.MIG.GPUInstance, b.info.MIG.GPUInstance), cmp.Compare(a.info.MIG.ComputeInstance, b.info.MIG.ComputeInstance))
	})
	klog.InfoS("GPU in MIG mode", "uuid", parent.info.UUID, "instances", len(out), "activity", activity)
	return out
}

func (b *backend) identifyMIG(parent *device, h nvml.Device, total uint64, activity bool) (*device, error) {
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("UUID: %s", nvmlError(ret))
	}
	gi, ret := h.GetGpuInstanceId()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("GPU instance id: %s", nvmlError(ret))
	}
	ci, ret := h.GetComputeInstanceId()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("compute instance id: %s", nvmlError(ret))
	}
	d := &device{handle: h, parent: parent, info: parent.info}
	d.info.UUID = uuid
	d.info.MIG = &collector.MIGInstance{
		ParentUUID:      parent.info.UUID,
		GPUInstance:     gi,
		ComputeInstance: ci,
		Profile:         migProfile(parent.handle, h, gi, total),
	}
	d.info.Profiling = false
	if activity {
		g, err := newGPMSampler(b.lib, parent.handle, gi)
		if err != nil {
			klog.ErrorS(err, "MIG instance reports memory only", "uuid", uuid)
		} else {
			d.gpm = g
			d.info.Profiling = true
		}
	}
	return d, nil
}

// migProfile names a GPU instance's profile as NVIDIA does ("3g.40gb",
// "1g.10gb+me"), from the GPU instance profile info. That path needs the
// GPU instance, which NVML may refuse to an unprivileged agent; the MIG
// device's own attributes (slices and memory, no suffix) are the fallback.
// "" when neither answers.
func migProfile(parent, mig nvml.Device, gi int, total uint64) string {
	if inst, ret := parent.GetGpuInstanceById(gi); ret == nvml.SUCCESS {
		if info, ret := inst.GetInfo(); ret == nvml.SUCCESS {
			for p := 0; p < nvml.GPU_INSTANCE_PROFILE_COUNT; p++ {
				pi, ret := parent.GetGpuInstanceProfileInfo(p)
				if ret == nvml.SUCCESS && pi.Id == info.ProfileId {
					return profileName(pi.SliceCount, pi.MemorySizeMB, total) + profileSuffix(p)
				}
			}
		}
	}
	if a, ret := mig.GetAttributes(); ret == nvml.SUCCESS {
		return profileName(a.GpuInstanceSliceCount, a.MemorySizeMB, total)
	}
	return ""
}

// profileName is "<slices>g.<memory>gb". The memory is NVIDIA's rounding:
// the instance's fraction of the GPU's memory rounded up to eighths, times
// the GPU's memory in whole GiB rounded up (an A100 80GB's 7-slice instance
// has 80896 MiB of 81920 and is "7g.80gb", not 79).
func profileName(slices uint32, memMiB, totalBytes uint64) string {
	const gib = 1 << 30
	var gb uint64
	if totalBytes == 0 {
		gb = (memMiB + 1023) / 1024
	} else {
		fraction := math.Ceil(float64(memMiB<<20)/float64(totalBytes)*8) / 8
		gb = uint64(math.Round(fraction * float64((totalBytes+gib-1)/gib)))
	}
	return fmt.Sprintf("%dg.%dgb", slices, gb)
}

// profileSuffix is the media-engine or graphics variant a profile's name
// carries.
func profileSuffix(profile int) string {
	switch profile {
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, nvml.GPU_INSTANCE_PROFILE_2_SLICE_REV1:
		return "+me"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME, nvml.GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME:
		return "+me.all"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_NO_ME, nvml.GPU_INSTANCE_PROFILE_2_SLICE_NO_ME:
		return "-me"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_GFX, nvml.GPU_INSTANCE_PROFILE_2_SLICE_GFX,
		nvml.GPU_INSTANCE_PROFILE_3_SLICE_GFX, nvml.GPU_INSTANCE_PROFILE_4_SLICE_GFX:
		return "+gfx"
	}
	return ""
}

// readMIG reads a MIG instance: its memory, and its profiling fields
// through GPM. Its GPU's whole-GPU fields (power, clocks, temperatures,
// errors) are the GPU's: the sampler gives them to the instance.
func (b *backend) readMIG(d *device) (collector.Reading, error) {
	x := fieldReader{d: d, fields: b.fields}
	x.readMemory()
	if x.err == nil {
		b.readGPM(&x)
	}
	if x.err != nil {
		return collector.Reading{}, x.err
	}
	x.r.Restrict(b.fields)
	return x.r, nil
}
