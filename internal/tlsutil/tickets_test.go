package tlsutil

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// restartedServer starts a fresh server (new tls.Config, as after a
// restart) whose ticket keys come from the file at path, or that has
// crypto/tls's own in-memory keys when path is "".
func restartedServer(t *testing.T, path string) string {
	t.Helper()
	cfg := serverConfig(t, "1.2")
	if path != "" {
		tk, err := NewTicketKeys(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		tk.Apply(cfg)
	}
	return serveTLS(t, cfg)
}

// TestTicketKeysSurviveRestart: a POP3S client that polls every few
// minutes resumes its TLS session across a restart of postino (RFC 5077,
// RFC 8446 §2.2), in TLS 1.3 and 1.2; without the key file it cannot.
func TestTicketKeysSurviveRestart(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), TicketKeysFileName)
			cfg := &tls.Config{InsecureSkipVerify: true, MaxVersion: v.max,
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if poll(t, restartedServer(t, path), cfg) {
				t.Fatal("first poll resumed")
			}
			if !poll(t, restartedServer(t, path), cfg) {
				t.Fatal("the poll after a restart did not resume the session")
			}
			// The same client against a server with other keys (a
			// forged or foreign ticket): a full handshake, no error.
			if poll(t, restartedServer(t, ""), cfg) {
				t.Fatal("a ticket was accepted by a server without its key")
			}
			other := filepath.Join(t.TempDir(), TicketKeysFileName)
			if poll(t, restartedServer(t, other), cfg) {
				t.Fatal("a ticket was accepted under another key file")
			}
		})
	}
}

// TestTicketKeysRotation: the file is 0600; a key older than
// TicketKeyPeriod is replaced by a new one but still decrypts the tickets
// it issued; at most MaxTicketKeys are kept.
func TestTicketKeysRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), TicketKeysFileName)
	tk, err := NewTicketKeys(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m != 0o600 {
		t.Fatalf("mode %v, want 0600", m)
	}
	cfg := serverConfig(t, "1.2")
	tk.Apply(cfg)
	addr := serveTLS(t, cfg)
	client := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	poll(t, addr, client) // ticket under the first key
	first := tk.keys[0].key

	clock := time.Now()
	for i := 1; i <= MaxTicketKeys+1; i++ {
		clock = clock.Add(TicketKeyPeriod + time.Minute)
		tk.now = func() time.Time { return clock }
		rotated, err := tk.rotate()
		if err != nil || !rotated {
			t.Fatalf("rotation %d: rotated=%v err=%v", i, rotated, err)
		}
		if i == 1 {
			// The old key decrypts the old ticket; the client's next
			// ticket is issued under the new key.
			if tk.keys[0].key == first || tk.keys[1].key != first {
				t.Fatal("the new key is not first, or the old one is gone")
			}
			if !poll(t, addr, client) {
				t.Fatal("a ticket from the previous key was not accepted")
			}
		}
	}
	if rotated, _ := tk.rotate(); rotated {
		t.Fatal("rotated again within the period")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != MaxTicketKeys {
		t.Fatalf("%d keys in the file, want %d", n, MaxTicketKeys)
	}
	if m := mode(t, path); m != 0o600 {
		t.Fatalf("mode %v after rotation, want 0600", m)
	}
	// A restart reads the same keys and does not rotate them.
	again, err := newTicketKeys(path, nil, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	if again.keys[0].key != tk.keys[0].key || len(again.keys) != MaxTicketKeys {
		t.Fatal("the keys read back differ from those written")
	}
}

// TestTicketKeysMalformed: a damaged or hostile key file (wrong length,
// not hex, garbage) is replaced by a fresh key, never half-used.
func TestTicketKeysMalformed(t *testing.T) {
	for _, content := range []string{
		"garbage\n",
		"1700000000 abcd\n",
		"1700000000 " + strings.Repeat("zz", 32) + "\n",
		"notatime " + strings.Repeat("00", 32) + "\n",
	} {
		path := filepath.Join(t.TempDir(), TicketKeysFileName)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tk, err := NewTicketKeys(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(tk.keys) != 1 || tk.keys[0].key == ([32]byte{}) {
			t.Fatalf("%q: %d keys", content, len(tk.keys))
		}
		if m := mode(t, path); m != 0o600 {
			t.Fatalf("%q: mode %v, want 0600", content, m)
		}
	}
	// Unwritable location: an error, not a silent in-memory key.
	if _, err := NewTicketKeys(filepath.Join(t.TempDir(), "missing", TicketKeysFileName), nil); err == nil {
		t.Fatal("no error for an unwritable key file")
	}
}

// TestTicketKeysRotateUnsaved: when the key file cannot be written at
// rotation time, the new key still replaces the old one for new tickets
// (an old key must not keep protecting sessions), and the error is told.
func TestTicketKeysRotateUnsaved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tk, err := NewTicketKeys(filepath.Join(dir, TicketKeysFileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(t, "1.2")
	tk.Apply(cfg)
	old := tk.keys[0].key
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(TicketKeyPeriod + time.Minute)
	tk.now = func() time.Time { return clock }
	rotated, err := tk.rotate()
	if err == nil || !rotated {
		t.Fatalf("rotated=%v err=%v, want a rotation and an error", rotated, err)
	}
	if tk.keys[0].key == old || len(tk.keys) != 2 {
		t.Fatal("the new key is not in use")
	}
}
