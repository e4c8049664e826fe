package membership

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// KeyInfo describes one gossip key without revealing it.
type KeyInfo struct {
	// Fingerprint is the first 8 bytes of the key's SHA-256, in hex: what
	// operators name a key by (`meridian gossip keys use FINGERPRINT`).
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"` // encrypts what this member sends
}

// Fingerprint names key without revealing it.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ErrNoKeyring is returned by the key operations of a member that gossips
// without encryption (over QUIC, whose TLS already protects it).
var ErrNoKeyring = errors.New("this pool has no gossip keyring")

// newKeyring builds memberlist's AES-GCM keyring from keys (the first is
// the primary); nil when keys is empty.
func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keys: %w", err)
	}
	return kr, nil
}

func (m *Member) keyring() (*memberlist.Keyring, error) {
	if m.kr == nil {
		return nil, ErrNoKeyring
	}
	return m.kr, nil
}

// Keys lists the member's gossip keys, the primary first.
func (m *Member) Keys() ([]KeyInfo, error) {
	kr, err := m.keyring()
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for i, k := range kr.GetKeys() { // GetKeys puts the primary first
		out = append(out, KeyInfo{Fingerprint: Fingerprint(k), Primary: i == 0})
	}
	return out, nil
}

// InstallKey adds key (16, 24 or 32 bytes) to the keyring: the member then
// takes gossip encrypted with it, and still sends with its primary. The
// first step of a rotation, run on every member.
func (m *Member) InstallKey(key []byte) error {
	kr, err := m.keyring()
	if err != nil {
		return err
	}
	if err := kr.AddKey(key); err != nil {
		return fmt.Errorf("install gossip key %s: %w", Fingerprint(key), err)
	}
	m.log.Info("gossip key installed", "fingerprint", Fingerprint(key))
	return nil
}

func (m *Member) keyByFingerprint(kr *memberlist.Keyring, fp string) ([]byte, error) {
	keys := kr.GetKeys()
	i := slices.IndexFunc(keys, func(k []byte) bool { return Fingerprint(k) == fp })
	if i < 0 {
		var have []string
		for _, k := range keys {
			have = append(have, Fingerprint(k))
		}
		return nil, fmt.Errorf("no gossip key with fingerprint %q (installed: %v)", fp, have)
	}
	return keys[i], nil
}

// UseKey makes the installed key with fingerprint fp the primary: what
// the member sends is encrypted with it from now on. The second step of a
// rotation, once every member has installed the key.
func (m *Member) UseKey(fp string) error {
	return m.changeKey(fp, "use", "in use", (*memberlist.Keyring).UseKey)
}

// RemoveKey removes the key with fingerprint fp; the primary cannot be
// removed. The last step of a rotation, once every member uses the new key.
func (m *Member) RemoveKey(fp string) error {
	return m.changeKey(fp, "remove", "removed", (*memberlist.Keyring).RemoveKey)
}

// changeKey applies op to the installed key with fingerprint fp and logs
// that it was done.
func (m *Member) changeKey(fp, verb, done string, op func(*memberlist.Keyring, []byte) error) error {
	kr, err := m.keyring()
	if err != nil {
		return err
	}
	k, err := m.keyByFingerprint(kr, fp)
	if err != nil {
		return err
	}
	if err := op(kr, k); err != nil {
		return fmt.Errorf("%s gossip key %s: %w", verb, fp, err)
	}
	m.log.Info("gossip key "+done, "fingerprint", fp)
	return nil
}
