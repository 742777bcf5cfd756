package install

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/geomux/geomux/pkg/seal"
)

// sealer encrypts what the install flow keeps in the admin's browser, with a
// key derived from install.state_key: the browser can hold it but neither
// read nor change it.
type sealer struct{ key seal.Key }

func newSealer(stateKey []byte) (sealer, error) {
	key, err := hkdf.Key(sha256.New, stateKey, nil, "geomux install cookies", 32)
	if err != nil {
		return sealer{}, err
	}
	k, err := seal.NewKey(key)
	if err != nil {
		return sealer{}, err
	}
	return sealer{key: k}, nil
}

// seal encrypts v, bound to name (a cookie cannot be passed off as another),
// with its expiry inside.
func (s sealer) seal(name string, v any, exp time.Time) (string, error) {
	b, err := json.Marshal(struct {
		Exp int64 `json:"exp"`
		V   any   `json:"v"`
	}{exp.Unix(), v})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.key.Seal(name, b)), nil
}

var errCookie = errors.New("install cookie missing, expired or altered")

func (s sealer) open(name, val string, now time.Time, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(val)
	if err != nil {
		return errCookie
	}
	plain, err := s.key.Open(name, raw)
	if err != nil {
		return errCookie
	}
	var env struct {
		Exp int64           `json:"exp"`
		V   json.RawMessage `json:"v"`
	}
	if json.Unmarshal(plain, &env) != nil || now.Unix() > env.Exp {
		return errCookie
	}
	return json.Unmarshal(env.V, v)
}

// chunk is how much of a sealed value one cookie carries: browsers keep
// about 4 KiB per cookie, name and attributes included.
const chunk = 3500

// maxChunks bounds how many cookies one value may take.
const maxChunks = 4

// setSealed stores v in cookies name.0, name.1, ... (tokens may not fit in
// one), for ttl.
func (h *Handler) setSealed(w http.ResponseWriter, name string, v any, ttl time.Duration) error {
	val, err := h.seal.seal(name, v, h.now().Add(ttl))
	if err != nil {
		return err
	}
	if len(val) > chunk*maxChunks {
		return errors.New("install cookie too large")
	}
	n := 0
	for ; n*chunk < len(val); n++ {
		http.SetCookie(w, h.cookie(name+"."+strconv.Itoa(n), val[n*chunk:min(len(val), (n+1)*chunk)], ttl))
	}
	// A longer earlier value's extra chunks would be read as part of this one.
	for i := n; i < maxChunks; i++ {
		http.SetCookie(w, h.cookie(name+"."+strconv.Itoa(i), "", -1))
	}
	return nil
}

// readSealed reads what setSealed stored.
func (h *Handler) readSealed(r *http.Request, name string, v any) error {
	var b strings.Builder
	for i := range maxChunks {
		c, err := r.Cookie(name + "." + strconv.Itoa(i))
		if err != nil {
			break
		}
		b.WriteString(c.Value)
	}
	if b.Len() == 0 {
		return errCookie
	}
	return h.seal.open(name, b.String(), h.now(), v)
}

// clearSealed deletes the cookies of name.
func (h *Handler) clearSealed(w http.ResponseWriter, r *http.Request, name string) {
	for i := range maxChunks {
		if _, err := r.Cookie(name + "." + strconv.Itoa(i)); err == nil {
			http.SetCookie(w, h.cookie(name+"."+strconv.Itoa(i), "", -1))
		}
	}
}

func (h *Handler) cookie(name, val string, ttl time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name: name, Value: val, Path: "/oauth/", HttpOnly: true, Secure: h.opts.secure(),
		// Lax: the cookie comes back on Zoom's top-level redirect to the
		// callback, never on a cross-site POST.
		SameSite: http.SameSiteLaxMode,
		MaxAge:   int(ttl / time.Second),
	}
	if ttl < 0 {
		c.MaxAge = -1
	}
	return c
}
