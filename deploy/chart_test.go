//go:build chart

package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	keyDaemonSet     = "apps/v1/DaemonSet"
	keyDeployment    = "apps/v1/Deployment"
	keyService       = "v1/Service"
	keySecret        = "v1/Secret"
	keyConfigMap     = "v1/ConfigMap"
	keySA            = "v1/ServiceAccount"
	keyPDB           = "policy/v1/PodDisruptionBudget"
	keyClusterRole   = "rbac.authorization.k8s.io/v1/ClusterRole"
	keyCRB           = "rbac.authorization.k8s.io/v1/ClusterRoleBinding"
	keyRole          = "rbac.authorization.k8s.io/v1/Role"
	keyRoleBinding   = "rbac.authorization.k8s.io/v1/RoleBinding"
	keyAPIService    = "apiregistration.k8s.io/v1/APIService"
	keyCertificate   = "cert-manager.io/v1/Certificate"
	keyIssuer        = "cert-manager.io/v1/Issuer"
	keyServiceMonit  = "monitoring.coreos.com/v1/ServiceMonitor"
	keyNetworkPolicy = "networking.k8s.io/v1/NetworkPolicy"
)

// release is one `helm template` of the chart and what it rendered.
type release struct {
	name, namespace string
	objs            objects
}

// fullname is the chart's name prefix: "<release>-gpu-metrics-server", or the
// release name when it holds the chart name, cut to 47 characters.
func (r release) fullname() string {
	n := r.name
	if !strings.Contains(n, "gpu-metrics-server") {
		n += "-gpu-metrics-server"
	}
	if len(n) > 47 {
		n = n[:47]
	}
	return strings.TrimSuffix(n, "-")
}
func (r release) agent() string      { return r.fullname() + "-agent" }
func (r release) aggregator() string { return r.fullname() + "-aggregator" }

// render runs `helm template` with the given --set values.
func render(t *testing.T, name, namespace string, set ...string) release {
	t.Helper()
	args := []string{"template", name, chartDir, "--namespace", namespace}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return release{name, namespace, splitObjects(t, []byte(out))}
}

// testCA returns a PEM CA certificate, for the "secret" TLS mode's caBundle.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// chartCase is one value set: what it sets and what must hold besides the
// checks every render passes (checkCommon).
type chartCase struct {
	name      string
	release   string
	set       []string
	tlsMode   string // the aggregator.tls.mode the case renders
	apiSvc    bool   // APIService objects expected
	hostPID   bool
	auth      bool // agent.auth.enabled
	agentTLS  *agentTLS
	addedCaps []string
	check     func(t *testing.T, r release)
}

func chartCases(t *testing.T) []chartCase {
	caPEM := testCA(t)
	caB64 := base64.StdEncoding.EncodeToString(caPEM)
	return append([]chartCase{
		{
			name: "defaults", tlsMode: "helm", apiSvc: true,
			check: func(t *testing.T, r release) {
				dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
					t.Errorf("aggregator replicas = %v, want 2", dep.Spec.Replicas)
				}
				aa := dep.Spec.Template.Spec.Affinity
				if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
					t.Fatalf("aggregator has no preferred pod anti-affinity: %+v", aa)
				}
				term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
				sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
				if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) || term.TopologyKey != "kubernetes.io/hostname" {
					t.Errorf("anti-affinity term %+v does not spread the aggregator's own pods over nodes (%v)", term, err)
				}
				pdb := decode[policyv1.PodDisruptionBudget](t, r.objs, keyPDB, r.aggregator())
				pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				if err != nil || !pdbSel.Matches(labels.Set(dep.Spec.Template.Labels)) {
					t.Errorf("PDB selector %v does not select the aggregator pods (%v)", pdb.Spec.Selector, err)
				}
				if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
					t.Errorf("PDB maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
				}
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				spec := ds.Spec.Template.Spec
				if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
					t.Error("agent has no GPU node affinity by default")
				}
				if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
					return tol.Key == "nvidia.com/gpu" && tol.Operator == corev1.TolerationOpExists
				}) {
					t.Errorf("agent does not tolerate the nvidia.com/gpu taint: %+v", spec.Tolerations)
				}
				if spec.RuntimeClassName != nil {
					t.Errorf("runtimeClassName = %q by default, want unset", *spec.RuntimeClassName)
				}
				if len(r.objs.find(keyServiceMonit)) != 0 {
					t.Error("ServiceMonitor rendered though not asked for")
				}
			},
		},
		{
			name: "tls from existing secret", tlsMode: "secret", apiSvc: true,
			set: []string{"aggregator.tls.mode=secret", "aggregator.tls.secretName=my-serving-cert", "aggregator.tls.caBundle=" + caB64},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keySecret)); n != 0 {
					t.Errorf("%d Secrets rendered; the secret mode must use the existing one only", n)
				}
				for _, a := range decodeAll[apiService](t, r.objs, keyAPIService) {
					if !bytes.Equal(a.Spec.CABundle, caPEM) {
						t.Errorf("%s caBundle is not the given CA", a.Metadata.Name)
					}
				}
				dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				if got := servingSecret(dep); got != "my-serving-cert" {
					t.Errorf("serving-cert volume uses secret %q, want my-serving-cert", got)
				}
			},
		},
		{
			name: "no APIService", tlsMode: "helm", apiSvc: false,
			set: []string{"apiService.create=false"},
		},
		{
			name: "agent auth over https", tlsMode: "helm", apiSvc: true, auth: true,
			set: []string{"agent.auth.enabled=true", "agent.auth.cacheTTL=30s", "aggregator.agentScheme=https",
				"agent.serviceMonitor.enabled=true", "agent.serviceMonitor.tlsConfig.insecureSkipVerify=true"},
			check: func(t *testing.T, r release) {
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				args := ds.Spec.Template.Spec.Containers[0].Args
				for _, want := range []string{"--authn-authz=kubernetes", "--authn-authz-cache-ttl=30s"} {
					if !slices.Contains(args, want) {
						t.Errorf("agent args %q lack %s", args, want)
					}
				}
				// The probes stay plain httpGet on the open paths.
				c := ds.Spec.Template.Spec.Containers[0]
				for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
					if p == nil || p.HTTPGet == nil || (p.HTTPGet.Path != "/healthz" && p.HTTPGet.Path != "/readyz") {
						t.Errorf("probe %+v is not an httpGet of /healthz or /readyz", p)
					}
				}
				dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				if want := "--scrape-bearer-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token"; !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, want) {
					t.Errorf("aggregator args lack %s", want)
				}
				reader := decode[rbacv1.ClusterRole](t, r.objs, keyClusterRole, r.agent()+"-metrics-reader")
				if fmt.Sprint(reader.Rules) != fmt.Sprint([]rbacv1.PolicyRule{metricsReader}) {
					t.Errorf("metrics reader rules %+v", reader.Rules)
				}
				sm := string(r.objs.find(keyServiceMonit)[0].Doc)
				for _, want := range []string{"scheme: https", "bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token", "insecureSkipVerify: true"} {
					if !strings.Contains(sm, want) {
						t.Errorf("ServiceMonitor lacks %q:\n%s", want, sm)
					}
				}
			},
		},
		{
			name: "agent TLS from the chart, with auth", tlsMode: "helm", apiSvc: true, auth: true,
			agentTLS: &agentTLS{source: "chart"},
			set:      []string{"agent.tls.enabled=true", "agent.auth.enabled=true", "agent.serviceMonitor.enabled=true"},
		},
		{
			name: "agent TLS from a Secret", tlsMode: "helm", apiSvc: true,
			agentTLS: &agentTLS{source: "secret", secretName: "my-agent-tls", serverName: "gpu-agents.example"},
			set: []string{"agent.tls.enabled=true", "agent.tls.source=secret", "agent.tls.secretName=my-agent-tls",
				"agent.tls.serverName=gpu-agents.example", "agent.serviceMonitor.enabled=true", "agent.serviceMonitor.tlsConfig.insecureSkipVerify=false"},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keySecret)); n != 1 {
					t.Errorf("%d Secrets rendered, want the aggregator's only: the agents' is the existing one", n)
				}
				sm := untyped(t, r.objs, keyServiceMonit, r.agent())
				eps, _ := dig(sm, "spec", "endpoints").([]any)
				if ep, _ := eps[0].(map[string]any); dig(ep, "tlsConfig", "insecureSkipVerify") != false {
					t.Errorf("agent.serviceMonitor.tlsConfig not merged into the chart's: %v", ep["tlsConfig"])
				}
			},
		},
		{
			name: "agent TLS from cert-manager", tlsMode: "helm", apiSvc: true, auth: true,
			agentTLS: &agentTLS{source: "certManager"},
			set: []string{"agent.tls.enabled=true", "agent.tls.source=certManager", "agent.auth.enabled=true",
				"agent.tls.certManager.issuerRef.name=corp-ca", "agent.tls.certManager.issuerRef.kind=ClusterIssuer"},
		},
		{
			name: "agent network policy", tlsMode: "helm", apiSvc: true,
			set: []string{"agent.networkPolicy.enabled=true",
				"agent.networkPolicy.prometheus.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
				"agent.networkPolicy.prometheus.podSelector.matchLabels.app=prometheus"},
			check: func(t *testing.T, r release) {
				np := decode[networkingv1.NetworkPolicy](t, r.objs, keyNetworkPolicy, r.agent())
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
					t.Errorf("policy selector %v does not select the agents (%v)", np.Spec.PodSelector, err)
				}
				if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 2 || len(np.Spec.Ingress[0].Ports) != 1 {
					t.Fatalf("ingress %+v: want one rule, two peers, one port", np.Spec.Ingress)
				}
				in := np.Spec.Ingress[0]
				if in.Ports[0].Port == nil || in.Ports[0].Port.String() != "metrics" {
					t.Errorf("port %+v, want metrics", in.Ports[0])
				}
				agg, err := metav1.LabelSelectorAsSelector(in.From[0].PodSelector)
				if err != nil || !agg.Matches(labels.Set(dep.Spec.Template.Labels)) || agg.Matches(labels.Set(ds.Spec.Template.Labels)) {
					t.Errorf("first peer %+v does not admit the aggregator alone (%v)", in.From[0], err)
				}
				prom := in.From[1]
				if prom.NamespaceSelector == nil || prom.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
					prom.PodSelector == nil || prom.PodSelector.MatchLabels["app"] != "prometheus" {
					t.Errorf("Prometheus peer %+v", prom)
				}
			},
		},
		{
			name: "hostPID and a capability", tlsMode: "helm", apiSvc: true, hostPID: true, addedCaps: []string{"SYS_PTRACE"},
			set: []string{"agent.hostPID=true", "agent.capabilities={SYS_PTRACE}", "agent.runtimeClassName=nvidia"},
			check: func(t *testing.T, r release) {
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				if rc := ds.Spec.Template.Spec.RuntimeClassName; rc == nil || *rc != "nvidia" {
					t.Errorf("runtimeClassName = %v, want nvidia", rc)
				}
			},
		},
		{
			name: "cert-manager with its own CA", tlsMode: "cert-manager", apiSvc: true,
			set: []string{"aggregator.tls.mode=cert-manager"},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keyIssuer)); n != 2 {
					t.Errorf("%d Issuers rendered, want 2 (self-signed root and CA)", n)
				}
			},
		},
		{
			name: "cert-manager with a given issuer", tlsMode: "cert-manager", apiSvc: true,
			set: []string{"aggregator.tls.mode=cert-manager", "aggregator.tls.certManager.issuerRef.name=corp-ca", "aggregator.tls.certManager.issuerRef.kind=ClusterIssuer"},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keyIssuer)); n != 0 {
					t.Errorf("%d Issuers rendered though an issuer was given", n)
				}
				cert := untyped(t, r.objs, keyCertificate, r.aggregator()+"-tls")
				ref, _ := dig(cert, "spec", "issuerRef").(map[string]any)
				if ref["name"] != "corp-ca" || ref["kind"] != "ClusterIssuer" {
					t.Errorf("Certificate issuerRef = %v, want corp-ca ClusterIssuer", ref)
				}
			},
		},
		{
			name: "unverified", tlsMode: "unverified", apiSvc: true,
			set: []string{"aggregator.tls.mode=unverified"},
		},
		{
			name: "one replica, ServiceMonitor, sim backend, long release name", tlsMode: "helm", apiSvc: true,
			release: "a-release-name-that-is-long-enough-to-need-truncation",
			set: []string{"aggregator.replicas=1", "agent.serviceMonitor.enabled=true", "agent.backend=sim", "agent.simGPUs=4",
				"agent.resourceNames={nvidia.com/gpu.shared}", "aggregator.dcgmExporter.selector=app=nvidia-dcgm-exporter",
				"aggregator.dcgmExporter.namespace=gpu-operator"},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keyPDB)); n != 0 {
					t.Errorf("PDB rendered for a single replica (it would block every drain)")
				}
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				args := ds.Spec.Template.Spec.Containers[0].Args
				for _, want := range []string{"--backend=sim", "--sim-gpus=4", "--resource-names=nvidia.com/gpu.shared"} {
					if !slices.Contains(args, want) {
						t.Errorf("agent args %v lack %s", args, want)
					}
				}
				sms := r.objs.find(keyServiceMonit)
				if len(sms) != 1 {
					t.Fatalf("%d ServiceMonitors, want 1", len(sms))
				}
				sm := untyped(t, r.objs, keyServiceMonit, sms[0].Name)
				eps, _ := dig(sm, "spec", "endpoints").([]any)
				if len(eps) != 1 {
					t.Fatalf("ServiceMonitor endpoints = %v", eps)
				}
				ep, _ := eps[0].(map[string]any)
				if ep["honorLabels"] != true || ep["port"] != "metrics" {
					t.Errorf("ServiceMonitor endpoint %v: want honorLabels true on port metrics", ep)
				}
				if !strings.Contains(fmt.Sprint(ep["relabelings"]), "pod|namespace|container") {
					t.Errorf("ServiceMonitor does not drop the agent pod's target labels: %v", ep["relabelings"])
				}
				d := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
				dargs := d.Spec.Template.Spec.Containers[0].Args
				for _, want := range []string{"--dcgm-exporter-selector=app=nvidia-dcgm-exporter", "--dcgm-exporter-namespace=gpu-operator", "--dcgm-exporter-port=9400"} {
					if !slices.Contains(dargs, want) {
						t.Errorf("aggregator args %v lack %s", dargs, want)
					}
				}
			},
		},
		{
			name: "counters file inline, lower-case hostname label", tlsMode: "helm", apiSvc: true,
			set: []string{"agent.counters.csv=DCGM_FI_DEV_GPU_TEMP\\, gauge\\, GPU temperature (in C).", "agent.counters.skipUnsupported=true",
				"agent.hostnameLabel=hostname"},
			check: func(t *testing.T, r release) {
				cm := decode[corev1.ConfigMap](t, r.objs, keyConfigMap, r.agent()+"-counters")
				if cm.Data["counters.csv"] != "DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C)." {
					t.Errorf("counters ConfigMap data %q", cm.Data)
				}
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				checkCounters(t, ds, r.agent()+"-counters", "counters.csv", true)
				if a := ds.Spec.Template.Annotations["checksum/counters"]; a == "" {
					t.Error("no checksum of the counters file on the agent pods: a new file would not roll them")
				}
				if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--hostname-label=hostname") {
					t.Errorf("agent args %v lack --hostname-label=hostname", args)
				}
			},
		},
		{
			name: "counters file from gpu-operator's ConfigMap", tlsMode: "helm", apiSvc: true,
			set: []string{"agent.counters.configMap.name=metrics-config", "agent.counters.csv=ignored"},
			check: func(t *testing.T, r release) {
				if n := len(r.objs.find(keyConfigMap)); n != 0 {
					t.Errorf("%d ConfigMaps rendered: the existing one is used", n)
				}
				ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
				checkCounters(t, ds, "metrics-config", "dcgm-metrics.csv", false)
				if _, ok := ds.Spec.Template.Annotations["checksum/counters"]; ok {
					t.Error("checksum of an inline file that is not used")
				}
			},
		},
		{
			name: "agent only", tlsMode: "", apiSvc: false,
			set: []string{"aggregator.enabled=false"},
			check: func(t *testing.T, r release) {
				for _, k := range []string{keyDeployment, keyAPIService, keyClusterRole, keyCRB, keyRoleBinding, keySecret} {
					if n := len(r.objs.find(k)); n != 0 {
						t.Errorf("%d %s rendered with the aggregator off", n, k)
					}
				}
			},
		},
	}, delegateCases(t, caPEM)...)
}

// checkCounters checks that the agent reads its counters file from key of
// ConfigMap name, mounted read-only.
func checkCounters(t *testing.T, ds *appsv1.DaemonSet, name, key string, skip bool) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	agent := spec.Containers[0]
	args := flagValues(agent.Args)
	path, ok := args["--collectors"]
	if !ok {
		t.Fatalf("agent args %v lack --collectors", agent.Args)
	}
	if got := slices.Contains(agent.Args, "--collectors-skip-unsupported"); got != skip {
		t.Errorf("agent args %v: --collectors-skip-unsupported %v, want %v", agent.Args, got, skip)
	}
	var vol string
	for _, m := range agent.VolumeMounts {
		if strings.HasPrefix(path, m.MountPath+"/") {
			vol = m.Name
			if !m.ReadOnly {
				t.Errorf("counters mount %s is writable", m.MountPath)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Name != vol {
			continue
		}
		if v.ConfigMap == nil || v.ConfigMap.Name != name || len(v.ConfigMap.Items) != 1 ||
			v.ConfigMap.Items[0].Key != key || !strings.HasSuffix(path, "/"+v.ConfigMap.Items[0].Path) {
			t.Errorf("counters volume %+v for %s, want key %s of ConfigMap %s", v.VolumeSource, path, key, name)
		}
		return
	}
	t.Errorf("no volume mounted where --collectors=%s points", path)
}

func TestHelmLint(t *testing.T) {
	for _, c := range chartCases(t) {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint output does not report success:\n%s", out)
			}
		})
	}
}

func TestHelmTemplate(t *testing.T) {
	for _, c := range chartCases(t) {
		t.Run(c.name, func(t *testing.T) {
			name := c.release
			if name == "" {
				name = defaultRelease
			}
			r := render(t, name, defaultNS, c.set...)
			checkStrict(t, r.objs)
			checkNames(t, r.objs)
			checkNamespaces(t, r)
			checkWorkloads(t, r, c)
			checkRBAC(t, r, c)
			checkAPIService(t, r, c)
			if c.agentTLS != nil {
				checkAgentTLS(t, r, *c.agentTLS)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
}

// checkNames validates object names and label values as the API server
// will: Services need a DNS label, RBAC objects a path segment, the rest a
// DNS subdomain; label values at most 63 characters of the allowed set.
func checkNames(t *testing.T, objs objects) {
	t.Helper()
	for _, o := range objs {
		var errs []string
		switch {
		case o.key() == keyService:
			errs = validation.IsDNS1035Label(o.Name)
		case strings.HasPrefix(o.APIVersion, "rbac.authorization.k8s.io/"):
			if strings.ContainsAny(o.Name, "/%") || o.Name == "." || o.Name == ".." {
				errs = []string{"not a valid path segment"}
			}
		default:
			errs = validation.IsDNS1123Subdomain(o.Name)
		}
		if len(errs) != 0 {
			t.Errorf("%s name %q: %v", o.key(), o.Name, errs)
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
			Spec     struct {
				Template struct {
					Metadata metav1.ObjectMeta `json:"metadata"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(o.Doc, &meta); err != nil {
			t.Fatalf("%s %s: %v", o.key(), o.Name, err)
		}
		for _, ls := range []map[string]string{meta.Metadata.Labels, meta.Spec.Template.Metadata.Labels} {
			for k, v := range ls {
				if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) != 0 {
					t.Errorf("%s %s label %s=%q: %v", o.key(), o.Name, k, v, errs)
				}
			}
		}
	}
}

// checkNamespaces: every namespaced object is in the release namespace, but
// the RoleBinding to the authentication reader, which lives in kube-system.
func checkNamespaces(t *testing.T, r release) {
	t.Helper()
	clusterScoped := map[string]bool{keyClusterRole: true, keyCRB: true, keyAPIService: true}
	for _, o := range r.objs {
		switch {
		case clusterScoped[o.key()]:
			if o.Namespace != "" {
				t.Errorf("cluster-scoped %s %s has namespace %q", o.key(), o.Name, o.Namespace)
			}
		case o.key() == keyRoleBinding && strings.HasSuffix(o.Name, ":extension-apiserver-authentication-reader"):
			if o.Namespace != "kube-system" {
				t.Errorf("%s %s in %q, want kube-system", o.key(), o.Name, o.Namespace)
			}
		case (o.key() == keyRole || o.key() == keyRoleBinding) && o.Name == r.aggregator()+"-delegate":
			// On the delegate's Service, in its namespace (delegateCases).
		case o.Namespace != r.namespace:
			t.Errorf("%s %s in namespace %q, want %q", o.key(), o.Name, o.Namespace, r.namespace)
		}
	}
}

// checkWorkloads checks the agent and aggregator pods: hardening, wiring of
// the flags the architecture fixes, probes, and that the aggregator's
// --agent-selector selects exactly the agent pods.
func checkWorkloads(t *testing.T, r release, c chartCase) {
	t.Helper()
	dss := decodeAll[appsv1.DaemonSet](t, r.objs, keyDaemonSet)
	deps := decodeAll[appsv1.Deployment](t, r.objs, keyDeployment)
	if len(dss) != 1 {
		t.Fatalf("%d DaemonSets rendered, want 1", len(dss))
	}
	ds := dss[0]
	spec := ds.Spec.Template.Spec
	checkHardened(t, "agent", spec, c.addedCaps)
	if spec.HostPID != c.hostPID {
		t.Errorf("agent hostPID = %v, want %v", spec.HostPID, c.hostPID)
	}
	if spec.HostNetwork || spec.HostIPC {
		t.Error("agent uses the host network or IPC namespace")
	}
	// The agent calls the API only for per-process attribution, which
	// comes with hostPID.
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken != (c.hostPID || c.auth) {
		t.Errorf("agent pods mount an API token: %v, want %v (only with hostPID or agent.auth)", spec.AutomountServiceAccountToken, c.hostPID || c.auth)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("agent has %d containers", len(spec.Containers))
	}
	agent := spec.Containers[0]
	if len(agent.Args) == 0 || agent.Args[0] != "agent" {
		t.Errorf("agent args %v do not start with the agent subcommand", agent.Args)
	}
	if want := fmt.Sprintf("--process-attribution=%v", c.hostPID); !slices.Contains(agent.Args, want) {
		t.Errorf("agent args %v lack %s", agent.Args, want)
	}
	if !slices.Contains(agent.Args, "--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock") {
		t.Errorf("agent args %v do not name the pod-resources socket", agent.Args)
	}
	if c.name == "defaults" && (!slices.Contains(agent.Args, "--hostname-label=Hostname") || slices.ContainsFunc(agent.Args, func(a string) bool {
		return strings.HasPrefix(a, "--collectors")
	})) {
		t.Errorf("agent args %v: want the Hostname label and the built-in field list by default", agent.Args)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME is not spec.nodeName from the downward API: %+v", e)
	}
	if env["NVIDIA_VISIBLE_DEVICES"].Value != "all" {
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %q, want all", env["NVIDIA_VISIBLE_DEVICES"].Value)
	}
	if agent.Resources.Limits.Name("nvidia.com/gpu", "").Value() != 0 {
		t.Error("the agent requests a GPU; it must see them all without taking one")
	}
	checkPort(t, "agent", agent, "metrics", 9400)
	agentScheme := corev1.URISchemeHTTP
	if c.agentTLS != nil {
		agentScheme = corev1.URISchemeHTTPS
	}
	checkProbe(t, "agent liveness", agent.LivenessProbe, "/healthz", "metrics", agentScheme)
	checkProbe(t, "agent readiness", agent.ReadinessProbe, "/readyz", "metrics", agentScheme)
	var podResources bool
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/var/lib/kubelet/pod-resources" {
			podResources = true
		}
	}
	if !podResources {
		t.Error("agent does not mount /var/lib/kubelet/pod-resources")
	}

	if c.tlsMode == "" {
		if len(deps) != 0 {
			t.Errorf("%d Deployments rendered with the aggregator off", len(deps))
		}
		return
	}
	if len(deps) != 1 {
		t.Fatalf("%d Deployments rendered, want 1", len(deps))
	}
	dep := deps[0]
	aspec := dep.Spec.Template.Spec
	checkHardened(t, "aggregator", aspec, nil)
	if !runsAsNonRoot(aspec, aspec.Containers[0]) {
		t.Error("aggregator may run as root")
	}
	if aspec.HostPID || aspec.HostNetwork || aspec.HostIPC || len(hostPaths(aspec)) != 0 {
		t.Error("aggregator uses a host namespace or hostPath")
	}
	agg := aspec.Containers[0]
	if len(agg.Args) == 0 || agg.Args[0] != "aggregator" {
		t.Errorf("aggregator args %v do not start with the aggregator subcommand", agg.Args)
	}
	flags := flagValues(agg.Args)
	if flags["--agent-namespace"] != r.namespace {
		t.Errorf("--agent-namespace = %q, want %q", flags["--agent-namespace"], r.namespace)
	}
	if flags["--secure-port"] != "6443" {
		t.Errorf("--secure-port = %q, want 6443", flags["--secure-port"])
	}
	checkPort(t, "aggregator", agg, "https", 6443)
	checkProbe(t, "aggregator liveness", agg.LivenessProbe, "/livez", "https", corev1.URISchemeHTTPS)
	checkProbe(t, "aggregator readiness", agg.ReadinessProbe, "/readyz", "https", corev1.URISchemeHTTPS)

	sel, err := labels.Parse(flags["--agent-selector"])
	if err != nil {
		t.Fatalf("--agent-selector %q: %v", flags["--agent-selector"], err)
	}
	dsSel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.String() != dsSel.String() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("--agent-selector %q is not the agent DaemonSet's selector %q", sel, dsSel)
	}
	if sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Error("--agent-selector also selects the aggregator's pods")
	}

	switch c.tlsMode {
	case "unverified":
		if flags["--cert-dir"] == "" || flags["--tls-cert-file"] != "" {
			t.Errorf("unverified mode: want --cert-dir and no --tls-cert-file, args %v", agg.Args)
		}
	default:
		if flags["--tls-cert-file"] == "" || flags["--tls-private-key-file"] == "" {
			t.Errorf("mode %s: no --tls-cert-file/--tls-private-key-file in %v", c.tlsMode, agg.Args)
		}
		if servingSecret(dep) == "" {
			t.Errorf("mode %s: the serving certificate is not mounted from a Secret", c.tlsMode)
		}
	}

	svc := decode[corev1.Service](t, r.objs, keyService, dep.Name)
	svcSel := labels.SelectorFromSet(svc.Spec.Selector)
	if !svcSel.Matches(labels.Set(dep.Spec.Template.Labels)) || svcSel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("aggregator Service selector %v does not select exactly the aggregator pods", svc.Spec.Selector)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("aggregator Service ports %+v, want 443 -> https", svc.Spec.Ports)
	}
}

// checkHardened: no privilege escalation, read-only root file system, every
// capability dropped (but those the case adds), the runtime's seccomp
// profile, and hostPath volumes mounted read-only.
func checkHardened(t *testing.T, what string, spec corev1.PodSpec, addedCaps []string) {
	t.Helper()
	if psc := spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccomp profile is not RuntimeDefault", what)
	}
	hp := hostPaths(spec)
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s/%s: no securityContext", what, c.Name)
			continue
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s/%s: allowPrivilegeEscalation is not false", what, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s/%s: privileged", what, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s/%s: root file system is writable", what, c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s/%s: capabilities are not all dropped", what, c.Name)
		}
		var added []string
		if sc.Capabilities != nil {
			for _, capability := range sc.Capabilities.Add {
				added = append(added, string(capability))
			}
		}
		if !slices.Equal(added, addedCaps) {
			t.Errorf("%s/%s: added capabilities %v, want %v", what, c.Name, added, addedCaps)
		}
		for _, m := range c.VolumeMounts {
			if hp[m.Name] && !m.ReadOnly {
				t.Errorf("%s/%s: hostPath volume %s mounted writable", what, c.Name, m.Name)
			}
		}
	}
}

func hostPaths(spec corev1.PodSpec) map[string]bool {
	hp := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hp[v.Name] = true
		}
	}
	return hp
}

func runsAsNonRoot(spec corev1.PodSpec, c corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	return spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
}

// servingSecret returns the Secret the aggregator's serving-cert volume
// comes from, or "".
func servingSecret(dep *appsv1.Deployment) string {
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == "serving-cert" && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

// flagValues maps "--name=value" arguments to their values.
func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "--") {
			m[name] = value
		}
	}
	return m
}

func checkPort(t *testing.T, what string, c corev1.Container, name string, port int32) {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			if p.ContainerPort != port {
				t.Errorf("%s port %s = %d, want %d", what, name, p.ContainerPort, port)
			}
			return
		}
	}
	t.Errorf("%s has no port named %s", what, name)
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path, port string, scheme corev1.URIScheme) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: none, or not HTTP", what)
		return
	}
	g := p.HTTPGet
	gotScheme := g.Scheme
	if gotScheme == "" {
		gotScheme = corev1.URISchemeHTTP
	}
	if g.Path != path || g.Port.String() != port || gotScheme != scheme {
		t.Errorf("%s probe = %s %s port %s, want %s %s port %s", what, gotScheme, g.Path, g.Port.String(), scheme, path, port)
	}
}

// readOnlyVerbs are all the chart may grant through its own roles.
var readOnlyVerbs = []string{"get", "list", "watch"}

// checkRBAC: the chart's own roles only read; the aggregator may read pods
// and list/watch nodes, and nothing else of its own; the bindings grant only those roles and the
// two built-in ones every aggregated API server needs; the agent is bound to
// nothing.
func checkRBAC(t *testing.T, r release, c chartCase) {
	t.Helper()
	var ours []string
	for _, cr := range decodeAll[rbacv1.ClusterRole](t, r.objs, keyClusterRole) {
		ours = append(ours, cr.Name)
		checkRules(t, "ClusterRole "+cr.Name, cr.Rules)
		if cr.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles", cr.Name)
		}
	}
	for _, role := range decodeAll[rbacv1.Role](t, r.objs, keyRole) {
		checkRules(t, "Role "+role.Name, role.Rules)
	}
	if slices.Contains(ours, r.aggregator()) {
		cr := decode[rbacv1.ClusterRole](t, r.objs, keyClusterRole, r.aggregator())
		want := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: readOnlyVerbs},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
		}
		if c.auth {
			want = append(want, metricsReader)
		}
		if fmt.Sprint(cr.Rules) != fmt.Sprint(want) {
			t.Errorf("aggregator ClusterRole rules = %+v, want %+v", cr.Rules, want)
		}
	}
	// The agent has a role only with hostPID (per-process attribution:
	// read-only pods, like the aggregator's) or agent.auth (reviews of its
	// clients' tokens and access).
	if got := slices.Contains(ours, r.agent()); got != (c.hostPID || c.auth) {
		t.Errorf("agent ClusterRole rendered: %v, want %v (only with hostPID or agent.auth)", got, c.hostPID || c.auth)
	} else if got {
		cr := decode[rbacv1.ClusterRole](t, r.objs, keyClusterRole, r.agent())
		var want []rbacv1.PolicyRule
		if c.hostPID {
			want = append(want, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: readOnlyVerbs})
		}
		if c.auth {
			want = append(want, reviewRules...)
		}
		if fmt.Sprint(cr.Rules) != fmt.Sprint(want) {
			t.Errorf("agent ClusterRole rules = %+v, want %+v", cr.Rules, want)
		}
	}
	builtin := []string{"system:auth-delegator", "extension-apiserver-authentication-reader"}
	agentSA := r.agent()
	checkBinding := func(kind, name string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) {
		if !slices.Contains(ours, ref.Name) && !slices.Contains(builtin, ref.Name) {
			t.Errorf("%s %s binds %s %s, which is neither the chart's nor an allowed built-in role", kind, name, ref.Kind, ref.Name)
		}
		for _, s := range subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == agentSA && s.Namespace == r.namespace && ref.Name != r.agent() {
				t.Errorf("%s %s binds the agent's ServiceAccount to %s", kind, name, ref.Name)
			}
		}
	}
	for _, b := range decodeAll[rbacv1.ClusterRoleBinding](t, r.objs, keyCRB) {
		checkBinding("ClusterRoleBinding", b.Name, b.RoleRef, b.Subjects)
	}
	for _, b := range decodeAll[rbacv1.RoleBinding](t, r.objs, keyRoleBinding) {
		checkBinding("RoleBinding", b.Name, b.RoleRef, b.Subjects)
	}
	for _, sa := range decodeAll[corev1.ServiceAccount](t, r.objs, keySA) {
		if sa.Name == agentSA && (sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
			t.Error("agent ServiceAccount automounts its token")
		}
	}
}

// reviewRules are the agent's rules with agent.auth: the only writes the
// chart grants, reviews that change nothing.
var reviewRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
}

// metricsReader is the rule of a client of the agents with agent.auth.
var metricsReader = rbacv1.PolicyRule{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}

func checkRules(t *testing.T, what string, rules []rbacv1.PolicyRule) {
	t.Helper()
	for _, rule := range rules {
		if slices.ContainsFunc(reviewRules, func(r rbacv1.PolicyRule) bool { return fmt.Sprint(r) == fmt.Sprint(rule) }) {
			continue
		}
		for _, v := range rule.Verbs {
			if !slices.Contains(readOnlyVerbs, v) {
				t.Errorf("%s grants %q on %v/%v: only get, list and watch are allowed", what, v, rule.APIGroups, rule.Resources)
			}
		}
		for _, res := range rule.Resources {
			if res == "secrets" || (res == "*" && !slices.Equal(rule.APIGroups, []string{"custom.metrics.k8s.io"})) {
				t.Errorf("%s grants access to %q in %v", what, res, rule.APIGroups)
			}
		}
	}
}

// checkAPIService: both versions of custom.metrics.k8s.io, present exactly
// when asked for, pointing at the aggregator's Service, with a CA that
// verifies the serving certificate (or, in mode unverified only,
// insecureSkipTLSVerify).
func checkAPIService(t *testing.T, r release, c chartCase) {
	t.Helper()
	as := decodeAll[apiService](t, r.objs, keyAPIService)
	if !c.apiSvc {
		if len(as) != 0 {
			t.Errorf("%d APIServices rendered, want none", len(as))
		}
		if c.tlsMode == "helm" && len(r.objs.find(keySecret)) != 1 {
			t.Error("mode helm without APIService: the serving Secret is still needed")
		}
		return
	}
	var versions []string
	for _, a := range as {
		versions = append(versions, a.Spec.Version)
		if a.Metadata.Name != a.Spec.Version+".custom.metrics.k8s.io" || a.Spec.Group != "custom.metrics.k8s.io" {
			t.Errorf("APIService %s: group %s version %s", a.Metadata.Name, a.Spec.Group, a.Spec.Version)
		}
		s := a.Spec.Service
		if s == nil || s.Name != r.aggregator() || s.Namespace != r.namespace || s.Port == nil || *s.Port != 443 {
			t.Errorf("APIService %s service = %+v, want %s/%s:443", a.Metadata.Name, s, r.namespace, r.aggregator())
		}
		if a.Spec.GroupPriorityMinimum <= 0 || a.Spec.VersionPriority <= 0 {
			t.Errorf("APIService %s priorities %d/%d must be positive", a.Metadata.Name, a.Spec.GroupPriorityMinimum, a.Spec.VersionPriority)
		}
		if a.Spec.InsecureSkipTLSVerify != (c.tlsMode == "unverified") {
			t.Errorf("APIService %s insecureSkipTLSVerify = %v in mode %s", a.Metadata.Name, a.Spec.InsecureSkipTLSVerify, c.tlsMode)
		}
		switch c.tlsMode {
		case "unverified", "cert-manager":
			if len(a.Spec.CABundle) != 0 {
				t.Errorf("APIService %s has a caBundle in mode %s", a.Metadata.Name, c.tlsMode)
			}
		default:
			if len(a.Spec.CABundle) == 0 {
				t.Errorf("APIService %s has no caBundle in mode %s", a.Metadata.Name, c.tlsMode)
			}
		}
		if c.tlsMode == "cert-manager" {
			want := r.namespace + "/" + r.aggregator() + "-tls"
			if got := a.Metadata.Annotations["cert-manager.io/inject-ca-from"]; got != want {
				t.Errorf("APIService %s inject-ca-from = %q, want %q", a.Metadata.Name, got, want)
			}
		}
	}
	slices.Sort(versions)
	if !slices.Equal(versions, []string{"v1beta1", "v1beta2"}) {
		t.Errorf("APIService versions %v, want v1beta1 and v1beta2", versions)
	}
	byVersion := map[string]*apiService{}
	for _, a := range as {
		byVersion[a.Spec.Version] = a
	}
	if byVersion["v1beta2"].Spec.VersionPriority <= byVersion["v1beta1"].Spec.VersionPriority {
		t.Error("v1beta2 is not preferred over v1beta1")
	}

	dnsName := r.aggregator() + "." + r.namespace + ".svc"
	switch c.tlsMode {
	case "helm":
		sec := decode[corev1.Secret](t, r.objs, keySecret, r.aggregator()+"-tls")
		checkServingCert(t, sec.Data["ca.crt"], sec.Data["tls.crt"], sec.Data["tls.key"], dnsName)
		for _, a := range as {
			if !bytes.Equal(a.Spec.CABundle, sec.Data["ca.crt"]) {
				t.Errorf("APIService %s caBundle is not the CA in Secret %s", a.Metadata.Name, sec.Name)
			}
		}
	case "cert-manager":
		cert := untyped(t, r.objs, keyCertificate, r.aggregator()+"-tls")
		if dig(cert, "spec", "secretName") != r.aggregator()+"-tls" {
			t.Errorf("Certificate secretName = %v", dig(cert, "spec", "secretName"))
		}
		if !strings.Contains(fmt.Sprint(dig(cert, "spec", "dnsNames")), dnsName) {
			t.Errorf("Certificate dnsNames %v lack %s", dig(cert, "spec", "dnsNames"), dnsName)
		}
	}
}

// checkServingCert: the key pair matches and the CA verifies the
// certificate for the Service's DNS name, as kube-apiserver will.
func checkServingCert(t *testing.T, caPEM, certPEM, keyPEM []byte, dnsName string) {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("serving key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no PEM certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("serving certificate does not verify for %s: %v", dnsName, err)
	}
}

// untyped parses an object of a type this module has no Go types for.
func untyped(t *testing.T, objs objects, key, name string) map[string]any {
	t.Helper()
	return *decode[map[string]any](t, objs, key, name)
}

// dig walks nested maps.
func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// TestHelmTemplateRejects: bad values fail the render with a message that
// names the value, never a half-configured install.
func TestHelmTemplateRejects(t *testing.T) {
	cases := []struct {
		name string
		set  []string
		want string
	}{
		{"unknown TLS mode", []string{"aggregator.tls.mode=selfsigned"}, "/aggregator/tls/mode"},
		{"misspelt key", []string{"agent.hostPid=true"}, "hostPid"},
		{"unknown backend", []string{"agent.backend=dcgm"}, "/agent/backend"},
		{"bad duration", []string{"agent.sampleInterval=1"}, "/agent/sampleInterval"},
		{"bad slow duration", []string{"agent.slowSampleInterval=10"}, "/agent/slowSampleInterval"},
		{"secret mode without a secret", []string{"aggregator.tls.mode=secret"}, "aggregator.tls.secretName is required"},
		{"secret mode without a CA", []string{"aggregator.tls.mode=secret", "aggregator.tls.secretName=x"}, "aggregator.tls.caBundle is required"},
		{"ServiceMonitor without Service", []string{"agent.serviceMonitor.enabled=true", "agent.service.enabled=false"}, "agent.serviceMonitor.enabled needs agent.service.enabled"},
		{"dcgm-exporter selector without namespace", []string{"aggregator.dcgmExporter.selector=app=x"}, "aggregator.dcgmExporter.namespace is required"},
		{"unknown hostname label", []string{"agent.hostnameLabel=HOSTNAME"}, "/agent/hostnameLabel"},
		{"agent auth with plain http scraping", []string{"agent.auth.enabled=true"}, "agent.auth.enabled needs agent.tls.enabled"},
		{"agent TLS source", []string{"agent.tls.enabled=true", "agent.tls.source=helm"}, "/agent/tls/source"},
		{"agent TLS server name", []string{"agent.tls.enabled=true", "agent.tls.serverName=Agents_Example"}, "/agent/tls/serverName"},
		{"agent TLS secret without a name", []string{"agent.tls.enabled=true", "agent.tls.source=secret"}, "agent.tls.secretName is required"},
		{"agent TLS cert-manager without an issuer", []string{"agent.tls.enabled=true", "agent.tls.source=certManager"}, "agent.tls.certManager.issuerRef is required"},
		{"agent auth cache TTL", []string{"agent.auth.cacheTTL=10"}, "/agent/auth/cacheTTL"},
		{"network policy peer", []string{"agent.networkPolicy.prometheus.ipBlock.cidr=0.0.0.0/0"}, "ipBlock"},
		{"counters ConfigMap key", []string{"agent.counters.configMap.name=m", "agent.counters.configMap.key=a/b"}, "/agent/counters/configMap/key"},
		{"delegate without a namespace", []string{"delegate.to=prometheus-adapter"}, "/delegate/to"},
		{"delegate over http", []string{"delegate.to=http://adapter:6443"}, "/delegate/to"},
		{"delegate with a path", []string{"delegate.to=https://adapter:6443/apis"}, "/delegate/to"},
		{"delegate timeout", []string{"delegate.to=monitoring/prometheus-adapter", "delegate.timeout=10"}, "/delegate/timeout"},
		{"delegate CA and no verification", []string{"delegate.to=monitoring/prometheus-adapter", "delegate.caBundle=QUJD", "delegate.insecureSkipTLSVerify=true"}, "contradict"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"template", defaultRelease, chartDir, "--namespace", defaultNS}
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			_, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted %v", c.set)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not mention %q:\n%v", c.want, err)
			}
		})
	}
}
