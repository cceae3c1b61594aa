package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

func TestSocketName(t *testing.T) {
	if got, want := socketName("nvidia.com/mig-1g.10gb.shared"), "gms-nvidia.com-mig-1g.10gb.shared.sock"; got != want {
		t.Errorf("socketName = %q, want %q", got, want)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // empty: valid
		want    devices.Layout
	}{
		{args: []string{"--node=n", "--gpus=2"}, want: devices.Layout{Node: "n", GPUs: 2, Replicas: 1}},
		{args: []string{"--node=n", "--gpus=3", "--mig=0,2", "--replicas=2", "--rename-shared"}, want: devices.Layout{Node: "n", GPUs: 3, MIG: []int{0, 2}, Replicas: 2, RenameShared: true}},
		{args: []string{"--gpus=2"}, wantErr: "--node"},
		{args: []string{"--node=n"}, wantErr: "--gpus"},
		{args: []string{"--node=n", "--gpus=2000"}, wantErr: "--gpus"},
		{args: []string{"--node=n", "--gpus=2", "--replicas=0"}, wantErr: "--replicas"},
		{args: []string{"--node=n", "--gpus=2", "--rename-shared"}, wantErr: "--rename-shared"},
		{args: []string{"--node=n", "--gpus=2", "--mig=2"}, wantErr: "--mig"},
		{args: []string{"--node=n", "--gpus=2", "--mig=x"}, wantErr: "--mig"},
		{args: []string{"--node=n", "--gpus=2", "--plugin-dir="}, wantErr: "--plugin-dir"},
		{args: []string{"--node=n", "--gpus=2", "extra"}, wantErr: "unexpected"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("deviceplugin", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, dir, err := parseFlags(fs, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Node != tc.want.Node || got.GPUs != tc.want.GPUs || !slices.Equal(got.MIG, tc.want.MIG) ||
				got.Replicas != tc.want.Replicas || got.RenameShared != tc.want.RenameShared {
				t.Errorf("layout %+v, want %+v", got, tc.want)
			}
			if dir != "/var/lib/kubelet/device-plugins/" {
				t.Errorf("plugin dir %q, want the kubelet's default", dir)
			}
		})
	}
}
