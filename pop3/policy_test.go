package pop3

import (
	"errors"
	"testing"
)

// TestPlaintextPolicyText checks the text form of the policy, which the
// configuration of both the POP3 and the SMTP server decodes.
func TestPlaintextPolicyText(t *testing.T) {
	for _, p := range []PlaintextPolicy{PlaintextLoopback, PlaintextNever, PlaintextAlways} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var q PlaintextPolicy
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Errorf("%v: round trip gave %v, %v", p, q, err)
		}
	}
	for _, bad := range []string{"", "Never", "yes", "loopback "} {
		if _, err := ParsePlaintextPolicy(bad); !errors.Is(err, ErrPlaintextPolicy) {
			t.Errorf("ParsePlaintextPolicy(%q) = %v", bad, err)
		}
	}
	if _, err := PlaintextPolicy(3).MarshalText(); err == nil {
		t.Error("an undefined policy marshalled")
	}
}
