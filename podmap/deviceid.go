package podmap

import (
	"errors"
	"fmt"
	"strings"
)

// IDForm says which of the known forms a kubelet device ID was written in.
type IDForm uint8

// The device-ID forms that device plugins hand to the kubelet.
const (
	// FormUUID is NVIDIA's device plugin with the default uuid strategy:
	// "GPU-<uuid>" for a full GPU, "MIG-<uuid>" for a MIG instance, either
	// optionally followed by "::<n>" for a time-slicing replica.
	FormUUID IDForm = iota + 1
	// FormLegacyMIG is the MIG UUID of drivers before R470,
	// "MIG-GPU-<uuid>/<gi>/<ci>", optionally followed by "::<n>".
	FormLegacyMIG
	// FormMinor is GKE's device plugin: "nvidia<minor>" for a full GPU,
	// "nvidia<minor>/gi<gi>" for a MIG GPU instance, either optionally
	// followed by "/vgpu<n>" for a time-sharing replica.
	FormMinor
)

// String returns the form's name.
func (f IDForm) String() string {
	switch f {
	case FormUUID:
		return "uuid"
	case FormLegacyMIG:
		return "legacy-mig"
	case FormMinor:
		return "minor"
	}
	return fmt.Sprintf("IDForm(%d)", uint8(f))
}

// DeviceID is a parsed kubelet device ID.
type DeviceID struct {
	Form IDForm
	// UUID is the device's UUID ("GPU-…" or "MIG-…") for FormUUID, the
	// parent GPU's UUID ("GPU-…") for FormLegacyMIG, "" for FormMinor.
	UUID string
	// Minor is the /dev/nvidia<minor> number for FormMinor, -1 otherwise.
	Minor int
	// GPUInstance is the MIG GPU instance id (FormLegacyMIG, or FormMinor
	// with a "/gi<n>" part), -1 otherwise.
	GPUInstance int
	// ComputeInstance is the MIG compute instance id for FormLegacyMIG,
	// -1 otherwise.
	ComputeInstance int
	// Replica is the time-slicing replica number as written in the ID
	// (decimal digits), "" when the device is not shared.
	Replica string
}

// ErrUnknownDeviceID is wrapped by every error ParseDeviceID returns.
var ErrUnknownDeviceID = errors.New("unknown device-ID form")

const (
	// maxDeviceIDLen bounds the IDs considered at all; real ones are under
	// 100 bytes.
	maxDeviceIDLen = 256
	// maxErrorIDLen bounds how much of a bad ID an error message quotes.
	maxErrorIDLen = 80
	// maxNumberDigits bounds every decimal number in an ID (minor, GPU and
	// compute instance, replica), so that none can overflow an int.
	maxNumberDigits = 6
	// maxUUIDBodyLen bounds the part after "GPU-" or "MIG-" (36 in
	// practice).
	maxUUIDBodyLen = 64

	replicaSep  = "::"
	minorPrefix = "nvidia"
	giPrefix    = "gi"
	vgpuPrefix  = "vgpu"
	gpuPrefix   = "GPU-"
	migPrefix   = "MIG-"
)

// ParseDeviceID parses a device ID as the kubelet's pod-resources API
// reports it. An ID in none of the known forms gives an error wrapping
// ErrUnknownDeviceID and a zero DeviceID.
func ParseDeviceID(id string) (DeviceID, error) {
	if id == "" {
		return DeviceID{}, badID(id, "empty")
	}
	if len(id) > maxDeviceIDLen {
		return DeviceID{}, badID(id, fmt.Sprintf("longer than %d bytes", maxDeviceIDLen))
	}
	switch {
	case strings.HasPrefix(id, migPrefix+gpuPrefix):
		return parseLegacyMIG(id)
	case strings.HasPrefix(id, gpuPrefix), strings.HasPrefix(id, migPrefix):
		return parseUUIDForm(id)
	case strings.HasPrefix(id, minorPrefix):
		return parseMinorForm(id)
	}
	return DeviceID{}, badID(id, `not a "GPU-", "MIG-" or "nvidia<minor>" ID`)
}

// parseUUIDForm parses "GPU-<uuid>[::<n>]" and "MIG-<uuid>[::<n>]".
func parseUUIDForm(id string) (DeviceID, error) {
	base, replica, err := splitReplica(id)
	if err != nil {
		return DeviceID{}, err
	}
	if !validUUID(base) {
		return DeviceID{}, badID(id, "malformed UUID")
	}
	return DeviceID{Form: FormUUID, UUID: base, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: replica}, nil
}

// parseLegacyMIG parses "MIG-GPU-<uuid>/<gi>/<ci>[::<n>]".
func parseLegacyMIG(id string) (DeviceID, error) {
	base, replica, err := splitReplica(id)
	if err != nil {
		return DeviceID{}, err
	}
	parent, rest, ok := strings.Cut(strings.TrimPrefix(base, migPrefix), "/")
	if !ok || !validUUID(parent) {
		return DeviceID{}, badID(id, "malformed legacy MIG ID, want MIG-GPU-<uuid>/<gi>/<ci>")
	}
	giText, ciText, ok := strings.Cut(rest, "/")
	gi, giOK := parseNumber(giText)
	ci, ciOK := parseNumber(ciText)
	if !ok || !giOK || !ciOK {
		return DeviceID{}, badID(id, "malformed legacy MIG ID, want MIG-GPU-<uuid>/<gi>/<ci>")
	}
	return DeviceID{Form: FormLegacyMIG, UUID: parent, Minor: -1, GPUInstance: gi, ComputeInstance: ci, Replica: replica}, nil
}

// parseMinorForm parses "nvidia<minor>[/gi<gi>][/vgpu<n>]".
func parseMinorForm(id string) (DeviceID, error) {
	const want = "want nvidia<minor>[/gi<gi>][/vgpu<n>]"
	parts := strings.Split(id, "/")
	if len(parts) > 3 {
		return DeviceID{}, badID(id, want)
	}
	minor, ok := parseNumber(strings.TrimPrefix(parts[0], minorPrefix))
	if !ok {
		return DeviceID{}, badID(id, want)
	}
	d := DeviceID{Form: FormMinor, Minor: minor, GPUInstance: -1, ComputeInstance: -1}
	rest := parts[1:]
	if len(rest) > 0 && strings.HasPrefix(rest[0], giPrefix) {
		gi, ok := parseNumber(strings.TrimPrefix(rest[0], giPrefix))
		if !ok {
			return DeviceID{}, badID(id, want)
		}
		d.GPUInstance = gi
		rest = rest[1:]
	}
	if len(rest) > 0 {
		replica := strings.TrimPrefix(rest[0], vgpuPrefix)
		if len(rest) > 1 || replica == rest[0] || !isNumber(replica) {
			return DeviceID{}, badID(id, want)
		}
		d.Replica = replica
	}
	return d, nil
}

// splitReplica splits a "::<n>" time-slicing suffix off id.
func splitReplica(id string) (base, replica string, err error) {
	base, replica, found := strings.Cut(id, replicaSep)
	if found && !isNumber(replica) {
		return "", "", badID(id, `replica after "::" is not a decimal number`)
	}
	return base, replica, nil
}

// validUUID reports whether s is "GPU-" or "MIG-" followed by groups of
// hex digits separated by single dashes.
func validUUID(s string) bool {
	body, ok := strings.CutPrefix(s, gpuPrefix)
	if !ok {
		body, ok = strings.CutPrefix(s, migPrefix)
	}
	if !ok || body == "" || len(body) > maxUUIDBodyLen {
		return false
	}
	prevDash := true // no leading dash
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '-':
			if prevDash {
				return false
			}
			prevDash = true
		case isHex(c):
			prevDash = false
		default:
			return false
		}
	}
	return !prevDash // no trailing dash
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isNumber reports whether s is 1 to maxNumberDigits decimal digits.
func isNumber(s string) bool {
	if s == "" || len(s) > maxNumberDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseNumber parses 1 to maxNumberDigits decimal digits.
func parseNumber(s string) (int, bool) {
	if !isNumber(s) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func badID(id, reason string) error {
	if len(id) > maxErrorIDLen {
		id = id[:maxErrorIDLen] + "…"
	}
	return fmt.Errorf("%w %q: %s", ErrUnknownDeviceID, id, reason)
}
