package auth

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzCanonicalAddress(f *testing.F) {
	for _, s := range []string{"alice@example.com", "Alice@Example.COM", "../x@y", "a/b@c", "a@b/c", ":", "jörg@Bücher.Example", "a@K.com", "a..b@c", "#x@y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := CanonicalAddress(s)
		if err != nil {
			if c != "" {
				t.Errorf("CanonicalAddress(%q) = %q with error %v", s, c, err)
			}
			return
		}
		if strings.ContainsAny(c, "/\\:\x00\n\r") || strings.Contains(c, "..") || strings.HasPrefix(c, "#") || strings.HasPrefix(c, ".") {
			t.Errorf("CanonicalAddress(%q) = %q: unsafe", s, c)
		}
		if !utf8.ValidString(c) || len(c) > MaxAddressLen || strings.Count(c, "@") != 1 {
			t.Errorf("CanonicalAddress(%q) = %q: invalid", s, c)
		}
		again, err := CanonicalAddress(c)
		if err != nil || again != c {
			t.Errorf("CanonicalAddress(%q) = %q, %v: not idempotent", c, again, err)
		}
		u, err := ParseLine(c + ":{PLAIN}x")
		if err != nil || u.Address != c || u.Hash != "{PLAIN}x" {
			t.Errorf("ParseLine of a canonical address %q = %+v, %v", c, u, err)
		}
	})
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"alice@example.com:{PLAIN}pw", "bob@example.com:{PLAIN}pw:1000:1000::/home/bob::x=y", "# comment", "", "x", "a@b:", ":::::::", "a@b:c\r"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		u, err := ParseLine(line)
		if err != nil {
			return
		}
		if c, err := CanonicalAddress(u.Address); err != nil || c != u.Address {
			t.Errorf("ParseLine(%q).Address = %q: not canonical (%v)", line, u.Address, err)
		}
		if u.Hash == "" || strings.ContainsAny(u.Hash, ":\n\r") {
			t.Errorf("ParseLine(%q).Hash = %q", line, u.Hash)
		}
		// Writing the user back gives the same user.
		out := u.Address + ":" + u.Hash
		if u.Extra != nil {
			out += ":" + strings.Join(u.Extra, ":")
		}
		u2, err := ParseLine(out)
		if err != nil || !equalUser(u, u2) {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v", out, u2, err, u)
		}
	})
}

func FuzzVerifyPassword(f *testing.F) {
	// Keep every computation cheap: refuse costly parameters.
	saved := []any{maxArgon2Memory, maxArgon2Time, maxCryptRounds, maxBcryptCost, maxSCRAMIter}
	maxArgon2Memory, maxArgon2Time, maxCryptRounds, maxBcryptCost, maxSCRAMIter = 256, 2, 2000, 5, 2000
	f.Cleanup(func() {
		maxArgon2Memory, maxArgon2Time, maxCryptRounds = saved[0].(uint32), saved[1].(uint32), saved[2].(int)
		maxBcryptCost, maxSCRAMIter = saved[3].(int), saved[4].(int)
	})
	for _, s := range []struct{ stored, pw string }{
		{"{PLAIN}x", "x"},
		{"{SHA256-CRYPT}$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC", "the minimum number is still observed"},
		{"{SHA512-CRYPT}$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.", "x"},
		{"{BLF-CRYPT}$2y$04$47pjDAO4j6ql6tIhqyuCmebDFc9Q3QGvfPJb5hlcj2r9q8hyurRNq", "correct horse"},
		{"{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", "x"},
		{"{ARGON2I}$argon2i$v=19$m=64,t=1,p=2$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA", "x"},
		{"{SCRAM-SHA-256}1000,BsJf7PZswbpqTCO4R/hsEA==,TsTl1izKGM3RvSScVFoV8lHQRwPQYBg4fzPcvqmU/WA=,5346n6UI27yvFDR2DFyIoSOeyhs0s6ZKnak6jSG0sNg=", "x"},
		{"$6$rounds=1000$x$", "x"},
		{"{", ""},
		{"{UNKNOWN}abc", "abc"},
	} {
		f.Add(s.stored, s.pw)
	}
	f.Fuzz(func(t *testing.T, stored, password string) {
		ok, err := VerifyPassword(stored, password)
		if err != nil {
			if ok {
				t.Errorf("VerifyPassword(%q) = true with error %v", stored, err)
			}
			if !errors.Is(err, ErrMalformedHash) && !errors.Is(err, ErrUnknownScheme) {
				t.Errorf("VerifyPassword(%q) error %v wraps neither ErrMalformedHash nor ErrUnknownScheme", stored, err)
			}
		}
		if verr := ValidateHash(stored); verr == nil && err != nil {
			t.Errorf("ValidateHash(%q) = nil but VerifyPassword failed: %v", stored, err)
		}
		SCRAMCredentials(stored)
	})
}

// FuzzStoredUser: a user accepted for a Store (postino db import,
// AddUser) is one passwd-file line that parses back to exactly that
// user, so that no field can add a user or change another's.
func FuzzStoredUser(f *testing.F) {
	f.Add("alice@example.com", "{PLAIN}pw", "1000", "userdb_quota_rule=*", 2)
	f.Add("Bob@Example.COM", helloHash, "", "x\ny:z", 3)
	f.Add("a@b", "{PLAIN}a:b", "c", "d", 1)
	f.Add("a@b", "{PLAIN}x", "\r", "", 2)
	f.Fuzz(func(t *testing.T, addr, hash, e1, e2 string, n int) {
		var extra []string
		switch n % 4 {
		case 1:
			extra = []string{e1}
		case 2:
			extra = []string{e1, e2}
		case 3:
			extra = []string{e1, e2, e1}
		}
		u, err := checkUser(User{Address: addr, Hash: hash, Extra: extra})
		if err != nil {
			return
		}
		line := u.line()
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("line break in %q", line)
		}
		got, err := ParseLine(line)
		if err != nil || !equalUser(got, u) {
			t.Fatalf("%q parses as %+v, %v; want %+v", line, got, err, u)
		}
	})
}
