// Package dkim signs outgoing mail with DKIM (RFC 6376) for postino's
// local domains, with ed25519-sha256 (RFC 8463) and rsa-sha256 keys, and
// generates those keys.
//
// Keys live in DATA/dkim/<domain>/<selector>.key as PKCS#8 PEM files
// (mode 0600); the key type gives the algorithm and the file name the
// selector. Keygen writes one and returns the DNS TXT record to publish
// at <selector>._domainkey.<domain>. A Signer signs a message with every
// key of its sender's domain (typically one ed25519 and one RSA key:
// RFC 8463 §4 advises signing with both, as verifiers that do not know
// ed25519 ignore that signature), with relaxed/relaxed canonicalization
// (RFC 6376 §3.4.2, §3.4.4: survives the usual header rewrapping) and the
// header fields of RFC 6376 §5.4.1, From signed twice so that no second
// From can be added (§8.15). Signing uses github.com/emersion/go-msgauth.
package dkim

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/postino-mail/postino/internal/fsutil"
	"github.com/postino-mail/postino/internal/tlsutil"
)

// The key algorithms.
const (
	AlgoEd25519 = "ed25519"
	AlgoRSA     = "rsa"
)

// RSABits is the size of generated RSA keys (RFC 8301 §3.2: at least
// 1024, 2048 advised).
const RSABits = 2048

// HeaderKeys are the header fields signed (RFC 6376 §5.4.1), From twice
// (oversigned, §8.15). Fields a message does not have are signed as
// absent, so they cannot be added later.
var HeaderKeys = []string{
	"From", "From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Message-ID", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// Record is a DNS TXT record publishing a DKIM public key.
type Record struct {
	Domain   string
	Selector string
	Algo     string
	// Name is the owner name: selector._domainkey.domain.
	Name string
	// Value is the record text, e.g. "v=DKIM1; k=ed25519; p=...".
	Value string
}

// String returns the record in zone file syntax, the text split into
// strings of at most 255 octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2).
func (r Record) String() string {
	var parts []string
	for v := r.Value; v != ""; {
		n := min(len(v), 255)
		parts = append(parts, `"`+v[:n]+`"`)
		v = v[n:]
	}
	return fmt.Sprintf("%s. IN TXT %s", r.Name, strings.Join(parts, " "))
}

// DefaultSelector returns the selector Keygen uses by default: the
// algorithm's short name and the year and month, e.g. "ed202607" or
// "rsa202607", so that a rotated key gets a new name.
func DefaultSelector(algo string, t time.Time) string {
	p := "rsa"
	if algo == AlgoEd25519 {
		p = "ed"
	}
	return p + t.UTC().Format("200601")
}

// ValidDomain reports whether d can name a key folder: a lower-case
// domain name.
func ValidDomain(d string) bool {
	if d == "" || len(d) > 253 || d[0] == '.' || d[0] == '-' || strings.Contains(d, "..") {
		return false
	}
	for _, c := range d {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validSelector(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '.' || s[0] == '-' || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Keygen generates a key of algo (AlgoEd25519 or AlgoRSA) for domain,
// writes it to dir/<domain>/<selector>.key (never replacing an existing
// file) and returns its DNS record. dir is DATA/dkim. An empty selector
// is DefaultSelector(algo, now).
func Keygen(dir, domain, algo, selector string) (Record, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return Record{}, fmt.Errorf("dkim: invalid domain %q", domain)
	}
	if selector == "" {
		selector = DefaultSelector(algo, time.Now())
	}
	if !validSelector(selector) {
		return Record{}, fmt.Errorf("dkim: invalid selector %q", selector)
	}
	key, der, err := newKey(algo)
	if err != nil {
		return Record{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Record{}, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Record{}, err
	}
	defer root.Close()
	if err := root.Mkdir(domain, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return Record{}, err
	}
	f, err := root.OpenFile(domain+"/"+selector+".key", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Record{}, fmt.Errorf("dkim: %w", err)
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		root.Remove(domain + "/" + selector + ".key")
		return Record{}, err
	}
	if d, err := root.Open(domain); err == nil {
		d.Sync()
		d.Close()
	}
	return record(domain, selector, key)
}

// newKey generates a private key of algo and returns it with its PKCS#8
// DER form.
func newKey(algo string) (crypto.Signer, []byte, error) {
	var key crypto.Signer
	switch algo {
	case AlgoEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		key = k
	case AlgoRSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, nil, err
		}
		key = k
	default:
		return nil, nil, fmt.Errorf("dkim: unknown algorithm %q (want %s or %s)", algo, AlgoEd25519, AlgoRSA)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, der, nil
}

// KeygenAll generates an ed25519 and an RSA key for domain with the
// default selectors: what `postino dkim keygen DOMAIN` does.
func KeygenAll(dir, domain string) ([]Record, error) {
	var out []Record
	for _, algo := range []string{AlgoEd25519, AlgoRSA} {
		r, err := Keygen(dir, domain, algo, "")
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// record builds the TXT record of a key (RFC 6376 §3.6.1; RFC 8463 §4:
// for ed25519, p= is the raw 32-octet public key; for RSA, the DER
// SubjectPublicKeyInfo).
func record(domain, selector string, key crypto.Signer) (Record, error) {
	r := Record{Domain: domain, Selector: selector, Name: selector + "._domainkey." + domain}
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		r.Algo = AlgoEd25519
		r.Value = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return r, err
		}
		r.Algo = AlgoRSA
		r.Value = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	default:
		return r, fmt.Errorf("dkim: unsupported key type %T", pub)
	}
	return r, nil
}

// key is a loaded private key.
type key struct {
	selector string
	signer   crypto.Signer
	algo     string
}

// Records returns the DNS records of the keys of domain.
func Records(dir, domain string) ([]Record, error) {
	keys, err := loadKeys(dir, domain)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, k := range keys {
		r, err := record(domain, k.selector, k.signer)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// loadKeys reads dir/<domain>/*.key; no folder means no keys.
func loadKeys(dir, domain string) ([]key, error) {
	if !ValidDomain(domain) {
		return nil, nil
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	d, err := root.Open(domain)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var keys []key
	for _, n := range names {
		sel, ok := strings.CutSuffix(n, ".key")
		if !ok || !validSelector(sel) {
			continue
		}
		data, err := root.ReadFile(domain + "/" + n)
		if err != nil {
			return nil, err
		}
		kk, err := parseKey(sel, data)
		if err != nil {
			return nil, fmt.Errorf("dkim: %s/%s: %w", domain, n, err)
		}
		keys = append(keys, kk)
	}
	sortKeys(keys)
	return keys, nil
}

// parseKey parses the PEM private key of selector sel.
func parseKey(sel string, data []byte) (key, error) {
	k, err := tlsutil.ParsePrivateKey(data)
	if err != nil {
		return key{}, err
	}
	kk := key{selector: sel}
	switch s := k.(type) {
	case ed25519.PrivateKey:
		kk.signer, kk.algo = s, AlgoEd25519
	case *rsa.PrivateKey:
		kk.signer, kk.algo = s, AlgoRSA
	default:
		return key{}, fmt.Errorf("unsupported key type %T", k)
	}
	return kk, nil
}

// sortKeys puts ed25519 keys first: the signatures are prepended in this
// order.
func sortKeys(keys []key) {
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].algo == AlgoEd25519 && keys[j].algo != AlgoEd25519 })
}

// Signer signs messages with the keys under a folder (DATA/dkim). Keys
// are read again when a domain's folder changes, so keys made by
// `postino dkim keygen` are used without a restart. It implements
// queue.Signer.
type Signer struct {
	dir   string
	store KeyStore // nil: the files under dir
	mu    sync.Mutex
	// cache holds each domain's keys and the folder's modification time.
	cache map[string]cached
}

type cached struct {
	mod     time.Time
	version int64 // the KeyStore's
	keys    []key
}

// NewSigner returns a Signer for the keys under dir.
func NewSigner(dir string) *Signer {
	return &Signer{dir: dir, cache: make(map[string]cached)}
}

func (s *Signer) keys(ctx context.Context, domain string) ([]key, error) {
	if s.store != nil {
		return s.storeKeys(ctx, domain)
	}
	var mod time.Time
	if fi, err := os.Stat(s.dir + "/" + domain); err == nil {
		mod = fi.ModTime()
	} else {
		return nil, nil
	}
	s.mu.Lock()
	c, ok := s.cache[domain]
	s.mu.Unlock()
	if ok && c.mod.Equal(mod) {
		return c.keys, nil
	}
	keys, err := loadKeys(s.dir, domain)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[domain] = cached{mod: mod, keys: keys}
	s.mu.Unlock()
	return keys, nil
}

// Sign reads the whole message and returns the DKIM-Signature header
// fields (CRLF-terminated, folded) to prepend to it, one per key of
// domain, or "" when domain has no keys.
func (s *Signer) Sign(ctx context.Context, domain string, msg io.Reader) (string, error) {
	domain = strings.ToLower(domain)
	if !ValidDomain(domain) {
		return "", nil
	}
	keys, err := s.keys(ctx, domain)
	if err != nil || len(keys) == 0 {
		return "", err
	}
	signers := make([]*msgdkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	defer func() {
		for _, sg := range signers {
			if sg != nil {
				sg.Close()
			}
		}
	}()
	for _, k := range keys {
		sg, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain:                 domain,
			Selector:               k.selector,
			Signer:                 k.signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             HeaderKeys,
		})
		if err != nil {
			return "", fmt.Errorf("dkim: %w", err)
		}
		signers = append(signers, sg)
		writers = append(writers, sg)
	}
	if _, err := io.Copy(io.MultiWriter(writers...), fsutil.ContextReader(ctx, msg)); err != nil {
		return "", fmt.Errorf("dkim: reading message: %w", err)
	}
	var out strings.Builder
	for i, sg := range signers {
		if err := sg.Close(); err != nil {
			return "", fmt.Errorf("dkim: signing: %w", err)
		}
		out.WriteString(sg.Signature())
		signers[i] = nil
	}
	signers = signers[:0]
	return out.String(), nil
}

// Generate is `postino dkim keygen`: for an empty algo, KeygenAll (both key
// types, default selectors; selector is not used), else Keygen of that
// algo and selector. The domain is taken in lower case (RFC 6376 §3.5: d=
// is compared case-insensitively).
func Generate(dir, domain, algo, selector string) ([]Record, error) {
	domain = strings.ToLower(domain)
	if algo == "" {
		return KeygenAll(dir, domain)
	}
	r, err := Keygen(dir, domain, algo, selector)
	if err != nil {
		return nil, err
	}
	return []Record{r}, nil
}
