//go:build chart

package deploy

import (
	"crypto/x509"
	"encoding/pem"
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// agentTLS is what a case with agent.tls.enabled expects.
type agentTLS struct {
	source     string // chart, secret or certManager
	secretName string // empty: <release>-agent-tls
	serverName string // empty: <release>-agent.<namespace>.svc
}

// checkAgentTLS: the agent serves TLS from the Secret through the web
// config the chart renders, the aggregator scrapes it over https with the
// CA of that Secret (its ca.crt only) and the server name the certificate
// carries, and the ServiceMonitor, when rendered, does the same.
func checkAgentTLS(t *testing.T, r release, want agentTLS) {
	t.Helper()
	secret := want.secretName
	if secret == "" {
		secret = r.agent() + "-tls"
	}
	serverName := want.serverName
	if serverName == "" {
		serverName = r.agent() + "." + r.namespace + ".svc"
	}

	// The agent: --web.config.file from the chart's ConfigMap, whose
	// certificate and key are files of the Secret's volume.
	ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
	spec := ds.Spec.Template.Spec
	agent := spec.Containers[0]
	webConfig := flagValues(agent.Args)["--web.config.file"]
	if webConfig == "" {
		t.Fatalf("agent args %v lack --web.config.file", agent.Args)
	}
	cmVol := mountedVolume(t, spec, agent, path.Dir(webConfig))
	if cmVol.ConfigMap == nil || cmVol.ConfigMap.Name != r.agent()+"-web" {
		t.Fatalf("the web config's volume %+v is not the ConfigMap %s-web", cmVol.VolumeSource, r.agent())
	}
	cm := decode[corev1.ConfigMap](t, r.objs, keyConfigMap, r.agent()+"-web")
	var web struct {
		TLS struct {
			CertFile string `json:"cert_file"`
			KeyFile  string `json:"key_file"`
		} `json:"tls_server_config"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data[path.Base(webConfig)]), &web); err != nil {
		t.Fatalf("web config %q: %v", cm.Data, err)
	}
	for _, f := range []struct{ file, key string }{{web.TLS.CertFile, "tls.crt"}, {web.TLS.KeyFile, "tls.key"}} {
		v := mountedVolume(t, spec, agent, path.Dir(f.file))
		if v.Secret == nil || v.Secret.SecretName != secret || !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool {
			return k.Key == f.key && k.Path == path.Base(f.file)
		}) {
			t.Errorf("web config's %s is not key %s of Secret %s: volume %+v", f.file, f.key, secret, v.VolumeSource)
		}
	}

	// The aggregator: https, the Secret's CA alone, the server name.
	dep := decode[appsv1.Deployment](t, r.objs, keyDeployment, r.aggregator())
	aspec := dep.Spec.Template.Spec
	agg := aspec.Containers[0]
	flags := flagValues(agg.Args)
	if flags["--agent-scheme"] != "https" || flags["--scrape-server-name"] != serverName {
		t.Errorf("aggregator --agent-scheme=%q --scrape-server-name=%q, want https and %s", flags["--agent-scheme"], flags["--scrape-server-name"], serverName)
	}
	ca := flags["--scrape-ca-file"]
	caVol := mountedVolume(t, aspec, agg, path.Dir(ca))
	if caVol.Secret == nil || caVol.Secret.SecretName != secret ||
		!slices.Equal(caVol.Secret.Items, []corev1.KeyToPath{{Key: "ca.crt", Path: path.Base(ca)}}) {
		t.Errorf("--scrape-ca-file=%s is not the ca.crt (and only it) of Secret %s: volume %+v", ca, secret, caVol.VolumeSource)
	}

	// The ServiceMonitor: https, verified as the aggregator does.
	if sms := r.objs.find(keyServiceMonit); len(sms) == 1 {
		sm := untyped(t, r.objs, keyServiceMonit, sms[0].Name)
		eps, _ := dig(sm, "spec", "endpoints").([]any)
		ep, _ := eps[0].(map[string]any)
		if ep["scheme"] != "https" || dig(ep, "tlsConfig", "serverName") != serverName ||
			dig(ep, "tlsConfig", "ca", "secret", "name") != secret || dig(ep, "tlsConfig", "ca", "secret", "key") != "ca.crt" {
			t.Errorf("ServiceMonitor endpoint scheme %v tlsConfig %v, want https, ca.crt of %s and serverName %s", ep["scheme"], ep["tlsConfig"], secret, serverName)
		}
	}

	// The certificate names the server name, and nothing else.
	switch want.source {
	case "chart":
		sec := decode[corev1.Secret](t, r.objs, keySecret, secret)
		checkServingCert(t, sec.Data["ca.crt"], sec.Data["tls.crt"], sec.Data["tls.key"], serverName)
		block, _ := pem.Decode(sec.Data["tls.crt"])
		if block == nil {
			t.Fatal("tls.crt holds no PEM block")
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(leaf.DNSNames, []string{serverName}) || len(leaf.IPAddresses) != 0 {
			t.Errorf("agent certificate SANs %v %v, want %s alone", leaf.DNSNames, leaf.IPAddresses, serverName)
		}
		if sec.Annotations["gpu-metrics-server.io/server-name"] != serverName {
			t.Errorf("Secret annotations %v lack the server name", sec.Annotations)
		}
	case "certManager":
		cert := untyped(t, r.objs, keyCertificate, secret)
		if dig(cert, "spec", "secretName") != secret {
			t.Errorf("Certificate secretName = %v, want %s", dig(cert, "spec", "secretName"), secret)
		}
		names, _ := dig(cert, "spec", "dnsNames").([]any)
		if len(names) != 1 || names[0] != serverName {
			t.Errorf("Certificate dnsNames %v, want [%s]", names, serverName)
		}
		if dig(cert, "spec", "issuerRef", "name") == nil {
			t.Error("Certificate has no issuerRef")
		}
	case "secret":
		for _, o := range r.objs.find(keySecret) {
			if o.Name == secret {
				t.Errorf("the chart renders the existing Secret %s", secret)
			}
		}
	}
}

// mountedVolume returns the volume c mounts at dir.
func mountedVolume(t *testing.T, spec corev1.PodSpec, c corev1.Container, dir string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/") != dir {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: %s is mounted writable", c.Name, dir)
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name {
				return v
			}
		}
	}
	t.Fatalf("%s mounts nothing at %s", c.Name, dir)
	return corev1.Volume{}
}
