package install

import (
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// SetNow replaces the handler's clock. Call it before the handler serves;
// now must be safe for concurrent use.
func SetNow(h *Handler, now func() time.Time) { h.now = now }

// SealInstallCookie seals what the install cookie (geomux_install.0) holds,
// as the handler does, so a test can present a valid cookie with chosen
// contents (e.g. a wrong PKCE verifier).
func SealInstallCookie(h *Handler, nonce, verifier string, exp time.Time) (string, error) {
	return h.seal.seal(installCookie, installSecret{Nonce: nonce, Verifier: verifier}, exp)
}

// SetSealed and ReadSealed expose the chunked sealed cookies.
func SetSealed(h *Handler, w http.ResponseWriter, name string, v any, ttl time.Duration) error {
	return h.setSealed(w, name, v, ttl)
}

func ReadSealed(h *Handler, r *http.Request, name string, v any) error {
	return h.readSealed(r, name, v)
}

// Unlimited lifts the callback's rate limit, for tests that call it many
// times from one address on purpose.
func Unlimited(h *Handler) {
	h.limit = &limiter{all: rate.NewLimiter(rate.Inf, 0), addrs: map[string]*rate.Limiter{}, addrLimit: rate.Inf}
}
