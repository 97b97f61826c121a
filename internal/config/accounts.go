package config

import (
	"context"

	"log/slog"

	"github.com/postino-mail/postino/internal/acmecert"
	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/authguard/pgguard"
	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// usersMaxConns bounds the connections of a process's user database in
// PostgreSQL (a version check per lookup, a full read only on change).
const usersMaxConns = 4

// guardMaxConns bounds the connections of a process's shared login
// guard state (one round trip per login attempt and per failure).
const guardMaxConns = 4

// sharedGuardState is the failed-login state of every node, in
// PostgreSQL (storage.backend = "postgres").
func (c *Config) sharedGuardState() authguard.Shared {
	return pgguard.Open(c.Storage.PostgresDSN, guardMaxConns)
}

// openPGUsers opens the user database kept in PostgreSQL (storage.backend
// = "postgres"): the table users of the schema, shared by every node.
func (c *Config) openPGUsers(logger *slog.Logger) *auth.DB {
	db := auth.OpenStoreDB(pgstore.OpenUsers(c.Storage.PostgresDSN, usersMaxConns))
	db.CacheTTL = c.Users.CacheTTL.Duration
	db.Logger = logger
	return db
}

// aliasesMaxConns bounds the connections of a process's aliases in
// PostgreSQL (a version check at most once a second).
const aliasesMaxConns = 2

// OpenAliases opens the aliases: the file of [smtp] aliases_file, or with
// storage.backend = "postgres" the aliases every node shares in the
// database (the file is then not read).
func (c *Config) OpenAliases(logger *slog.Logger) (*aliases.Reloading, error) {
	if c.UsesPostgres() {
		return aliases.NewSourceReloading(pgstore.OpenAliases(c.Storage.PostgresDSN, aliasesMaxConns), logger)
	}
	return aliases.NewReloading(c.AliasesFile(), logger)
}

// dkimMaxConns bounds the connections of a process's DKIM keys in
// PostgreSQL (a version check per message signed).
const dkimMaxConns = 2

// DKIMKeyStore returns the DKIM keys every node shares in PostgreSQL
// (storage.backend = "postgres"), or nil when they are the files of
// DATA/dkim.
func (c *Config) DKIMKeyStore() *pgstore.DKIMKeys {
	if !c.UsesPostgres() {
		return nil
	}
	return pgstore.OpenDKIMKeys(c.Storage.PostgresDSN, dkimMaxConns)
}

// DKIMSigner returns the signer of outgoing mail: over the keys of
// DATA/dkim, or the database's with storage.backend = "postgres".
func (c *Config) DKIMSigner() *dkim.Signer {
	if ks := c.DKIMKeyStore(); ks != nil {
		return dkim.NewStoreSigner(ks)
	}
	return dkim.NewSigner(c.DKIMDir())
}

// acmeMaxConns bounds the connections of a process's ACME cache in
// PostgreSQL (each name being ordered holds one for its lock).
const acmeMaxConns = 4

// ACMEStorage returns where ACME certificates and the account key are
// kept: DATA/acme, or with storage.backend = "postgres" the database,
// shared by every node, with the lock that lets one node at a time order
// a name's certificate (nil for DATA/acme).
func (c *Config) ACMEStorage() (acmecert.Cache, func(context.Context, string) (func(), error)) {
	if !c.UsesPostgres() {
		return acmecert.DirCache(c.ACMEDir()), nil
	}
	pc := pgstore.OpenACMECache(c.Storage.PostgresDSN, acmeMaxConns)
	return pc, pc.Lock
}
