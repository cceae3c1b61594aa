package app

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestReleasableMappings(t *testing.T) {
	const exe = "/usr/bin/gpu-metrics-server"
	mapping := func(rng, perms, path, anon string) string {
		return rng + " " + perms + " 00000000 fe:00 1108628                           " + path + "\n" +
			"Size:                 68 kB\nRss:                  68 kB\nAnonymous:            " + anon + " kB\nVmFlags: rd mr mw me sd\n"
	}
	for _, tc := range []struct {
		name  string
		smaps string
		want  []memRange
	}{
		{
			name: "code and read-only data of the executable",
			smaps: mapping("00400000-00411000", "r--p", exe, "0") + mapping("00411000-02438000", "r-xp", exe, "0") +
				mapping("02438000-04a8a000", "r--p", exe, "0"),
			want: []memRange{{0x400000, 0x411000}, {0x411000, 0x2438000}, {0x2438000, 0x4a8a000}},
		},
		{
			name: "the relocated read-only page (RELRO) and writable data are kept",
			smaps: mapping("00411000-02438000", "r-xp", exe, "0") + mapping("04a8a000-04a8b000", "r--p", exe, "4") +
				mapping("04a8b000-04b5f000", "rw-p", exe, "0"),
			want: []memRange{{0x411000, 0x2438000}},
		},
		{
			name: "other files, the heap and anonymous mappings are kept",
			smaps: mapping("7f0000000000-7f0000020000", "r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6", "0") +
				mapping("c000000000-c000400000", "rw-p", "", "4096") + mapping("00411000-02438000", "r-xp", exe+" (deleted)", "0"),
		},
		{name: "empty", smaps: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := releasable(strings.NewReader(tc.smaps), exe)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("releasable = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestReleasableBadMapping(t *testing.T) {
	for _, s := range []string{"zz-00411000 r--p 0 fe:00 1 /x\n", "00411000-00400000 r--p 0 fe:00 1 /x\n", "00400000-00411000 r--p\n"} {
		if _, err := releasable(strings.NewReader(s), "/x"); err == nil {
			t.Errorf("releasable(%q): no error", s)
		}
	}
}

// TestReleaseKeepsTheProcessWorking drops this test binary's releasable
// pages, then makes it create OS threads (through the C library when cgo
// is linked in, its calls going through the relocated page that must be
// kept) and run code and read tables it has to fault in again.
func TestReleaseKeepsTheProcessWorking(t *testing.T) {
	if err := releaseExecutablePages(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]string, 8)
	for i := range results {
		wg.Go(func() {
			runtime.LockOSThread() // the thread exits with the goroutine: the next needs a new one
			results[i] = strings.Repeat("ab", i) + strings.ToUpper("x")
		})
	}
	wg.Wait()
	for i, r := range results {
		if want := strings.Repeat("ab", i) + "X"; r != want {
			t.Errorf("result %d = %q, want %q", i, r, want)
		}
	}
	if residentKiB() <= 0 {
		t.Error("no VmRSS read back")
	}
}
