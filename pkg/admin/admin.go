// Package admin is the operator HTTP listener (admin.listen): the admin API
// under /admin/ (bearer token), Prometheus metrics on /metrics, and the
// health endpoints. Parts of geomux contribute API routes.
package admin

import (
	"crypto/subtle"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/httpx"
)

// Route is one admin API route; Pattern is a net/http pattern such as
// "PUT /admin/v1/accounts/{accountId}".
type Route struct {
	Pattern string
	Handler http.Handler
}

// NewHandler serves routes behind the bearer token, metrics from g, and the
// health endpoints of h. /metrics and the health endpoints need no token:
// they hold no customer data and scrapers and probes carry none.
func NewHandler(token string, routes []Route, g prometheus.Gatherer, h *health.Registry) http.Handler {
	mux := http.NewServeMux()
	api := http.NewServeMux()
	for _, r := range routes {
		api.Handle(r.Pattern, r.Handler)
	}
	// Go's profiles, for whoever holds the admin token: stacks and counts,
	// never message content.
	// (net/http/pprof finds a profile's name after /debug/pprof/.)
	prof := http.NewServeMux()
	prof.HandleFunc("GET /debug/pprof/", pprof.Index)
	prof.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	prof.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	prof.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	api.Handle("GET /admin/debug/pprof/", http.StripPrefix("/admin", prof))
	mux.Handle("/admin/", RequireToken(token, api))
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	h.Mount(mux)
	return mux
}

// RequireToken answers 401 to a request without "Authorization: Bearer token".
func RequireToken(token string, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="geomux admin"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong admin token (send Authorization: Bearer <admin.token>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteJSON answers v as indented JSON, never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteIndentedJSON(w, status, v)
}

// WriteError answers {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
