package zoom_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// exampleBodies are the example Zoom events, each as written in zoomtest's
// testdata (indented, trailing newline) and compacted as Zoom sends it.
func exampleBodies(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, name := range zoomtest.Names {
		raw, err := os.ReadFile("zoomtest/testdata/" + name + ".json")
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, raw, zoomtest.Event(name))
	}
	return out
}

// fuzzNow is the fixed clock of FuzzVerify; fuzzSkew the accepted skew.
var (
	fuzzNow  = time.Unix(1700000000, 0)
	fuzzSkew = 5 * time.Minute
)

// referenceSignature is x-zm-signature computed straight from Zoom's
// definition with crypto/hmac, independently of package zoom.
func referenceSignature(secret, ts string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("v0:" + ts + ":"))
	h.Write(body)
	return "v0=" + hex.EncodeToString(h.Sum(nil))
}

// FuzzVerify checks, for any secret, body and timestamp:
//   - a body signed with zoom.Sign (which matches the reference HMAC)
//     verifies with a Verifier on that secret, also beside another secret,
//     at any timestamp within the skew, and the key returned answers URL
//     validation with that secret;
//   - the same signature over the body with any one byte changed, or one
//     byte more, is ErrBadSignature;
//   - a timestamp outside the skew is ErrStaleTimestamp;
//   - arbitrary signature and timestamp headers never panic and yield nil
//     or one of the package's four sentinel errors, nil only for the right
//     signature of a timestamp within the skew.
func FuzzVerify(f *testing.F) {
	f.Add(goldenSecret, int64(0), []byte(goldenBody), goldenSig, goldenTS, uint(0))
	f.Add(goldenSecret, int64(-42), []byte(goldenBody), strings.ToUpper(goldenSig), goldenTS, uint(7))
	f.Add("", int64(300), []byte{}, "", "", uint(1))
	f.Add("k", int64(-301), []byte("{}"), "v0=", "+1700000000", uint(2))
	f.Add(strings.Repeat("s", 100), int64(1<<62), []byte("\x00\xff"), "v1="+strings.Repeat("0", 64), "-1", uint(255))
	f.Add("s", int64(-1<<63), []byte("x"), "v0="+strings.Repeat("g", 64), "9223372036854775807", uint(1<<40))
	f.Add("s", int64(5), []byte("x"), goldenSig, "1700000000.5", uint(3))
	for i, body := range exampleBodies(f) {
		f.Add("s3cr3t", int64(i*37-150), body, zoom.Sign("s3cr3t", goldenTS, body), goldenTS, uint(i*101))
	}
	f.Fuzz(func(t *testing.T, secret string, offset int64, body []byte, sigHdr, tsHdr string, pick uint) {
		skewSecs := int64(fuzzSkew / time.Second)
		v := zoom.NewVerifier([]string{secret}, fuzzSkew)
		zoom.SetVerifierNow(v, func() time.Time { return fuzzNow })

		// A signed body verifies, at any timestamp within the skew.
		ts := strconv.FormatInt(fuzzNow.Unix()+offset%(skewSecs+1), 10)
		sig := zoom.Sign(secret, ts, body)
		if ref := referenceSignature(secret, ts, body); sig != ref {
			t.Fatalf("Sign(%q, %s, %q) = %s, reference HMAC says %s", secret, ts, body, sig, ref)
		}
		key, err := v.Verify(sig, ts, body)
		if err != nil || key == nil {
			t.Fatalf("Verify(Sign(%q, %s, %q)) = %v, %v; want a key", secret, ts, body, key, err)
		}
		tok := strconv.FormatUint(uint64(pick), 36)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(tok))
		if got, want := key.EncryptToken(tok), hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Fatalf("EncryptToken(%q) = %s, want %s", tok, got, want)
		}
		// Beside another secret, as while rotating.
		rot := zoom.NewVerifier([]string{secret + "-old", secret}, fuzzSkew)
		zoom.SetVerifierNow(rot, func() time.Time { return fuzzNow })
		if _, err := rot.Verify(sig, ts, body); err != nil {
			t.Fatalf("Verify with [old, secret] = %v, want nil", err)
		}

		// Any one body byte changed, or one byte appended: bad signature.
		if len(body) > 0 {
			changed := bytes.Clone(body)
			i := int(pick % uint(len(body)))
			changed[i] ^= byte(1 + (pick/uint(len(body)))%255)
			if _, err := v.Verify(sig, ts, changed); err != zoom.ErrBadSignature {
				t.Fatalf("Verify with body byte %d changed (%q → %q) = %v, want ErrBadSignature", i, body, changed, err)
			}
		}
		if _, err := v.Verify(sig, ts, append(bytes.Clone(body), byte(pick))); err != zoom.ErrBadSignature {
			t.Fatalf("Verify with a byte appended = %v, want ErrBadSignature", err)
		}

		// A timestamp outside the skew is stale, however well signed.
		far := 1 + (offset%1_000_000_000+1_000_000_000)%1_000_000_000
		if offset < 0 {
			far = -far
		}
		if far > 0 {
			far += skewSecs
		} else {
			far -= skewSecs
		}
		staleTS := strconv.FormatInt(fuzzNow.Unix()+far, 10)
		if _, err := v.Verify(zoom.Sign(secret, staleTS, body), staleTS, body); err != zoom.ErrStaleTimestamp {
			t.Fatalf("Verify at %s (now %d, skew %s) = %v, want ErrStaleTimestamp", staleTS, fuzzNow.Unix(), fuzzSkew, err)
		}

		// Arbitrary headers: nil or a sentinel, nil only when right.
		key, err = v.Verify(sigHdr, tsHdr, body)
		switch err {
		case nil:
			if key == nil {
				t.Fatal("Verify returned neither a key nor an error")
			}
			n, perr := strconv.ParseInt(tsHdr, 10, 64)
			if perr != nil {
				t.Fatalf("Verify accepted timestamp %q, which is not Unix seconds", tsHdr)
			}
			if d := fuzzNow.Sub(time.Unix(n, 0)); d > fuzzSkew || d < -fuzzSkew {
				t.Fatalf("Verify accepted timestamp %q, %v from now", tsHdr, d)
			}
			if !strings.HasPrefix(sigHdr, "v0=") || "v0="+strings.ToLower(sigHdr[3:]) != referenceSignature(secret, tsHdr, body) {
				t.Fatalf("Verify accepted signature %q for %q at %q", sigHdr, body, tsHdr)
			}
		case zoom.ErrMissingSignature:
			if sigHdr != "" && tsHdr != "" {
				t.Fatalf("ErrMissingSignature with both headers present (%q, %q)", sigHdr, tsHdr)
			}
		case zoom.ErrBadTimestamp, zoom.ErrStaleTimestamp, zoom.ErrBadSignature:
			if key != nil {
				t.Fatalf("Verify returned a key with %v", err)
			}
		default:
			t.Fatalf("Verify(%q, %q) = %v (%T), not one of the package's sentinel errors", sigHdr, tsHdr, err, err)
		}
	})
}

// FuzzParseHead checks that ParseHead never panics, fails only with
// ErrNotJSON or ErrNoEvent (ErrNotJSON for anything that is not JSON), and
// on success agrees with a plain decoding of the body into map[string]any:
// Event is the "event" string (never empty), AccountID is payload.accountId
// when that is a non-empty string, else payload.account_id, and PlainToken is
// payload.plainToken.
//
// Keys match exactly; of a repeated key ParseHead takes the first, a map the
// last. The agreement is therefore checked only where no key is repeated, at
// the top level and in payload; the other properties hold for every body.
func FuzzParseHead(f *testing.F) {
	for _, body := range exampleBodies(f) {
		f.Add(body)
	}
	for _, s := range []string{
		``, `null`, `[]`, `"event"`, `{}`, `{"event":""}`, `{"event":"x"}`, `{"event":5}`,
		`{"EVENT":"x","Payload":{"ACCOUNTID":"a"}}`,
		`{"event":"x","payload":{"accountId":"","account_id":"snake"}}`,
		`{"event":"x","payload":{"accountId":"a","accountId":null}}`,
		`{"event":"x","payload":{"accountId":"a"},"payload":{"plainToken":"t"}}`,
		`{"event":"x","payload":{"accountId":"a","AccountId":"b"}}`,
		`{"event":"x","payload":"nope"}`, `{"event":"x","payload":[]}`,
		`{"event":"x","payload":{"account_id":7}}`, `{"event":"x","n":1e999}`,
		`{"event":"x"} {}`, `{"event":"\u0078\ud800"}`, "{\"event\":\"\xff\"}",
		`{"\u0065vent":"x","payload":{"plainTo\u212aen":"t"}}`,
		`{"event":"a","event":"b"}`, `{"event":"x","payload":{"accountId":"a","accountId":"b"}}`,
		`{"event":"x","payload":{"accountId":"a"},"payload":{"accountId":"b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := zoom.ParseHead(body)
		switch err {
		case nil:
			if h.Event == "" {
				t.Fatalf("ParseHead(%q) succeeded with an empty Event", body)
			}
		case zoom.ErrNotJSON, zoom.ErrNoEvent, zoom.ErrDuplicateKey:
			if h != (zoom.Head{}) {
				t.Fatalf("ParseHead(%q) = %+v with error %v; want the zero Head", body, h, err)
			}
		default:
			t.Fatalf("ParseHead(%q) error %v (%T) is not ErrNotJSON, ErrNoEvent or ErrDuplicateKey", body, err, err)
		}
		if !json.Valid(body) && err != zoom.ErrNotJSON {
			t.Fatalf("ParseHead(%q) of invalid JSON = %+v, %v; want ErrNotJSON", body, h, err)
		}
		switch dup := readKeyDuplicated(body); {
		case err == zoom.ErrDuplicateKey && !dup:
			t.Fatalf("ParseHead(%q) = ErrDuplicateKey, but no field it reads appears twice", body)
		case err == nil && dup:
			t.Fatalf("ParseHead(%q) accepted a body where a field it reads appears twice", body)
		}
		if err != nil {
			return
		}

		var top map[string]any
		if json.Unmarshal(body, &top) != nil || top == nil {
			return
		}
		topKeys, ok := objectKeys(body)
		if !ok || !unique(topKeys) {
			return
		}
		if ev, _ := top["event"].(string); h.Event != ev {
			t.Fatalf("ParseHead(%q).Event = %q, want %q", body, h.Event, ev)
		}
		var want zoom.Head
		want.Event = h.Event
		if pk := "payload"; top[pk] != nil {
			if payload, isObj := top[pk].(map[string]any); isObj {
				var rawTop map[string]json.RawMessage
				if json.Unmarshal(body, &rawTop) != nil {
					t.Fatalf("%q decodes into map[string]any but not map[string]json.RawMessage", body)
				}
				payloadKeys, ok := objectKeys(rawTop[pk])
				if !ok || !unique(payloadKeys) {
					return
				}
				if s, _ := payload["accountId"].(string); s != "" {
					want.AccountID = s
				} else {
					want.AccountID, _ = payload["account_id"].(string)
				}
				want.PlainToken, _ = payload["plainToken"].(string)
				var rawPayload map[string]json.RawMessage
				_ = json.Unmarshal(rawTop[pk], &rawPayload)
				if objKeys, isObj := objectKeys(rawPayload["object"]); isObj && !unique(objKeys) {
					return
				}
				if utf8.Valid(body) {
					want.Conversation = conversationOracle(h.Event, payload)
				} else {
					// encoding/json replaces invalid UTF-8, gjson keeps it:
					// either names the conversation as well (it is hashed).
					want.Conversation = h.Conversation
				}
			}
		}
		if h != want {
			t.Fatalf("ParseHead(%q) = %+v, want %+v (from the body decoded into a map)", body, h, want)
		}
	})
}

// conversationOracle is zoom.Conversation's rules, read from the payload
// decoded into a map.
func conversationOracle(event string, payload map[string]any) string {
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	switch {
	case event == "bot_notification" || event == "bot_installed" || strings.HasPrefix(event, "interactive_message_"):
		to, _, _ := strings.Cut(str(payload, "toJid"), "/")
		if strings.Contains(to, "@conference.") {
			return "channel:" + to
		}
		if u := str(payload, "userJid"); u != "" {
			return "user:" + u
		}
		if to != "" {
			return "user:" + to
		}
	case strings.HasPrefix(event, "team_chat."):
		if obj, ok := payload["object"].(map[string]any); ok {
			if c := str(obj, "channel_id"); c != "" {
				return "channel:" + c
			}
		}
		if op := str(payload, "operator_id"); op != "" {
			return "user:" + op
		}
	}
	return ""
}

// readKeyDuplicated reports whether a field ParseHead reads appears twice
// in its object: event or payload at the top, or one of the payload's
// fields in the first payload.
func readKeyDuplicated(body []byte) bool {
	top, ok := rawFields(body)
	if !ok {
		return false
	}
	n := map[string]int{}
	var payload json.RawMessage
	for _, f := range top {
		n[f.key]++
		if f.key == "payload" && payload == nil {
			payload = f.value
		}
	}
	if n["event"] > 1 || n["payload"] > 1 {
		return true
	}
	fields, ok := rawFields(payload)
	if !ok {
		return false
	}
	clear(n)
	for _, f := range fields {
		n[f.key]++
	}
	for _, k := range []string{"accountId", "account_id", "plainToken", "toJid", "userJid", "object", "operator_id"} {
		if n[k] > 1 {
			return true
		}
	}
	return false
}

type rawField struct {
	key   string
	value json.RawMessage
}

// rawFields lists the fields of the JSON object raw, repeats included, in
// order; ok is false if raw is not a JSON object.
func rawFields(raw []byte) (fields []rawField, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		k, isStr := tok.(string)
		if !isStr {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		fields = append(fields, rawField{k, v})
	}
	return fields, true
}

// objectKeys lists the keys of the JSON object raw, repeats included, in
// order; ok is false if raw is not a JSON object.
func objectKeys(raw []byte) (keys []string, ok bool) {
	fields, ok := rawFields(raw)
	for _, f := range fields {
		keys = append(keys, f.key)
	}
	return keys, ok
}

// unique reports whether no key is repeated.
func unique(keys []string) bool {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			return false
		}
		seen[k] = true
	}
	return true
}
