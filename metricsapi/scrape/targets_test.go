package scrape

import (
	"strings"
	"testing"
)

func TestNewStaticTargets(t *testing.T) {
	for _, tt := range []struct {
		raw, wantURL string
		wantErr      bool
	}{
		{"http://node-1:9400", "http://node-1:9400/metrics", false},
		{"http://node-1:9400/metrics", "http://node-1:9400/metrics", false},
		{"https://10.0.0.1:9400/", "https://10.0.0.1:9400/", false}, // a path given, if only /, is kept
		{"http://node-1:9400/custom/path", "http://node-1:9400/custom/path", false},
		{"http://node-1:9400?x=1", "http://node-1:9400/metrics?x=1", false},
		{"http://[::1]:9400", "http://[::1]:9400/metrics", false},
		{"ftp://node-1:9400", "", true},
		{"http://", "", true},
		{"node-1:9400", "", true},
		{"http://node-1:9400/%zz", "", true},
	} {
		got, err := NewStaticTargets([]string{tt.raw})
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v, want error %v", tt.raw, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if len(got) != 1 || got[0].URL != tt.wantURL || got[0].Name != tt.raw {
			t.Errorf("%q: %+v, want URL %q named as given", tt.raw, got, tt.wantURL)
		}
	}
}

func TestStaticTargetsAskingFor(t *testing.T) {
	for _, tt := range []struct {
		raw      string
		families []string
		wantURL  string
	}{
		{"http://node-1:9400", []string{"A", "b_c"}, "http://node-1:9400/metrics?name%5B%5D=A&name%5B%5D=b_c"},
		{"http://node-1:9400/custom", []string{"A"}, "http://node-1:9400/custom?name%5B%5D=A"},
		{"http://node-1:9400?x=1", []string{"A"}, "http://node-1:9400/metrics?x=1"}, // a query of its own wins
		{"http://node-1:9400/metrics?", []string{"A"}, "http://node-1:9400/metrics?"},
		{"http://node-1:9400", nil, "http://node-1:9400/metrics"},
	} {
		st, err := NewStaticTargets([]string{tt.raw})
		if err != nil {
			t.Fatal(err)
		}
		got := st.AskingFor(tt.families)
		if len(got) != 1 || got[0].URL != tt.wantURL || got[0].Name != tt.raw {
			t.Errorf("%q asking for %v: %+v, want URL %q named as given", tt.raw, tt.families, got, tt.wantURL)
		}
		if st[0].URL == tt.wantURL && tt.families != nil && !strings.Contains(tt.raw, "?") {
			t.Errorf("%q: AskingFor changed the targets it was called on", tt.raw)
		}
	}
}
