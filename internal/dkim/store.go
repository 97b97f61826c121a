package dkim

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"
)

// StoredKey is a DKIM private key kept in a KeyStore.
type StoredKey struct {
	Domain   string // lower case
	Selector string
	PEM      []byte // PKCS#8 "PRIVATE KEY" PEM, as in a .key file
}

// ErrKeyExists is returned by KeyStore.Add when the domain already has a
// key of that selector.
var ErrKeyExists = errors.New("dkim: the domain already has a key of that selector")

// KeyStore keeps the signing keys where every node of a cluster finds
// them (PostgreSQL, see internal/store/pgstore), instead of DATA/dkim.
type KeyStore interface {
	// Version returns a number that changes whenever a key is added or
	// removed.
	Version(ctx context.Context) (int64, error)
	// Keys returns the keys of domain.
	Keys(ctx context.Context, domain string) ([]StoredKey, error)
	// Add stores a new key; ErrKeyExists when its selector is taken.
	Add(ctx context.Context, k StoredKey) error
}

// NewStoreSigner returns a Signer for the keys of ks: every node sharing
// ks signs with the same keys. A domain's keys are read again when the
// store's version changed (one small query per message signed).
func NewStoreSigner(ks KeyStore) *Signer {
	return &Signer{store: ks, cache: make(map[string]cached)}
}

// storeKeys is keys for a Signer over a KeyStore.
func (s *Signer) storeKeys(ctx context.Context, domain string) ([]key, error) {
	v, err := s.store.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	s.mu.Lock()
	c, ok := s.cache[domain]
	s.mu.Unlock()
	if ok && c.version == v {
		return c.keys, nil
	}
	stored, err := s.store.Keys(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	var keys []key
	for _, sk := range stored {
		if !validSelector(sk.Selector) {
			continue
		}
		k, err := parseKey(sk.Selector, sk.PEM)
		if err != nil {
			return nil, fmt.Errorf("dkim: key %s of %s: %w", sk.Selector, domain, err)
		}
		keys = append(keys, k)
	}
	sortKeys(keys)
	s.mu.Lock()
	s.cache[domain] = cached{version: v, keys: keys}
	s.mu.Unlock()
	return keys, nil
}

// GenerateStore is Generate into a KeyStore: for an empty algo an ed25519
// and an RSA key with the default selectors, else one key of algo.
func GenerateStore(ctx context.Context, ks KeyStore, domain, algo, selector string) ([]Record, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return nil, fmt.Errorf("dkim: invalid domain %q", domain)
	}
	algos := []string{algo}
	if algo == "" {
		algos, selector = []string{AlgoEd25519, AlgoRSA}, ""
	}
	var out []Record
	for _, a := range algos {
		sel := selector
		if sel == "" {
			sel = DefaultSelector(a, time.Now())
		}
		if !validSelector(sel) {
			return out, fmt.Errorf("dkim: invalid selector %q", sel)
		}
		k, der, err := newKey(a)
		if err != nil {
			return out, err
		}
		p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := ks.Add(ctx, StoredKey{Domain: domain, Selector: sel, PEM: p}); err != nil {
			return out, err
		}
		r, err := record(domain, sel, k)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// FileKeys returns every key under dir (DATA/dkim), as "postino db
// import" copies them into a KeyStore.
func FileKeys(dir string) ([]StoredKey, error) {
	root, err := openRoot(dir)
	if root == nil || err != nil {
		return nil, err
	}
	defer root.Close()
	domains, err := readDirNames(root, ".")
	if err != nil {
		return nil, err
	}
	var out []StoredKey
	for _, d := range domains {
		if !ValidDomain(d) {
			continue
		}
		names, err := readDirNames(root, d)
		if err != nil {
			continue // not a folder
		}
		for _, n := range names {
			sel, ok := strings.CutSuffix(n, ".key")
			if !ok || !validSelector(sel) {
				continue
			}
			data, err := root.ReadFile(d + "/" + n)
			if err != nil {
				return nil, err
			}
			if _, err := parseKey(sel, data); err != nil {
				return nil, fmt.Errorf("dkim: %s/%s: %w", d, n, err)
			}
			out = append(out, StoredKey{Domain: d, Selector: sel, PEM: data})
		}
	}
	return out, nil
}

// openRoot opens dir; a missing dir is (nil, nil).
func openRoot(dir string) (*os.Root, error) {
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return root, err
}

// readDirNames lists the folder name of root, sorted.
func readDirNames(root *os.Root, name string) ([]string, error) {
	d, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}
