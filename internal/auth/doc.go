// Package auth holds postino's user database and its password hashing.
//
// # The user database
//
// Users live in one text file in Dovecot's passwd-file format, so that an
// existing Dovecot installation's file can be used as it is and doveadm can
// be used to make hashes:
//
//	user:password:uid:gid:gecos:home:shell:extra_fields
//
// Only the first two fields are used by postino: user is an email address
// local@domain (see CanonicalAddress) and password is a {SCHEME}hash string.
// A line may have just those two fields or any number more; the extra ones
// are kept untouched when the file is rewritten, as are comment lines
// (starting with '#'), blank lines and lines that could not be parsed.
// When an address appears on more than one line, the first line wins.
//
// The file is re-read whenever its modification time, size or inode
// changes, so edits apply without a restart. Changes made through DB are
// serialised with an flock(2) on "<path>.lock" and written atomically: a
// temporary file "<path>.tmp" (mode 0600) is written, fsync'd, renamed over
// the database and the directory is fsync'd.
//
// # Password schemes
//
// Stored passwords are Dovecot-compatible "{SCHEME}hash" strings; scheme
// names are case-insensitive. VerifyPassword understands:
//
//   - {ARGON2ID} and {ARGON2I}: $argon2id$v=19$m=...,t=...,p=...$salt$key
//     (PHC string, base64 without padding), as written by
//     "doveadm pw -s ARGON2ID". HashPassword makes these with
//     DefaultArgon2, DB.HashPassword with DB.Argon2.
//   - {BLF-CRYPT}: bcrypt, $2y$, $2a$ or $2b$.
//   - {SHA512-CRYPT} and {SHA256-CRYPT}: the glibc crypt(3) SHA-crypt
//     algorithms, $6$ and $5$, with an optional rounds=N$.
//   - {CRYPT}: any of the crypt(3) forms above, chosen by its $id$.
//   - {SCRAM-SHA-256}: Dovecot's "iter,salt,storedkey,serverkey" (standard
//     base64), which also lets a SASL SCRAM-SHA-256 server work without the
//     cleartext password (see SCRAMCredentials).
//   - {PLAIN} and {CLEAR}: the cleartext password, for imports only.
//
// A stored value without a {SCHEME} prefix is taken as a crypt(3) string
// when it starts with $6$, $5$, $2y$/$2a$/$2b$, $argon2id$ or $argon2i$.
// Every comparison is constant-time.
package auth
