package zoom_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// Golden values, computed by hand with openssl (OpenSSL 3.0) outside Go.
//
// body is zoomtest.Event("bot_notification") written to a file (the compacted
// example, 442 bytes, no trailing newline); the signature was computed with
//
//	printf 'v0:1700000000:%s' "$(cat body)" | openssl dgst -sha256 -hmac geomux-test-secret
//	printf 'v0:1700000000:%s' "$(cat body)" | openssl dgst -sha256 -hmac old-secret
//
// and the URL validation answers with
//
//	printf %s qgg8vlvZRS6UYooatFL8Aw | openssl dgst -sha256 -hmac geomux-test-secret
//	printf %s qgg8vlvZRS6UYooatFL8Aw | openssl dgst -sha256 -hmac old-secret
//	printf %s qgg8vlvZRS6UYooatFL8Aw | openssl dgst -sha256 -hmac new-secret
const (
	goldenSecret = "geomux-test-secret"
	goldenTS     = "1700000000"
	goldenBody   = `{"event":"bot_notification","event_ts":1560796234686,"payload":{"accountId":"gVcjZnWWRLWvv_GtyGuaxg","channelName":"Photos","cmd":"island","name":"Unsplash","robotJid":"v10r4uxexurcasg-pwh8hyh7sg@xmpp.zoom.us","timestamp":1560796234686,"toJid":"b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us","triggerId":"exampleTriggerId","userId":"KdYKjnimT4KPd8KKdQt9FQ","userJid":"kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us","userName":"Jill Chill"}}`
	goldenSig    = "v0=1fbfd37e4ad4b43b19058e0528f376c1317da8123b921f8579f6eca4c91f55d5"
	goldenSigOld = "v0=652ad9e146f27b0682b875fde0084fa536da15e390797f81ae2271923df59444"

	goldenPlainToken   = "qgg8vlvZRS6UYooatFL8Aw"
	goldenEncrypted    = "77e021a88a17136f65613107927b373fa741767400070a9f3013d6ab79bd875e"
	goldenEncryptedOld = "17ea4a7258f66dad5075422c5f32cb13a7f8bc398e97e2ec4804b2ad388483ca"
	goldenEncryptedNew = "72442ccdd6290c1eebe74ed224684b50e9ee69b94bd1daa05100f11e2b5f4587"
)

// goldenNow is 42 s after the golden timestamp: well inside any skew.
var goldenNow = time.Unix(1700000000+42, 0)

func verifierAt(secrets []string, skew time.Duration, now time.Time) *zoom.Verifier {
	v := zoom.NewVerifier(secrets, skew)
	zoom.SetVerifierNow(v, func() time.Time { return now })
	return v
}

func TestVerifyGoldenOpenSSLSignature(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	if string(body) != goldenBody {
		t.Fatalf("the bot_notification example changed; recompute the golden values.\n got %s\nwant %s", body, goldenBody)
	}
	v := verifierAt([]string{goldenSecret}, 5*time.Minute, goldenNow)
	key, err := v.Verify(goldenSig, goldenTS, body)
	if err != nil {
		t.Fatalf("Verify(openssl signature) = %v, want nil", err)
	}
	if key == nil {
		t.Fatal("Verify returned a nil key for a valid signature")
	}
	if got := key.EncryptToken(goldenPlainToken); got != goldenEncrypted {
		t.Errorf("EncryptToken = %s, want openssl's %s", got, goldenEncrypted)
	}
	if got := zoom.Sign(goldenSecret, goldenTS, body); got != goldenSig {
		t.Errorf("Sign = %s, want openssl's %s", got, goldenSig)
	}
}

func TestEncryptTokenGolden(t *testing.T) {
	// A Key is only obtained from Verify: sign something with each secret.
	for _, tc := range []struct{ secret, want string }{
		{goldenSecret, goldenEncrypted},
		{"old-secret", goldenEncryptedOld},
		{"new-secret", goldenEncryptedNew},
	} {
		t.Run(tc.secret, func(t *testing.T) {
			v := verifierAt([]string{tc.secret}, time.Minute, goldenNow)
			key, err := v.Verify(zoom.Sign(tc.secret, goldenTS, []byte("{}")), goldenTS, []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			if got := key.EncryptToken(goldenPlainToken); got != tc.want {
				t.Errorf("EncryptToken(%q) with %q = %s, want %s", goldenPlainToken, tc.secret, got, tc.want)
			}
		})
	}
}

var opensslOut = regexp.MustCompile(`= ?([0-9a-f]{64})\s*$`)

// opensslHMAC runs openssl on a file holding data and returns the hex HMAC.
func opensslHMAC(t *testing.T, secret string, data []byte) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not on PATH")
	}
	f := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "dgst", "-sha256", "-hmac", secret, f).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v: %s", err, out)
	}
	m := opensslOut.FindSubmatch(out)
	if m == nil {
		t.Fatalf("cannot read openssl's answer %q", out)
	}
	return string(m[1])
}

func TestVerifyAgainstOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
	bodies := map[string][]byte{
		// Bytes a shell's $(...) would lose or a careless signer might normalise.
		"trailing newline and UTF-8": []byte("{\"event\":\"bot_notification\",\"payload\":{\"cmd\":\"héllo … 日本\"}}\n"),
		"empty body":                 {},
	}
	for _, name := range zoomtest.Names {
		bodies[name] = zoomtest.Event(name)
	}
	secret := "s3cr3t-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	// The real clock: the verifier's default now.
	v := zoom.NewVerifier([]string{"some-other-secret", secret}, 5*time.Minute)
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			msg := append([]byte("v0:"+ts+":"), body...)
			sig := "v0=" + opensslHMAC(t, secret, msg)
			if got := zoom.Sign(secret, ts, body); got != sig {
				t.Errorf("Sign = %s, openssl says %s", got, sig)
			}
			key, err := v.Verify(sig, ts, body)
			if err != nil {
				t.Fatalf("Verify(openssl signature) = %v", err)
			}
			tok := "tok-" + name
			if got, want := key.EncryptToken(tok), opensslHMAC(t, secret, []byte(tok)); got != want {
				t.Errorf("EncryptToken = %s, openssl says %s", got, want)
			}
		})
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	v := verifierAt([]string{goldenSecret}, 5*time.Minute, goldenNow)
	// Every single-byte change anywhere in the body must fail.
	for i := range body {
		b := append([]byte(nil), body...)
		b[i] ^= 0x01
		if _, err := v.Verify(goldenSig, goldenTS, b); !errors.Is(err, zoom.ErrBadSignature) {
			t.Fatalf("byte %d changed: Verify = %v, want ErrBadSignature", i, err)
		}
	}
	cases := map[string]struct {
		sig, ts string
		body    []byte
	}{
		"byte appended":   {goldenSig, goldenTS, append(append([]byte(nil), body...), ' ')},
		"last byte cut":   {goldenSig, goldenTS, body[:len(body)-1]},
		"empty body":      {goldenSig, goldenTS, nil},
		"other timestamp": {goldenSig, "1700000001", body},
		"signature of another secret": {
			zoom.Sign("not-the-secret", goldenTS, body), goldenTS, body,
		},
		"signature digit changed": {goldenSig[:len(goldenSig)-1] + "4", goldenTS, body},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			key, err := v.Verify(tc.sig, tc.ts, tc.body)
			if !errors.Is(err, zoom.ErrBadSignature) {
				t.Errorf("Verify = %v, want ErrBadSignature", err)
			}
			if key != nil {
				t.Error("Verify returned a key for a bad signature")
			}
		})
	}
}

func TestVerifyWrongSecret(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	v := verifierAt([]string{"geomux-test-secreT"}, 5*time.Minute, goldenNow)
	if _, err := v.Verify(goldenSig, goldenTS, body); !errors.Is(err, zoom.ErrBadSignature) {
		t.Errorf("Verify with the wrong secret = %v, want ErrBadSignature", err)
	}
	none := verifierAt(nil, 5*time.Minute, goldenNow)
	if _, err := none.Verify(goldenSig, goldenTS, body); !errors.Is(err, zoom.ErrBadSignature) {
		t.Errorf("Verify with no secrets = %v, want ErrBadSignature", err)
	}
}

func TestVerifyRotation(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	v := verifierAt([]string{"new-secret", "old-secret"}, 5*time.Minute, goldenNow)

	// Signed by openssl with the second (old) secret.
	key, err := v.Verify(goldenSigOld, goldenTS, body)
	if err != nil {
		t.Fatalf("request signed with the second secret: %v", err)
	}
	if got := key.EncryptToken(goldenPlainToken); got != goldenEncryptedOld {
		t.Errorf("key of the second secret: EncryptToken = %s, want %s (old-secret's)", got, goldenEncryptedOld)
	}

	// And with the first one, the first key answers.
	key, err = v.Verify(zoom.Sign("new-secret", goldenTS, body), goldenTS, body)
	if err != nil {
		t.Fatalf("request signed with the first secret: %v", err)
	}
	if got := key.EncryptToken(goldenPlainToken); got != goldenEncryptedNew {
		t.Errorf("key of the first secret: EncryptToken = %s, want %s (new-secret's)", got, goldenEncryptedNew)
	}

	// A secret that is neither still fails.
	if _, err := v.Verify(goldenSig, goldenTS, body); !errors.Is(err, zoom.ErrBadSignature) {
		t.Errorf("request signed with a third secret: %v, want ErrBadSignature", err)
	}
}

func TestVerifyTimestamp(t *testing.T) {
	const skew = 5 * time.Minute
	now := time.Unix(1700000000, 0)
	body := []byte(`{"event":"bot_notification"}`)
	v := verifierAt([]string{"s"}, skew, now)
	at := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	for _, tc := range []struct {
		name string
		ts   string
		want error
	}{
		{"now", at(0), nil},
		{"exactly skew old", at(-skew), nil},
		{"exactly skew ahead", at(skew), nil},
		{"older than skew", at(-skew - time.Second), zoom.ErrStaleTimestamp},
		{"newer than skew", at(skew + time.Second), zoom.ErrStaleTimestamp},
		{"a day old", at(-24 * time.Hour), zoom.ErrStaleTimestamp},
		{"milliseconds instead of seconds", strconv.FormatInt(now.UnixMilli(), 10), zoom.ErrStaleTimestamp},
		{"zero", "0", zoom.ErrStaleTimestamp},
		{"not a number", "yesterday", zoom.ErrBadTimestamp},
		{"fraction", "1700000000.5", zoom.ErrBadTimestamp},
		{"hex", "0x6553f100", zoom.ErrBadTimestamp},
		{"spaces", " 1700000000", zoom.ErrBadTimestamp},
		{"overflow", "99999999999999999999", zoom.ErrBadTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Signed correctly, so that only the timestamp can fail.
			_, err := v.Verify(zoom.Sign("s", tc.ts, body), tc.ts, body)
			if !errors.Is(err, tc.want) { // errors.Is(err, nil) holds only for a nil err
				t.Errorf("Verify(ts %q) = %v, want %v", tc.ts, err, tc.want)
			}
		})
	}
}

func TestVerifyMalformed(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	v := verifierAt([]string{goldenSecret}, 5*time.Minute, goldenNow)
	hexPart := strings.TrimPrefix(goldenSig, "v0=")
	for _, tc := range []struct {
		name, sig, ts string
		want          error
	}{
		{"no signature", "", goldenTS, zoom.ErrMissingSignature},
		{"no timestamp", goldenSig, "", zoom.ErrMissingSignature},
		{"neither", "", "", zoom.ErrMissingSignature},
		{"no v0= prefix", hexPart, goldenTS, zoom.ErrBadSignature},
		{"no v0= prefix, right length", "xx=" + hexPart, goldenTS, zoom.ErrBadSignature},
		{"v1 scheme", "v1=" + hexPart, goldenTS, zoom.ErrBadSignature},
		{"too short", goldenSig[:len(goldenSig)-2], goldenTS, zoom.ErrBadSignature},
		{"too long", goldenSig + "00", goldenTS, zoom.ErrBadSignature},
		{"odd length", goldenSig[:len(goldenSig)-1], goldenTS, zoom.ErrBadSignature},
		{"non-hex", "v0=" + strings.Repeat("zz", 32), goldenTS, zoom.ErrBadSignature},
		{"non-hex last char", goldenSig[:len(goldenSig)-1] + "g", goldenTS, zoom.ErrBadSignature},
		{"base64 instead of hex", "v0=H7/TfkrUtDsZBY4FKPN2wTF9qBI7kh+FefbsrMkfVdU=", goldenTS, zoom.ErrBadSignature},
		{"prefix only", "v0=", goldenTS, zoom.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := v.Verify(tc.sig, tc.ts, body)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify(%q, %q) = %v, want %v", tc.sig, tc.ts, err, tc.want)
			}
			if key != nil {
				t.Error("Verify returned a key on failure")
			}
		})
	}
}

// The verifier pools its HMACs; under -race, concurrent use must stay correct.
func TestVerifyConcurrent(t *testing.T) {
	secrets := []string{"a-secret", "b-secret", "c-secret"}
	v := zoom.NewVerifier(secrets, time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 64*50)
	for g := range 64 {
		wg.Go(func() {
			for i := range 50 {
				secret := secrets[(g+i)%len(secrets)]
				body := fmt.Appendf(nil, `{"event":"e","n":%d,"g":%d}`, i, g)
				ts := strconv.FormatInt(time.Now().Unix(), 10)
				key, err := v.Verify(zoom.Sign(secret, ts, body), ts, body)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d try %d: %w", g, i, err)
					continue
				}
				// The key that matched is the one of the signing secret.
				if key.EncryptToken("x") != mustKey(secret).EncryptToken("x") {
					errs <- fmt.Errorf("goroutine %d try %d: wrong key returned", g, i)
				}
				bad := append(body, '!')
				if _, err := v.Verify(zoom.Sign(secret, ts, body), ts, bad); !errors.Is(err, zoom.ErrBadSignature) {
					errs <- fmt.Errorf("goroutine %d try %d: tampered body: %v", g, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func mustKey(secret string) *zoom.Key {
	v := zoom.NewVerifier([]string{secret}, time.Minute)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	k, err := v.Verify(zoom.Sign(secret, ts, nil), ts, nil)
	if err != nil {
		panic(err)
	}
	return k
}
