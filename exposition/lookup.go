package exposition

import "encoding/binary"

// roleIndex finds the families the aggregator reads by name with a perfect
// hash of a name's length and last eight bytes: a lookup is one word
// comparison for the names it rejects, one name comparison for those it
// finds, and never allocates. Built once from the tables.
var roleIndex, roleFamilies = buildRoleIndex()

// minNameLen is the shortest name the index can hold: every family name is
// longer (TestTable).
const minNameLen = 8

const hashBits = 6 // slots: several times the families read, so a multiplier is found at once

type roleEntry struct {
	tail uint64
	name string
	role Role
}

type roleTable struct {
	mul   uint64
	slots [1 << hashBits]roleEntry
}

func (t *roleTable) slot(tail uint64, n int) *roleEntry {
	return &t.slots[((tail^uint64(n))*t.mul)>>(64-hashBits)]
}

func buildRoleIndex() (*roleTable, [NumRoles]Family) {
	var read []Family
	var byRole [NumRoles]Family
	all := append([]Family(nil), agentFamilies[:]...)
	for f := range NumFields {
		all = append(all, f.Family())
	}
	for _, fam := range all {
		if fam.Role != RoleNone {
			read = append(read, fam)
			byRole[fam.Role] = fam
		}
	}
	// The first odd multiplier (from the golden ratio's) that sends every
	// family to a slot of its own.
	for mul := uint64(0x9e3779b97f4a7c15); ; mul += 2 {
		t := &roleTable{mul: mul}
		ok := true
		for _, fam := range read {
			tail := binary.LittleEndian.Uint64([]byte(fam.Name[len(fam.Name)-8:]))
			e := t.slot(tail, len(fam.Name))
			if e.name != "" {
				ok = false
				break
			}
			*e = roleEntry{tail: tail, name: fam.Name, role: fam.Role}
		}
		if ok {
			return t, byRole
		}
	}
}

// RoleOf returns the role of the family named name; false for a family the
// aggregator does not read. It does not allocate.
func RoleOf(name []byte) (Role, bool) {
	if len(name) < minNameLen {
		return RoleNone, false
	}
	tail := binary.LittleEndian.Uint64(name[len(name)-8:])
	e := roleIndex.slot(tail, len(name))
	if e.tail != tail || e.name != string(name) {
		return RoleNone, false
	}
	return e.role, true
}

// Family returns the family the aggregator reads r from.
func (r Role) Family() Family { return roleFamilies[r] }

// ReadFamilies returns the names of the families the aggregator reads, one
// per role, in the order of the roles: what it asks an agent for with
// FamilyParam.
func ReadFamilies() []string {
	names := make([]string, 0, NumRoles-1)
	for r := RoleNone + 1; r < NumRoles; r++ {
		names = append(names, r.Family().Name)
	}
	return names
}

// FamilyParam is the /metrics query parameter of the agent naming a family
// to serve: `/metrics?name[]=DCGM_FI_DEV_GPU_UTIL&name[]=DCGM_FI_DEV_FB_USED`
// serves only those families, in the order of the whole body, with their
// HELP and TYPE lines. The aggregator asks the agents for the families it
// reads (ReadFamilies); a Prometheus scrape may ask for the ones it keeps
// (`params` in its scrape config). An exposition that does not know the
// parameter (dcgm-exporter, an older agent) ignores it and serves every
// family, which the aggregator skips as before.
const FamilyParam = "name[]"
