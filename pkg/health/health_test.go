package health_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/geomux/geomux/pkg/health"
)

type answer struct {
	Status  string            `json:"status"`
	Failing map[string]string `json:"failing"`
}

func get(t *testing.T, srv *httptest.Server, path string) (int, answer, http.Header) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("%s: body is not JSON: %v", path, err)
	}
	return resp.StatusCode, a, resp.Header
}

func serve(t *testing.T, r *health.Registry) *httptest.Server {
	mux := http.NewServeMux()
	r.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHealthz(t *testing.T) {
	r := health.NewRegistry()
	r.Register("nats", func() error { return errors.New("down") })
	r.SetStopping()
	srv := serve(t, r)
	// Alive even when not ready.
	status, a, h := get(t, srv, "/healthz")
	if status != http.StatusOK || a.Status != "ok" {
		t.Errorf("/healthz = %d %+v, want 200 ok", status, a)
	}
	if h.Get("Cache-Control") != "no-store" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Errorf("headers = %v", h)
	}
}

func TestReadyz(t *testing.T) {
	r := health.NewRegistry()
	var natsDown atomic.Bool
	r.Register("nats", func() error {
		if natsDown.Load() {
			return errors.New("disconnected")
		}
		return nil
	})
	r.Register("directory", func() error { return nil })
	srv := serve(t, r)

	status, a, _ := get(t, srv, "/readyz")
	if status != http.StatusOK || a.Status != "ready" || len(a.Failing) != 0 {
		t.Errorf("all passing: /readyz = %d %+v, want 200 ready", status, a)
	}

	natsDown.Store(true)
	status, a, _ = get(t, srv, "/readyz")
	if status != http.StatusServiceUnavailable || a.Status != "not ready" {
		t.Errorf("nats failing: /readyz = %d %+v, want 503", status, a)
	}
	if len(a.Failing) != 1 || a.Failing["nats"] != "disconnected" {
		t.Errorf("failing = %v, want only nats: disconnected", a.Failing)
	}

	// Recovers.
	natsDown.Store(false)
	if status, _, _ := get(t, srv, "/readyz"); status != http.StatusOK {
		t.Errorf("after recovery: /readyz = %d, want 200", status)
	}

	// A check registered again under the same name replaces the first.
	r.Register("directory", func() error { return errors.New("loading") })
	status, a, _ = get(t, srv, "/readyz")
	if status != http.StatusServiceUnavailable || len(a.Failing) != 1 || a.Failing["directory"] != "loading" {
		t.Errorf("replaced check: /readyz = %d %+v", status, a)
	}
	r.Register("directory", func() error { return nil })

	r.SetStopping()
	status, a, _ = get(t, srv, "/readyz")
	if status != http.StatusServiceUnavailable || len(a.Failing) != 1 || a.Failing["process"] != "shutting down" {
		t.Errorf("stopping: /readyz = %d %+v, want 503 process: shutting down", status, a)
	}

	resp, err := http.Post(srv.URL+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", resp.StatusCode)
	}
}

func TestReport(t *testing.T) {
	r := health.NewRegistry()
	if ok, f := r.Report(); !ok || len(f) != 0 {
		t.Errorf("empty registry: Report = %v %v, want ready", ok, f)
	}
	r.Register("a", func() error { return errors.New("x") })
	r.Register("b", func() error { return errors.New("y") })
	r.Register("c", func() error { return nil })
	ok, f := r.Report()
	if ok || len(f) != 2 || f["a"] != "x" || f["b"] != "y" {
		t.Errorf("Report = %v %v, want a and b failing", ok, f)
	}
}

func TestConcurrentRegisterAndReport(t *testing.T) {
	r := health.NewRegistry()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				r.Register(string(rune('a'+i)), func() error { return nil })
				if ok, f := r.Report(); !ok {
					t.Errorf("Report = %v %v", ok, f)
					return
				}
			}
		})
	}
	wg.Wait()
}

// The public listener says whether the process is ready, not what fails.
func TestPublicReadyzHidesReasons(t *testing.T) {
	r := health.NewRegistry()
	r.Register("nats", func() error { return errors.New("NATS connection is RECONNECTING to 10.1.2.3") })
	mux := http.NewServeMux()
	r.MountPublic(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "10.1.2.3") || strings.Contains(rec.Body.String(), "nats") {
		t.Errorf("public /readyz tells why: %s", rec.Body.String())
	}
}

func TestCollectorExportsEachCheck(t *testing.T) {
	r := health.NewRegistry()
	var down atomic.Bool
	r.Register("nats", func() error { return nil })
	r.Register("store", func() error {
		if down.Load() {
			return errors.New("full")
		}
		return nil
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collector())
	want := func(store int) string {
		return fmt.Sprintf(`
# HELP geomux_ready_check 1 while a readiness check of this process passes, 0 while it fails (the reason is on the admin /readyz): nats, nats-<region>, jetstream, store, ...
# TYPE geomux_ready_check gauge
geomux_ready_check{check="nats"} 1
geomux_ready_check{check="store"} %d
`, store)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(1))); err != nil {
		t.Error(err)
	}
	down.Store(true)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(0))); err != nil {
		t.Error(err)
	}
}
