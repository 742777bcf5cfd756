package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/geomux/geomux/pkg/seal"
)

func TestSealOpensForItsLabelOnly(t *testing.T) {
	k, err := seal.NewKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := seal.NewKey(bytes.Repeat([]byte{8}, 32))
	sealed := k.Seal("acct-1", []byte("token"))
	if plain, err := k.Open("acct-1", sealed); err != nil || string(plain) != "token" {
		t.Fatalf("open: %q %v", plain, err)
	}
	if again := k.Seal("acct-1", []byte("token")); bytes.Equal(again, sealed) {
		t.Error("two seals of the same record are the same bytes: the nonce is not random")
	}
	altered := bytes.Clone(sealed)
	altered[len(altered)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"another label": func() ([]byte, error) { return k.Open("acct-2", sealed) },
		"another key":   func() ([]byte, error) { return other.Open("acct-1", sealed) },
		"altered":       func() ([]byte, error) { return k.Open("acct-1", altered) },
		"too short":     func() ([]byte, error) { return k.Open("acct-1", sealed[:4]) },
	} {
		if _, err := open(); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", name, err)
		}
	}
	if _, err := seal.NewKey([]byte("short")); err == nil {
		t.Error("a 5-byte key accepted")
	}
}
