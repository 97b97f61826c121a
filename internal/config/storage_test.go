package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStorageValidation: [storage] is checked key by key.
func TestStorageValidation(t *testing.T) {
	pg := func(c *Config) {
		c.Storage.Backend = StoragePostgres
		c.Storage.PostgresDSN = "postgres://postino@127.0.0.1/postino"
	}
	s3 := func(c *Config) {
		pg(c)
		c.Storage.Blobs = BlobsS3
		c.Storage.S3Endpoint = "https://s3.example.test"
		c.Storage.S3Bucket = "mail"
		c.Storage.S3AccessKey = "id"
		c.Storage.S3SecretKeyFile = "s3.secret"
	}
	cases := []struct {
		name string
		set  func(*Config)
		want string // "" valid, else the key in the error
	}{
		{"default", func(*Config) {}, ""},
		{"postgres", pg, ""},
		{"s3", s3, ""},
		{"unknown backend", func(c *Config) { c.Storage.Backend = "mysql" }, "storage.backend"},
		{"no dsn", func(c *Config) { pg(c); c.Storage.PostgresDSN = "" }, "storage.postgres_dsn"},
		{"unknown blobs", func(c *Config) { pg(c); c.Storage.Blobs = "nfs" }, "storage.blobs"},
		{"no endpoint", func(c *Config) { s3(c); c.Storage.S3Endpoint = "" }, "storage.s3_endpoint"},
		{"bad endpoint", func(c *Config) { s3(c); c.Storage.S3Endpoint = "ftp://x" }, "storage.s3_endpoint"},
		{"http endpoint", func(c *Config) { s3(c); c.Storage.S3Endpoint = "http://s3.example.test" }, "storage.s3_endpoint"},
		{"http on loopback", func(c *Config) { s3(c); c.Storage.S3Endpoint = "http://127.0.0.1:7070" }, ""},
		{"http on ::1", func(c *Config) { s3(c); c.Storage.S3Endpoint = "http://[::1]:7070" }, ""},
		{"no bucket", func(c *Config) { s3(c); c.Storage.S3Bucket = "" }, "storage.s3_bucket"},
		{"two access keys", func(c *Config) { s3(c); c.Storage.S3AccessKeyFile = "f" }, "storage.s3_access_key"},
		{"no secret", func(c *Config) { s3(c); c.Storage.S3SecretKeyFile = "" }, "storage.s3_secret_key"},
		{"short ttl", func(c *Config) { c.Storage.LockTTL = D(1e9) }, "storage.lock_ttl"},
		{"one connection", func(c *Config) { c.Storage.MaxConnections = 1 }, "storage.max_connections"},
		{"cache without a folder", func(c *Config) { c.Storage.CacheDir = "" }, "storage.cache_dir"},
		{"cache off", func(c *Config) { c.Storage.CacheDir = ""; c.Storage.CacheSize = 0 }, ""},
		{"cache in data_dir", func(c *Config) { c.Storage.CacheDir = "." }, "storage.cache_dir"},
		{"cache above data_dir", func(c *Config) { c.Storage.CacheDir = ".." }, "storage.cache_dir"},
		{"cache elsewhere", func(c *Config) { c.Storage.CacheDir = "/var/cache/postino" }, ""},
	}
	for _, tc := range cases {
		c := Default()
		c.Hostname = "mail.example.test"
		tc.set(c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want+":")):
			t.Errorf("%s: err = %v, want one about %s", tc.name, err, tc.want)
		}
	}
}

// TestStorageSecretFile: the S3 keys may come from files in data_dir.
func TestStorageSecretFile(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	os.WriteFile(filepath.Join(c.DataDir, "s3.secret"), []byte("s3cr3t\r\nignored\n"), 0o600)
	if got, err := c.secret("", "s3.secret"); err != nil || got != "s3cr3t" {
		t.Fatalf("secret = %q, %v", got, err)
	}
	os.WriteFile(filepath.Join(c.DataDir, "empty"), nil, 0o600)
	if _, err := c.secret("", "empty"); err == nil {
		t.Fatal("empty secret file accepted")
	}
	if got, _ := c.secret("inline", ""); got != "inline" {
		t.Fatalf("inline secret = %q", got)
	}
}

// TestCheckStorage: config check reports an unparsable DSN and an S3 key
// file it cannot read, at their keys.
func TestCheckStorage(t *testing.T) {
	res, _ := checkFile(t, quietListeners+`
[storage]
backend = "postgres"
postgres_dsn = "postgres://x:s3cr3tpw@host:notaport/db"
blobs = "s3"
s3_endpoint = "https://s3.example.test"
s3_bucket = "mail"
s3_access_key = "id"
s3_secret_key_file = "missing.secret"
`)
	got := findings(res)
	if strings.Contains(got, "s3cr3tpw") {
		t.Errorf("the DSN's password is in the findings:\n%s", got)
	}
	for _, key := range []string{"storage.postgres_dsn", "storage.s3_secret_key_file"} {
		if !strings.Contains(got, key) {
			t.Errorf("no finding for %s:\n%s", key, got)
		}
	}
	res, _ = checkFile(t, quietListeners+`
[storage]
backend = "postgres"
postgres_dsn = "postgres://postino@127.0.0.1/postino"
`)
	if len(res.Findings) != 0 {
		t.Fatalf("findings on a clean postgres configuration:\n%s", findings(res))
	}
}

// TestCheckPostgresIgnoresUserFiles: with the users and aliases in
// PostgreSQL, broken users and aliases files in the data folder (left
// from a single server) are not reported: the server does not read them.
func TestCheckPostgresIgnoresUserFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "users.passwd"), []byte("not a passwd line\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "aliases"), []byte("broken alias line\n"), 0o600)
	conf := fmt.Sprintf("data_dir = %q\n", dir) + quietListeners + `
[storage]
backend = "postgres"
postgres_dsn = "postgres://postino@127.0.0.1/postino"
`
	path := filepath.Join(dir, "postino.toml")
	os.WriteFile(path, []byte(conf), 0o600)
	if res := Check(context.Background(), path, CheckOptions{}); len(res.Findings) != 0 {
		t.Fatalf("findings:\n%s", findings(res))
	}
	// The same files are reported in Maildir mode.
	md := strings.Replace(conf, `backend = "postgres"`, `backend = "maildir"`, 1)
	os.WriteFile(path, []byte(md), 0o600)
	if res := Check(context.Background(), path, CheckOptions{}); !strings.Contains(findings(res), "users.passwd") || !strings.Contains(findings(res), "aliases") {
		t.Fatalf("broken files not reported in Maildir mode:\n%s", findings(res))
	}
}
