package podinfo

import "testing"

func TestStatic(t *testing.T) {
	s := Static{"ml/train-0": "uid-a"}
	tests := []struct {
		namespace, name string
		want            string
		wantOK          bool
	}{
		{"ml", "train-0", "uid-a", true},
		{"ml", "train-1", "", false},
		{"ml/train-0", "", "", false},
	}
	for _, tt := range tests {
		got, ok := s.UID(tt.namespace, tt.name)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("UID(%q, %q) = %q %v, want %q %v", tt.namespace, tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
