package config

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/store/pgstore"
)

// Accepted values of StorageConfig.Backend and StorageConfig.Blobs.
const (
	// StorageMaildir keeps mailboxes in Maildir folders under data_dir.
	StorageMaildir = "maildir"
	// StoragePostgres keeps mailboxes in PostgreSQL.
	StoragePostgres = "postgres"
	// BlobsS3 keeps message contents in an S3 bucket.
	BlobsS3 = "s3"
)

// StorageConfig is the [storage] section.
type StorageConfig struct {
	Backend         string   `toml:"backend" comment:"\"maildir\" (Maildir folders in DATA/mail) or \"postgres\" (mailboxes in PostgreSQL, shared by every postino using the same database; users and aliases stay in their files)."`
	PostgresDSN     string   `toml:"postgres_dsn" example:"postgres://postino@db1,db2/postino" comment:"PostgreSQL connection string for backend = \"postgres\" (URL or key=value form; several hosts, with ?target_session_attrs=read-write, for a failover pair). A password is better kept in ~/.pgpass or PGPASSFILE than here."`
	Blobs           string   `toml:"blobs" comment:"Where message contents are kept with backend = \"postgres\": \"postgres\" (in the database, in 256 KiB chunks) or \"s3\" (an S3 bucket; the database keeps the rest)."`
	S3Endpoint      string   `toml:"s3_endpoint" example:"https://s3.example.org" comment:"URL of the S3 service for blobs = \"s3\" (https://host[:port]; http:// only for a service on loopback)."`
	S3Bucket        string   `toml:"s3_bucket" example:"postino-mail" comment:"Bucket holding the message contents; it must exist."`
	S3Region        string   `toml:"s3_region" comment:"S3 region; empty: the service's default."`
	S3AccessKey     string   `toml:"s3_access_key" comment:"S3 access key ID (or s3_access_key_file)."`
	S3AccessKeyFile string   `toml:"s3_access_key_file" comment:"File whose first line is the S3 access key ID; relative to data_dir."`
	S3SecretKey     string   `toml:"s3_secret_key" comment:"S3 secret key (prefer s3_secret_key_file)."`
	S3SecretKeyFile string   `toml:"s3_secret_key_file" comment:"File whose first line is the S3 secret key; relative to data_dir."`
	LockTTL         Duration `toml:"lock_ttl" comment:"How long a POP3 maildrop lock outlives a server that stopped renewing it (crashed, or cut off from PostgreSQL); it is renewed every lock_ttl/3, and a server that cannot renew ends the session before the lock can pass to another."`
	CacheDir        string   `toml:"cache_dir" comment:"Folder of this server's cache of message contents on its local disk, for backend = \"postgres\" (relative to data_dir). A content downloaded again comes from here, not from PostgreSQL or S3, and goes out with sendfile(2) on cleartext connections. It holds no state: it may be deleted while the server is stopped."`
	CacheSize       Size     `toml:"cache_size" comment:"Most octets of contents the cache keeps (least recently used go first); 0 turns the cache off."`
	MaxConnections  int      `toml:"max_connections" comment:"Most connections a server opens to PostgreSQL, whatever the number of sessions."`
}

// defaultStorage is the default [storage] section.
func defaultStorage() StorageConfig {
	return StorageConfig{
		Backend:        StorageMaildir,
		Blobs:          StoragePostgres,
		LockTTL:        D(pgstore.DefaultLockTTL),
		CacheDir:       "blobcache",
		CacheSize:      GiB,
		MaxConnections: pgstore.DefaultMaxConns,
	}
}

// validateStorage checks the [storage] section.
func (c *Config) validateStorage(v *validator) {
	s := &c.Storage
	v.oneOf("storage.backend", s.Backend, StorageMaildir, StoragePostgres)
	v.oneOf("storage.blobs", s.Blobs, StoragePostgres, BlobsS3)
	v.minDuration("storage.lock_ttl", s.LockTTL, 3*time.Second)
	if s.CacheSize > 0 && s.CacheDir == "" {
		v.add("storage.cache_dir", "must be set when cache_size is not 0")
	}
	if s.CacheSize > 0 && s.CacheDir != "" && c.DataDir != "" {
		// The cache empties its folder after a crash: never data_dir
		// or a folder holding it.
		data, _ := filepath.Abs(c.DataDir)
		cache, _ := filepath.Abs(c.ResolvePath(s.CacheDir))
		if rel, err := filepath.Rel(cache, data); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
			v.add("storage.cache_dir", "must be a folder of its own, not data_dir or a folder holding it (got %q)", s.CacheDir)
		}
	}
	if s.LockTTL.Duration > 10*time.Minute {
		v.add("storage.lock_ttl", "must be at most 10m (got %s)", s.LockTTL)
	}
	v.intRange("storage.max_connections", s.MaxConnections, 2, 1000)
	if s.Backend != StoragePostgres {
		return
	}
	if s.PostgresDSN == "" {
		v.add("storage.postgres_dsn", "must be set with backend = \"postgres\"")
	}
	if s.Blobs != BlobsS3 {
		return
	}
	u, err := url.Parse(s.S3Endpoint)
	switch {
	case s.S3Endpoint == "":
		v.add("storage.s3_endpoint", "must be set with blobs = \"s3\"")
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/"):
		v.add("storage.s3_endpoint", "must be https://host[:port] (got %q)", s.S3Endpoint)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		// The credentials sign requests, but the mail would cross the
		// network in the clear.
		v.add("storage.s3_endpoint", "http:// only for a service on loopback; use https:// (got %q)", s.S3Endpoint)
	}
	if s.S3Bucket == "" {
		v.add("storage.s3_bucket", "must be set with blobs = \"s3\"")
	}
	if (s.S3AccessKey == "") == (s.S3AccessKeyFile == "") {
		v.add("storage.s3_access_key", "set exactly one of s3_access_key and s3_access_key_file")
	}
	if (s.S3SecretKey == "") == (s.S3SecretKeyFile == "") {
		v.add("storage.s3_secret_key", "set exactly one of s3_secret_key and s3_secret_key_file")
	}
}

// pgOpenTimeout bounds the connection and schema check of OpenDeliverer.
const pgOpenTimeout = 30 * time.Second

// UsesPostgres reports whether mailboxes are kept in PostgreSQL.
func (c *Config) UsesPostgres() bool { return c.Storage.Backend == StoragePostgres }

// OpenPGStore opens the PostgreSQL store of [storage]. With migrate it
// brings the schema up to date first (postino serve, postino db migrate);
// without, it refuses a schema other than the one this build knows.
func (c *Config) OpenPGStore(ctx context.Context, migrate bool, logger *slog.Logger) (*pgstore.Store, error) {
	return c.openPGStore(ctx, migrate, false, logger)
}

// OpenPGStoreCached opens the store as OpenPGStore does, with the blob
// cache of [storage] cache_dir unless cache_size is 0 (postino serve;
// one process at a time uses the cache).
func (c *Config) OpenPGStoreCached(ctx context.Context, migrate bool, logger *slog.Logger) (*pgstore.Store, error) {
	return c.openPGStore(ctx, migrate, true, logger)
}

func (c *Config) openPGStore(ctx context.Context, migrate, cached bool, logger *slog.Logger) (*pgstore.Store, error) {
	s := &c.Storage
	o := pgstore.Options{
		DSN:      s.PostgresDSN,
		MaxConns: int32(s.MaxConnections),
		LockTTL:  s.LockTTL.Duration,
		SpoolDir: filepath.Join(c.DataDir, "spool"),
		Migrate:  migrate,
		Logger:   logger,
	}
	if err := os.MkdirAll(o.SpoolDir, 0o700); err != nil {
		return nil, err
	}
	if s.Blobs == BlobsS3 {
		access, err := c.secret(s.S3AccessKey, s.S3AccessKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.s3_access_key_file: %w", err)
		}
		secret, err := c.secret(s.S3SecretKey, s.S3SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.s3_secret_key_file: %w", err)
		}
		b, err := pgstore.NewS3Blobs(pgstore.S3Options{Endpoint: s.S3Endpoint, Bucket: s.S3Bucket, Region: s.S3Region, AccessKey: access, SecretKey: secret})
		if err != nil {
			return nil, err
		}
		o.Blobs = b
	}
	if cached && s.CacheSize > 0 {
		bc, err := pgstore.OpenBlobCache(c.ResolvePath(s.CacheDir), int64(s.CacheSize), logger)
		if err != nil {
			return nil, fmt.Errorf("storage.cache_dir: %w", err)
		}
		o.Cache = bc
	}
	st, err := pgstore.Open(ctx, o)
	if err != nil {
		if o.Cache != nil {
			o.Cache.Close()
		}
		return nil, fmt.Errorf("storage: %w", err)
	}
	return st, nil
}

// secret returns value, or the first line of the file (relative to
// data_dir).
func (c *Config) secret(value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(c.ResolvePath(file))
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: empty", file)
	}
	return line, nil
}

// checkStorage checks what [storage] names beyond its values: that the
// DSN can be parsed and the S3 key files read. It does not connect.
func (k *checker) checkStorage(c *Config) {
	s := &c.Storage
	if s.Backend != StoragePostgres {
		return
	}
	if s.PostgresDSN != "" {
		if _, err := pgxpool.ParseConfig(s.PostgresDSN); err != nil {
			k.conf(SeverityError, "storage.postgres_dsn", "%v", err)
		}
	}
	if s.Blobs != BlobsS3 {
		return
	}
	for _, f := range []struct{ key, file string }{
		{"storage.s3_access_key_file", s.S3AccessKeyFile},
		{"storage.s3_secret_key_file", s.S3SecretKeyFile},
	} {
		if f.file == "" {
			continue
		}
		if _, err := c.secret("", f.file); err != nil {
			k.conf(SeverityError, f.key, "%v", err)
		}
	}
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
