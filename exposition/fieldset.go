package exposition

const fieldWords = (int(NumFields) + 63) / 64

// FieldSet is a set of device fields. The zero value is empty.
type FieldSet struct {
	bits [fieldWords]uint64
}

// FieldsOf returns the set of fs.
func FieldsOf(fs ...Field) FieldSet {
	var s FieldSet
	for _, f := range fs {
		s.Add(f)
	}
	return s
}

// Add adds f to s.
func (s *FieldSet) Add(f Field) { s.bits[f/64] |= 1 << (f % 64) }

// AddAll adds every field of o to s.
func (s *FieldSet) AddAll(o FieldSet) {
	for i := range s.bits {
		s.bits[i] |= o.bits[i]
	}
}

// Intersect returns the fields in both s and o.
func (s FieldSet) Intersect(o FieldSet) FieldSet {
	for i := range s.bits {
		s.bits[i] &= o.bits[i]
	}
	return s
}

// Remove removes every field of o from s.
func (s *FieldSet) Remove(o FieldSet) {
	for i := range s.bits {
		s.bits[i] &^= o.bits[i]
	}
}

// Has reports whether f is in s.
func (s FieldSet) Has(f Field) bool { return s.bits[f/64]&(1<<(f%64)) != 0 }

// Intersects reports whether s and o have a field in common.
func (s FieldSet) Intersects(o FieldSet) bool {
	for i := range s.bits {
		if s.bits[i]&o.bits[i] != 0 {
			return true
		}
	}
	return false
}

// Contains reports whether every field of o is in s.
func (s FieldSet) Contains(o FieldSet) bool {
	for i := range s.bits {
		if s.bits[i]&o.bits[i] != o.bits[i] {
			return false
		}
	}
	return true
}

// String lists the fields' family names, for messages.
func (s FieldSet) String() string {
	out := "{"
	for f := range NumFields {
		if s.Has(f) {
			if len(out) > 1 {
				out += " "
			}
			out += f.Name()
		}
	}
	return out + "}"
}
