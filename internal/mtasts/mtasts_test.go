package mtasts

import (
	"regexp"
	"testing"
)

// TestPolicyTextAndID: the text follows RFC 8461 §3.2 and the id (§3.1)
// is 1-32 alphanumerics that changes with the text.
func TestPolicyTextAndID(t *testing.T) {
	p := Policy{Mode: ModeEnforce, MX: []string{"Mail.Example.org."}, MaxAge: DefaultMaxAge}
	want := "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
	if got := p.Text(); got != want {
		t.Fatalf("Text = %q, want %q", got, want)
	}
	id := p.ID()
	if !regexp.MustCompile(`^[0-9a-zA-Z]{1,32}$`).MatchString(id) {
		t.Fatalf("ID %q is not 1-32 alphanumerics", id)
	}
	q := p
	q.Mode = ModeTesting
	if q.ID() == id {
		t.Fatal("ID did not change with the mode")
	}
	if r := p.Record(); r != "v=STSv1; id="+id {
		t.Fatalf("Record = %q", r)
	}
}
