package helm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

const (
	chart = "geomux"
	sc    = "../supercluster"
)

// sites are the releases of the documented deployment, with the config
// files each mounts (deploy/supercluster/helm/values-<site>.yaml).
var sites = map[string][]string{
	"hub": {"hub-ingress.yaml", "hub-router.yaml", "deployer.yaml", "auditor.yaml"},
	"eu":  {"worker-eu.yaml"},
	"uk":  {"worker-uk.yaml"},
	"us":  {"worker-us.yaml"},
}

// helmBin is $HELM (make test installs it in bin/), or the test is skipped.
func helmBin(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		if os.Getenv("GEOMUXTEST_REQUIRE_HELM") != "" {
			t.Fatal("HELM is not set (make test installs helm in bin/)")
		}
		t.Skip("HELM is not set: run make test, which installs helm in bin/")
	}
	return h
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(helmBin(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// siteArgs are the values and config files of a site's release.
func siteArgs(site string) []string {
	args := []string{"-f", filepath.Join(sc, "helm", "values-"+site+".yaml")}
	for _, f := range sites[site] {
		args = append(args, "--set-file", "config."+strings.ReplaceAll(f, ".", `\.`)+"="+filepath.Join(sc, f))
	}
	return args
}

// strict decodes the built-in kinds, refusing unknown and duplicate fields.
var strict = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// The Prometheus Operator's kinds, as far as the chart uses them.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels,omitempty"`
				Annotations map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// decode decodes one rendered manifest strictly.
func decode(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	switch tm.Kind {
	case "ServiceMonitor":
		var sm serviceMonitor
		return nil, yaml.UnmarshalStrict(doc, &sm)
	case "PrometheusRule":
		var pr prometheusRule
		return nil, yaml.UnmarshalStrict(doc, &pr)
	}
	obj, _, err := strict.Decode(doc, nil, nil)
	return obj, err
}

func docs(rendered string) [][]byte {
	var out [][]byte
	for _, d := range strings.Split(rendered, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(d, "---")) != "" && strings.Contains(d, "kind:") {
			out = append(out, []byte(d))
		}
	}
	return out
}

func TestChartRendersEachSiteStrictly(t *testing.T) {
	for site := range sites {
		t.Run(site, func(t *testing.T) {
			helm(t, append([]string{"lint", "--strict", chart}, siteArgs(site)...)...)
			rendered := helm(t, append([]string{"template", "geomux-" + site, chart, "--namespace", "geomux-" + site}, siteArgs(site)...)...)
			kinds := map[string]int{}
			for _, d := range docs(rendered) {
				obj, err := decode(d)
				if err != nil {
					t.Errorf("not a valid manifest: %v\n%s", err, d)
					continue
				}
				var tm metav1.TypeMeta
				_ = yaml.Unmarshal(d, &tm)
				kinds[tm.Kind]++
				switch o := obj.(type) {
				case *appsv1.Deployment:
					checkPod(t, o.Name, o.Spec.Template.Spec)
				case *batchv1.Job:
					checkPod(t, o.Name, o.Spec.Template.Spec)
				case *batchv1.CronJob:
					checkPod(t, o.Name, o.Spec.JobTemplate.Spec.Template.Spec)
				case *corev1.ConfigMap:
					for name, body := range o.Data {
						want, err := os.ReadFile(filepath.Join(sc, name))
						if err != nil || strings.TrimSpace(body) != strings.TrimSpace(string(want)) {
							t.Errorf("the ConfigMap's %s is not deploy/supercluster/%s (%v)", name, name, err)
						}
					}
				case *networkingv1.Ingress:
					paths := map[string]string{}
					for _, p := range o.Spec.Rules[0].HTTP.Paths {
						paths[p.Path] = p.Backend.Service.Name
					}
					for _, p := range []string{"/zoom/webhook", "/install", "/oauth/"} {
						if paths[p] != "geomux-ingress" {
							t.Errorf("the Ingress sends %s to %q, want geomux-ingress", p, paths[p])
						}
					}
					if len(o.Spec.TLS) == 0 {
						t.Error("the Ingress has no TLS: Zoom calls only https")
					}
				}
			}
			want := map[string]int{"Deployment": 1, "Service": 1, "NetworkPolicy": 1, "PodDisruptionBudget": 1, "ConfigMap": 1, "ServiceMonitor": 1}
			if site == "hub" {
				want = map[string]int{"Deployment": 2, "Service": 2, "NetworkPolicy": 2, "PodDisruptionBudget": 1, "ConfigMap": 1,
					"Ingress": 1, "Job": 1, "CronJob": 1, "ServiceMonitor": 1, "PrometheusRule": 1}
			}
			for k, n := range want {
				if kinds[k] != n {
					t.Errorf("%d %s, want %d (rendered: %v)", kinds[k], k, n, kinds)
				}
			}
		})
	}
}

// checkPod checks what every geomux pod must have.
func checkPod(t *testing.T, name string, p corev1.PodSpec) {
	t.Helper()
	if p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot || p.EnableServiceLinks == nil || *p.EnableServiceLinks {
		t.Errorf("%s: must run as non-root, without service links", name)
	}
	c := p.Containers[0]
	if !strings.HasPrefix(c.Image, "registry.example.com/geomux:") || len(c.Args) == 0 || c.SecurityContext == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("%s: image %q, args %q, read-only root", name, c.Image, c.Args)
	}
}

// TestStrictDecodingRefusesUnknownFields keeps the test above honest: a
// misspelt field is an error, not a silently dropped setting.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoint: []}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x, name: y}\n",
	} {
		if _, err := decode([]byte(doc)); err == nil {
			t.Errorf("decoded without error:\n%s", doc)
		}
	}
}

// TestAlertsAreTheRepositoryAlerts: the PrometheusRule carries
// deploy/prometheus/alerts.yaml (a link to the chart's file).
func TestAlertsAreTheRepositoryAlerts(t *testing.T) {
	link, err := filepath.EvalSymlinks("../prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := filepath.Abs(link)
	b, _ := filepath.Abs("geomux/files/alerts.yaml")
	if a != b {
		t.Errorf("deploy/prometheus/alerts.yaml leads to %s, not the chart's files/alerts.yaml", a)
	}
}
