package smtpin

import (
	"errors"
	"testing"
)

// TestSetOptions: new options apply to the sessions that begin (EHLO)
// afterwards, a session already begun keeps its own; a change of a field
// fixed at New, or an invalid set, is refused and the old options stay.
func TestSetOptions(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	old := e.dial()
	old.ehlo()

	next := *e.srv.options()
	next.MaxRecipients = 1
	fixed := next
	fixed.MaxMessageBytes++
	var fe *FixedOptionError
	if err := e.srv.SetOptions(fixed); !errors.As(err, &fe) || fe.Field != "MaxMessageBytes" {
		t.Fatalf("SetOptions changing MaxMessageBytes = %v, want a FixedOptionError", err)
	}
	invalid := next
	invalid.MaxErrors = 0
	var oe *OptionError
	if err := e.srv.SetOptions(invalid); !errors.As(err, &oe) || oe.Field != "MaxErrors" {
		t.Fatalf("SetOptions with MaxErrors 0 = %v, want an OptionError", err)
	}
	if got := e.srv.options().MaxRecipients; got != 100 {
		t.Fatalf("MaxRecipients = %d after refused sets, want 100", got)
	}
	if err := e.srv.SetOptions(next); err != nil {
		t.Fatal(err)
	}

	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(452, "4.5.3 Too many recipients", "RCPT TO:<bob@example.test>")

	old.cmd(250, "", "MAIL FROM:<x@remote.example>")
	old.cmd(250, "", "RCPT TO:<alice@example.test>")
	old.cmd(250, "", "RCPT TO:<bob@example.test>")
}
