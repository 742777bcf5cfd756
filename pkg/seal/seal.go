// Package seal encrypts small records with AES-256-GCM, each bound to a
// label (an account id, a cookie's name) so that one record cannot be
// passed off as another's. The install cookies and the regions' vaults use
// it.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
)

// ErrOpen is a record that does not decrypt: altered, for another label, or
// sealed with another key.
var ErrOpen = errors.New("seal: the record does not open with this key and label")

// Key seals and opens records. It is safe for concurrent use.
type Key struct{ aead cipher.AEAD }

// NewKey returns the key of 32 bytes of key material.
func NewKey(key []byte) (Key, error) {
	if len(key) != 32 {
		return Key{}, errors.New("seal: the key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return Key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Key{}, err
	}
	return Key{aead: aead}, nil
}

// Seal encrypts plain for label: a random nonce, then the ciphertext.
func (k Key) Seal(label string, plain []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	_, _ = rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plain, []byte(label))
}

// Open decrypts what Seal made for label.
func (k Key) Open(label string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, ErrOpen
	}
	plain, err := k.aead.Open(nil, sealed[:n], sealed[n:], []byte(label))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}
