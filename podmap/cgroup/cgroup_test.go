package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	fixtureUID       = "0f5c3c0e-8a3b-4a51-9a77-2b1d6c9e4f10"
	fixtureContainer = "4b8e1f2a9c3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"
)

// TestParseFixtures parses every file under testdata/cgroup: one per
// runtime, cgroup driver and cgroup version, as the kernel writes them.
func TestParseFixtures(t *testing.T) {
	pod := Info{PodUID: fixtureUID, ContainerID: fixtureContainer}
	podOnly := Info{PodUID: fixtureUID}
	tests := []struct {
		file    string
		want    Info
		wantErr string
	}{
		{file: "v2-systemd-containerd-burstable.txt", want: pod},
		{file: "v2-systemd-containerd-guaranteed.txt", want: pod},
		{file: "v2-systemd-crio-besteffort.txt", want: pod},
		{file: "v2-systemd-crio-conmon.txt", want: podOnly},
		{file: "v2-systemd-docker.txt", want: pod},
		{file: "v2-systemd-pod-level.txt", want: podOnly},
		{file: "v2-cgroupfs-containerd.txt", want: pod},
		{file: "v2-cgroupns-relative.txt", want: pod},
		{file: "v2-kind-nested.txt", want: pod},
		{file: "v1-cgroupfs-docker.txt", want: pod},
		{file: "v1-cgroupfs-crio.txt", want: pod},
		{file: "v1-systemd-containerd.txt", want: pod},
		{file: "hybrid-systemd-containerd.txt", want: pod},
		{file: "v2-host-service.txt"},
		{file: "v2-host-init.txt"},
		{file: "v1-host-user.txt"},
		{file: "v2-not-a-uid.txt"},
		{file: "malformed-no-path.txt", wantErr: "no controller list"},
		{file: "malformed-relative-path.txt", wantErr: "not absolute"},
		{file: "malformed-empty.txt", wantErr: "empty"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "cgroup", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "cgroup", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("fixture %s has no expectation", f)
		}
	}
}

func TestParseLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Info
		wantErr bool
	}{
		{name: "upper-case UID is canonicalised", in: "0::/kubepods/pod0F5C3C0E-8A3B-4A51-9A77-2B1D6C9E4F10/" + fixtureContainer,
			want: Info{PodUID: fixtureUID, ContainerID: fixtureContainer}},
		{name: "no trailing newline", in: "0::/kubepods/pod" + fixtureUID, want: Info{PodUID: fixtureUID}},
		{name: "blank lines skipped", in: "\n\n0::/kubepods/pod" + fixtureUID + "\n\n", want: Info{PodUID: fixtureUID}},
		{name: "first pod line wins", in: "2:memory:/kubepods/pod" + fixtureUID + "\n0::/kubepods/pod11111111-2222-3333-4444-555555555555\n",
			want: Info{PodUID: fixtureUID}},
		{name: "short container ID is not a container", in: "0::/kubepods/pod" + fixtureUID + "/abc123", want: Info{PodUID: fixtureUID}},
		{name: "upper-case container ID is not a container", in: "0::/kubepods/pod" + fixtureUID + "/" + strings.ToUpper(fixtureContainer),
			want: Info{PodUID: fixtureUID}},
		{name: "systemd slice outside kubepods", in: "0::/system.slice/foo-pod" + strings.ReplaceAll(fixtureUID, "-", "_") + ".slice"},
		{name: "systemd slice with dashes", in: "0::/kubepods.slice/kubepods-pod" + fixtureUID + ".slice"},
		{name: "cgroupfs pod with underscores", in: "0::/kubepods/pod" + strings.ReplaceAll(fixtureUID, "-", "_")},
		{name: "UID one digit short", in: "0::/kubepods/pod" + fixtureUID[:35]},
		{name: "path may contain colons", in: "0::/weird:name/kubepods/pod" + fixtureUID, want: Info{PodUID: fixtureUID}},
		{name: "hierarchy ID not a number", in: "x::/", wantErr: true},
		{name: "no hierarchy ID", in: ":cpu:/", wantErr: true},
		{name: "malformed line after a good one", in: "0::/kubepods/pod" + fixtureUID + "\ngarbage\n", wantErr: true},
		{name: "whitespace only", in: " \n\t\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrorQuotesLine(t *testing.T) {
	_, err := Parse([]byte("0::/\n" + strings.Repeat("x", 500) + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") || len(err.Error()) > 200 {
		t.Fatalf("err = %v: want the line number and a bounded quote", err)
	}
}

func TestParseStartTime(t *testing.T) {
	line := func(comm string, start string) string {
		return "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 1234 0 0 0 10 5 0 0 20 0 8 0 " + start + " 8589934592 12345\n"
	}
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "plain", in: line("python3", "88123"), want: 88123},
		{name: "spaces and parentheses in the name", in: line("my (odd) name", "5"), want: 5},
		{name: "name is a closing parenthesis", in: line(")", "7"), want: 7},
		{name: "start time is the last field", in: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 42", want: 42},
		{name: "start time followed by a newline", in: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 42\n", want: 42},
		{name: "too few fields", in: "1 (init) S 0 1", wantErr: true},
		{name: "no parentheses", in: "1 init S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 42", wantErr: true},
		{name: "start time not a number", in: line("x", "soon"), wantErr: true},
		{name: "start time negative", in: line("x", "-1"), wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStartTime([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("start time %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "cgroup", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		if err != nil {
			if info != (Info{}) {
				t.Fatalf("error %v with a result %+v", err, info)
			}
			return
		}
		if info.PodUID == "" && info.ContainerID != "" {
			t.Fatalf("container %q without a pod", info.ContainerID)
		}
		if info.PodUID != "" {
			if _, ok := canonicalUID([]byte(info.PodUID), '-'); !ok || strings.ToLower(info.PodUID) != info.PodUID {
				t.Fatalf("pod UID %q is not canonical", info.PodUID)
			}
			if !strings.Contains(strings.ReplaceAll(strings.ToLower(string(data)), "_", "-"), info.PodUID) {
				t.Fatalf("pod UID %q does not come from the input", info.PodUID)
			}
		}
		if info.ContainerID != "" && !strings.Contains(string(data), info.ContainerID) {
			t.Fatalf("container ID %q does not come from the input", info.ContainerID)
		}
	})
}

func FuzzParseStartTime(f *testing.F) {
	for _, s := range []string{
		"4242 (python3) S 1 4242 4242 0 -1 4194560 1234 0 0 0 10 5 0 0 20 0 8 0 88123 8589934592",
		"1 (a) b) S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 42\n",
		"1 (init) S 0 1",
		")(",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseStartTime(data)
		if err != nil && v != 0 {
			t.Fatalf("error %v with a value %d", err, v)
		}
	})
}
