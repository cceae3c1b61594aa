//go:build e2e

package framework

import "testing"

// TestFreePorts: ports come from below the ephemeral range and are never
// handed out twice, across calls.
func TestFreePorts(t *testing.T) {
	eph := ephemeralLow()
	seen := map[int]bool{}
	for _, n := range []int{1, 5, 2, 20} {
		got, err := FreePorts(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("FreePorts(%d) = %v", n, got)
		}
		for _, p := range got {
			if p < lowestPort || p >= eph {
				t.Errorf("port %d outside [%d, %d)", p, lowestPort, eph)
			}
			if seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}
