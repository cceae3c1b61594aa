package nvml

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// systemLabels reads the label fields of the whole system (driver and
// NVML versions) in want; a version NVML does not give is "".
func systemLabels(lib nvml.Interface, want exposition.LabelSet) (out [exposition.NumLabelFields]string) {
	if want.Has(exposition.DriverVersionLabel) {
		if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
			out[exposition.DriverVersionLabel] = v
		}
	}
	if want.Has(exposition.NVMLVersionLabel) {
		if v, ret := lib.SystemGetNVMLVersion(); ret == nvml.SUCCESS {
			out[exposition.NVMLVersionLabel] = v
		}
	}
	return out
}

// deviceLabels reads a GPU's label fields in want into labels; one NVML
// does not give stays "" (absent). They are read once: none changes while
// the driver is loaded.
func deviceLabels(h nvml.Device, want exposition.LabelSet, labels *[exposition.NumLabelFields]string) {
	str := func(l exposition.LabelField, read func() (string, nvml.Return)) {
		if want.Has(l) {
			if v, ret := read(); ret == nvml.SUCCESS {
				labels[l] = v
			}
		}
	}
	str(exposition.SerialLabel, h.GetSerial)
	str(exposition.VBIOSVersionLabel, h.GetVbiosVersion)
	str(exposition.InforomImageVersionLabel, h.GetInforomImageVersion)
	str(exposition.OEMInforomVersionLabel, func() (string, nvml.Return) { return h.GetInforomVersion(nvml.INFOROM_OEM) })
	str(exposition.ECCInforomVersionLabel, func() (string, nvml.Return) { return h.GetInforomVersion(nvml.INFOROM_ECC) })
	str(exposition.PowerInforomVersionLabel, func() (string, nvml.Return) { return h.GetInforomVersion(nvml.INFOROM_POWER) })
	str(exposition.BrandLabel, func() (string, nvml.Return) {
		b, ret := h.GetBrand()
		return brandName(b), ret
	})
}

// brandName names an NVML brand as DCGM's DCGM_FI_DEV_BRAND does.
func brandName(b nvml.BrandType) string {
	switch b {
	case nvml.BRAND_QUADRO:
		return "Quadro"
	case nvml.BRAND_TESLA:
		return "Tesla"
	case nvml.BRAND_NVS:
		return "NVS"
	case nvml.BRAND_GRID:
		return "Grid"
	case nvml.BRAND_GEFORCE:
		return "GeForce"
	case nvml.BRAND_TITAN:
		return "Titan"
	case nvml.BRAND_NVIDIA_VAPPS:
		return "NVIDIA Virtual Applications"
	case nvml.BRAND_NVIDIA_VPC:
		return "NVIDIA Virtual PC"
	case nvml.BRAND_NVIDIA_VCS:
		return "NVIDIA Virtual Compute Server"
	case nvml.BRAND_NVIDIA_VWS:
		return "NVIDIA RTX Virtual Workstation"
	case nvml.BRAND_NVIDIA_VGAMING:
		return "NVIDIA vGaming"
	case nvml.BRAND_QUADRO_RTX:
		return "Quadro RTX"
	case nvml.BRAND_NVIDIA_RTX:
		return "NVIDIA RTX"
	case nvml.BRAND_NVIDIA:
		return "NVIDIA"
	case nvml.BRAND_GEFORCE_RTX:
		return "GeForce RTX"
	case nvml.BRAND_TITAN_RTX:
		return "Titan RTX"
	}
	return "Unknown"
}
