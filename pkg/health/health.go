// Package health answers /healthz (the process is alive) and /readyz (every
// part the process runs is ready to do its work).
package health

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/geomux/geomux/pkg/httpx"
)

// Check reports why a part is not ready, or nil.
type Check func() error

// Registry collects the readiness checks of the parts a process runs. It is
// safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	checks   map[string]Check
	stopping atomic.Bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{checks: map[string]Check{}} }

// Register adds a named check; a second check of the same name replaces it.
func (r *Registry) Register(name string, c Check) {
	r.mu.Lock()
	r.checks[name] = c
	r.mu.Unlock()
}

// SetStopping makes the process not ready from now on: it is shutting down
// and load balancers should stop sending it work.
func (r *Registry) SetStopping() { r.stopping.Store(true) }

// Report runs every check. ok is true when all pass; failures maps each
// failing part to its reason.
func (r *Registry) Report() (ok bool, failures map[string]string) {
	failures = map[string]string{}
	if r.stopping.Load() {
		failures["process"] = "shutting down"
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for name, c := range r.checks {
		if err := c(); err != nil {
			failures[name] = err.Error()
		}
	}
	return len(failures) == 0, failures
}

// MountPublic serves GET /healthz and GET /readyz on a public listener: the
// status only, not what fails (that is for operators, on the admin listener).
func (r *Registry) MountPublic(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		noStore(w)
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, _ := r.Report(); !ok {
			noStore(w)
			httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		noStore(w)
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// Mount serves GET /healthz and GET /readyz on mux; /readyz lists what is
// not ready.
func (r *Registry) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		noStore(w)
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, failures := r.Report()
		if ok {
			noStore(w)
			httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
			return
		}
		noStore(w)
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failing": failures})
	})
}

func noStore(w http.ResponseWriter) { w.Header().Set("Cache-Control", "no-store") }
