package main

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestHostNetworkSandboxHasNoIP: a sandbox in the node's network namespace
// reports no IP (the kubelet then gives the pod the node's), any other the
// fake's own.
func TestHostNetworkSandboxHasNoIP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   runtimeapi.NamespaceMode
		wantIP bool
	}{
		{"host network", runtimeapi.NamespaceMode_NODE, false},
		{"pod network", runtimeapi.NamespaceMode_POD, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t.TempDir(), defaultImageSize)
			ctx := context.Background()
			resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"},
				Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Network: tc.mode},
				}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
			if err != nil {
				t.Fatal(err)
			}
			ip := st.GetStatus().GetNetwork().GetIp()
			if (ip != "") != tc.wantIP {
				t.Errorf("sandbox IP %q, want one: %v", ip, tc.wantIP)
			}
			if got := st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork(); got != tc.mode {
				t.Errorf("network namespace mode %v, want %v", got, tc.mode)
			}
		})
	}
}
