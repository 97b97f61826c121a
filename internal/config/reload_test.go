package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestDiffNoChange(t *testing.T) {
	a, b := Default(), Default()
	if ch := Diff(a, b); !ch.Empty() {
		t.Fatalf("Diff of two defaults = %+v, want none", ch)
	}
}

func TestDiffClassifies(t *testing.T) {
	old := Default()
	n := Default()
	n.Queue.Routes = []string{"example.net=127.0.0.1:2600"}
	n.SMTP.MaxRecipients = 5
	n.LogLevel = "debug"
	n.SMTP.TrustedNetworks = []string{"127.0.0.0/8"}
	n.POP3.PlaintextAuth = 1
	n.Users.FailureWindow = D(time.Hour)
	n.SMTP.Listen = "127.0.0.1:2626"
	n.DataDir = "elsewhere"
	n.Fetch.Accounts = []FetchAccount{{Name: "work"}}
	got := Diff(old, n)
	wantApplied := []string{"log_level", "pop3.plaintext_auth", "users.failure_window", "smtp.max_recipients", "smtp.trusted_networks", "queue.routes", "fetch.account"}
	wantRestart := []string{"data_dir", "smtp.listen"}
	if !slices.Equal(got.Applied, wantApplied) {
		t.Errorf("Applied = %v, want %v", got.Applied, wantApplied)
	}
	if !slices.Equal(got.Restart, wantRestart) {
		t.Errorf("Restart = %v, want %v", got.Restart, wantRestart)
	}
}

// TestRestartKeys pins the keys that need a restart: a key added to this
// list (or removed from it) is a decision, not an accident.
func TestRestartKeys(t *testing.T) {
	var got []string
	for _, k := range knownKeys() {
		if NeedsRestart(k) {
			got = append(got, k)
		}
	}
	want := []string{
		"hostname", "data_dir", "log_format", "run_as",
		"tls.min_version", "tls.names", "tls.acme", "tls.acme_email", "tls.acme_directory", "tls.acme_ca_file",
		"pop3.listen", "pop3.listen_tls", "pop3.dovecot_uidl_format",
		"smtp.listen", "smtp.submission", "smtp.submissions", "smtp.lmtp",
		"smtp.max_message_size", "smtp.command_timeout",
		"queue.dns_server", "dns.server",
		"http.listen", "https.listen",
		"proxy.trusted", "proxy.header_timeout",
		"admin.listen",
		"storage.backend", "storage.postgres_dsn", "storage.blobs", "storage.s3_endpoint",
		"storage.s3_bucket", "storage.s3_region", "storage.s3_access_key", "storage.s3_access_key_file",
		"storage.s3_secret_key", "storage.s3_secret_key_file", "storage.lock_ttl", "storage.cache_dir", "storage.cache_size", "storage.max_connections",
	}
	if !slices.Equal(got, want) {
		t.Errorf("restart-only keys = %v\nwant %v", got, want)
	}
	for _, k := range []string{"queue.routes", "smtp.max_recipients", "log_level", "users.file", "tls.cert", "nosuch.key"} {
		if NeedsRestart(k) {
			t.Errorf("NeedsRestart(%q) = true, want false", k)
		}
	}
}

// TestDiffEveryKey changes each leaf key in turn and checks that Diff
// reports exactly that key: the walk misses none.
func TestDiffEveryKey(t *testing.T) {
	old := Default()
	var leaves []string
	walkLeaves(reflect.ValueOf(old).Elem(), reflect.ValueOf(old).Elem(), "", false,
		func(k string, _, _ reflect.Value, _ bool) { leaves = append(leaves, k) })
	if len(leaves) < 40 {
		t.Fatalf("only %d keys walked", len(leaves))
	}
	for i, key := range leaves {
		n := Default()
		j := 0
		walkLeaves(reflect.ValueOf(n).Elem(), reflect.ValueOf(n).Elem(), "", false,
			func(_ string, v, _ reflect.Value, _ bool) {
				if j == i {
					change(t, key, v)
				}
				j++
			})
		ch := Diff(old, n)
		all := append(ch.Applied, ch.Restart...)
		if len(all) != 1 || all[0] != key {
			t.Errorf("changing %s: Diff = %+v", key, ch)
		}
		if NeedsRestart(key) != (len(ch.Restart) == 1) {
			t.Errorf("%s: classified %+v, NeedsRestart = %v", key, ch, NeedsRestart(key))
		}
	}
}

// change sets v to a value different from its current one.
func change(t *testing.T, key string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
	case reflect.Struct: // Duration
		d := v.Addr().Interface().(*Duration)
		d.Duration += time.Second
	default:
		t.Fatalf("%s: cannot change a %s", key, v.Kind())
	}
}

func TestKeepRestart(t *testing.T) {
	old := Default()
	n := Default()
	n.SMTP.Listen = "127.0.0.1:2626"
	n.SMTP.MaxRecipients = 7
	n.RunAs = "mail"
	eff := KeepRestart(old, n)
	if eff.SMTP.Listen != old.SMTP.Listen || eff.RunAs != old.RunAs {
		t.Errorf("restart keys not kept: listen %q run_as %q", eff.SMTP.Listen, eff.RunAs)
	}
	if eff.SMTP.MaxRecipients != 7 {
		t.Errorf("max_recipients = %d, want the new 7", eff.SMTP.MaxRecipients)
	}
	if n.SMTP.Listen != "127.0.0.1:2626" || n.RunAs != "mail" {
		t.Error("KeepRestart modified its argument")
	}
	if ch := Diff(old, eff); len(ch.Restart) != 0 || !slices.Equal(ch.Applied, []string{"smtp.max_recipients"}) {
		t.Errorf("Diff(old, effective) = %+v", ch)
	}
}

// TestDiffLoadedFiles compares configurations as Load reads them: the
// defaults a file leaves out are no change.
func TestDiffLoadedFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "postino.toml")
	write := func(s string) *Config {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := write("hostname = \"mx.example.test\"\n[smtp]\nmax_recipients = 100\n")
	b := write("hostname = \"mx.example.test\"\n[smtp]\nmax_recipients = 3\nlisten = \"127.0.0.1:2999\"\n[queue]\nroutes = [\"example.net=127.0.0.1:2600\"]\n")
	ch := Diff(a, b)
	if !slices.Equal(ch.Applied, []string{"smtp.max_recipients", "queue.routes"}) || !slices.Equal(ch.Restart, []string{"smtp.listen"}) {
		t.Errorf("Diff = %+v", ch)
	}
}
