//go:build chart

package deploy

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// delegateArgs returns the aggregator's --delegate-* flags.
func delegateArgs(t *testing.T, r release) []string {
	t.Helper()
	dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
	var out []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--delegate-") {
			out = append(out, a)
		}
	}
	return out
}

// delegateCases are the chart cases of delegate.*: the aggregator's flags,
// the CA's ConfigMap and volume, and the RBAC a delegation adds: get on
// custom.metrics.k8s.io, and get/list/watch on the one Service of a
// Service target, in its namespace. (apiService.takeOver needs a cluster's
// lookup: e2e TestChartTakeOverAndHandBack.)
func delegateCases(t *testing.T, caPEM []byte) []chartCase {
	caB64 := base64.StdEncoding.EncodeToString(caPEM)
	return []chartCase{
		{
			name: "no delegate", tlsMode: "helm", apiSvc: true,
			check: func(t *testing.T, r release) {
				if args := delegateArgs(t, r); len(args) != 0 {
					t.Errorf("delegate flags without a delegate: %v", args)
				}
				for _, k := range []string{keyClusterRole, keyRole, keyConfigMap} {
					for _, o := range r.objs.find(k) {
						if strings.Contains(o.Name, "delegate") {
							t.Errorf("%s %s rendered without a delegate", k, o.Name)
						}
					}
				}
			},
		},
		{
			name: "delegate to a Service, verified", tlsMode: "helm", apiSvc: true,
			set: []string{"delegate.to=kube-system/custom-metrics-apiserver", "delegate.caBundle=" + caB64, "delegate.timeout=5s", "delegate.discoveryInterval=1m"},
			check: func(t *testing.T, r release) {
				want := []string{"--delegate-to=kube-system/custom-metrics-apiserver", "--delegate-ca-file=/var/run/gpu-metrics-server/delegate-ca/ca.crt",
					"--delegate-timeout=5s", "--delegate-discovery-interval=1m"}
				if got := delegateArgs(t, r); !slices.Equal(got, want) {
					t.Errorf("delegate flags %v, want %v", got, want)
				}
				cm := decode[corev1.ConfigMap](t, r.objs, keyConfigMap, r.aggregator()+"-delegate-ca")
				if !bytes.Equal(bytes.TrimSpace([]byte(cm.Data["ca.crt"])), bytes.TrimSpace(caPEM)) {
					t.Errorf("the delegate CA ConfigMap holds %q, want the given CA", cm.Data["ca.crt"])
				}
				dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				spec := dep.Spec.Template.Spec
				if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
					return v.Name == "delegate-ca" && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name
				}) || !slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.Name == "delegate-ca" && m.MountPath == "/var/run/gpu-metrics-server/delegate-ca" && m.ReadOnly
				}) {
					t.Error("the delegate CA is not mounted read-only where --delegate-ca-file points")
				}
				if dep.Spec.Template.Annotations["checksum/delegate"] == "" {
					t.Error("no checksum of the delegate on the pod template: a new CA would not roll the aggregator")
				}
				checkDelegateRBAC(t, r, "kube-system", "custom-metrics-apiserver")
			},
		},
		{
			name: "delegate to a URL, not verified", tlsMode: "unverified", apiSvc: true,
			set: []string{"aggregator.tls.mode=unverified", "delegate.to=https://adapter.example.com:6443", "delegate.insecureSkipTLSVerify=true"},
			check: func(t *testing.T, r release) {
				want := []string{"--delegate-to=https://adapter.example.com:6443", "--delegate-insecure-skip-tls-verify", "--delegate-timeout=10s", "--delegate-discovery-interval=30s"}
				if got := delegateArgs(t, r); !slices.Equal(got, want) {
					t.Errorf("delegate flags %v, want %v", got, want)
				}
				if n := len(r.objs.find(keyConfigMap)); n != 0 {
					t.Errorf("%d ConfigMaps without a delegate CA", n)
				}
				checkDelegateRBAC(t, r, "", "")
			},
		},
	}
}

// checkDelegateRBAC: the aggregator may get custom.metrics.k8s.io (and
// nothing more through the delegation's ClusterRole), and, for a Service
// target (namespace set), get/list/watch that one Service.
func checkDelegateRBAC(t *testing.T, r release, namespace, service string) {
	t.Helper()
	name := r.aggregator() + "-delegate"
	cr := decode[rbacv1.ClusterRole](t, r.objs, keyClusterRole, name)
	want := []rbacv1.PolicyRule{{APIGroups: []string{"custom.metrics.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"get"}}}
	if fmt.Sprint(cr.Rules) != fmt.Sprint(want) {
		t.Errorf("delegation ClusterRole rules %+v, want %+v", cr.Rules, want)
	}
	crb := decode[rbacv1.ClusterRoleBinding](t, r.objs, keyCRB, name)
	sa := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: r.aggregator(), Namespace: r.namespace}}
	if crb.RoleRef.Name != name || fmt.Sprint(crb.Subjects) != fmt.Sprint(sa) {
		t.Errorf("delegation ClusterRoleBinding %+v binds not %s to the aggregator alone", crb, name)
	}
	var roles []*rbacv1.Role
	for _, role := range decodeAll[rbacv1.Role](t, r.objs, keyRole) {
		if role.Name == name {
			roles = append(roles, role)
		}
	}
	if namespace == "" {
		if len(roles) != 0 {
			t.Errorf("a Role on a Service for a URL delegate: %+v", roles)
		}
		return
	}
	if len(roles) != 1 || roles[0].Namespace != namespace {
		t.Fatalf("delegation Roles %+v, want one in %s", roles, namespace)
	}
	wantRule := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{service}, Verbs: []string{"get", "list", "watch"}}}
	if fmt.Sprint(roles[0].Rules) != fmt.Sprint(wantRule) {
		t.Errorf("delegation Role rules %+v, want %+v", roles[0].Rules, wantRule)
	}
	var bound bool
	for _, rb := range decodeAll[rbacv1.RoleBinding](t, r.objs, keyRoleBinding) {
		if rb.Name == name {
			bound = rb.Namespace == namespace && rb.RoleRef.Name == name && fmt.Sprint(rb.Subjects) == fmt.Sprint(sa)
		}
	}
	if !bound {
		t.Errorf("no RoleBinding of %s to the aggregator in %s", name, namespace)
	}
}
