package envelope

import (
	"testing"
	"time"
)

func TestNewMessageID(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := NewMessageID(now), NewMessageID(now.Add(time.Microsecond))
	if !ValidMessageID(a) || !ValidMessageID(b) {
		t.Fatalf("ids %q, %q not valid", a, b)
	}
	if a >= b {
		t.Errorf("ids do not sort by age: %q >= %q", a, b)
	}
	for _, bad := range []string{"", "0123456789ABCDEF", "0123456789ABCDEF01g", "../../../etc/passw", "0123456789ABCDEF012.1", "0123456789abcdef012"} {
		if ValidMessageID(bad) {
			t.Errorf("ValidMessageID(%q) = true", bad)
		}
	}
}
