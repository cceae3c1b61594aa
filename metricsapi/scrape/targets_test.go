package scrape

import "testing"

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
