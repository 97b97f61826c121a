package pop3

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/postino-mail/postino/internal/testutil"
)

func TestClientFullSession(t *testing.T) {
	ts := startServer(t, nil)
	for i := 1; i <= 150; i++ {
		ts.be.add("bob@example.test", fmt.Sprintf("u%03d", i), fmt.Sprintf("Subject: %d\r\n\r\n.body %d\r\n", i, i))
	}
	c := ts.client(t)
	if _, err := c.Capabilities(); err != nil {
		t.Fatal(err)
	}
	if !c.HasCap("pipelining") || !c.HasCap("UIDL") {
		t.Fatal("capabilities not recorded")
	}
	if err := c.Auth(sasl.NewPlainClient("", "bob@example.test", "hunter2")); err != nil {
		t.Fatal(err)
	}
	uidl, err := c.UIDL()
	if err != nil || len(uidl) != 150 || uidl[149] != (UIDLEntry{150, "u150"}) {
		t.Fatalf("UIDL = %v, %v", uidl[len(uidl)-1], err)
	}
	one, err := c.UIDLOne(7)
	if err != nil || one.UID != "u007" {
		t.Fatalf("UIDL 7 = %v %v", one, err)
	}
	le, err := c.ListOne(3)
	if err != nil || le.Size != int64(len("Subject: 3\r\n\r\n.body 3\r\n")) {
		t.Fatalf("LIST 3 = %v %v", le, err)
	}
	nums := make([]int, 150)
	for i := range nums {
		nums[i] = i + 1
	}
	got := 0
	err = c.RetrAll(nums, func(n int, msg io.Reader, err error) error {
		if err != nil {
			return err
		}
		b, err := io.ReadAll(msg)
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("Subject: %d\r\n\r\n.body %d\r\n", n, n); string(b) != want {
			return fmt.Errorf("message %d = %q", n, b)
		}
		got++
		return nil
	})
	if err != nil || got != 150 {
		t.Fatalf("RetrAll: %v after %d", err, got)
	}
	// A body left unread is skipped before the next command.
	if _, err := c.Top(1, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	var perr *Error
	if err := c.Dele(1); !errors.As(err, &perr) || !strings.Contains(perr.Text, "already deleted") {
		t.Fatalf("second DELE: %v", err)
	}
	if err := c.Rset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(2); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("bob@example.test") })
	if n := len(ts.be.boxes["bob@example.test"]); n != 149 {
		t.Fatalf("%d messages left, want 149", n)
	}
}

func TestClientAuthErrors(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.client(t)
	err := c.Auth(sasl.NewPlainClient("", "bob@example.test", "wrong"))
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("err = %v, want ErrAuthFailed", err)
	}
	err = c.Login("bob@example.test", "wrong")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeAuth {
		t.Fatalf("err = %v", err)
	}
}

func TestParseError(t *testing.T) {
	cases := map[string]Error{
		" [IN-USE] locked": {Code: "IN-USE", Text: "locked"},
		" no code":         {Text: "no code"},
		" [SYS/TEMP]":      {Code: "SYS/TEMP"},
		" [unterminated x": {Text: "[unterminated x"},
		"":                 {},
	}
	for in, want := range cases {
		if got := parseError(in); *got != want {
			t.Errorf("parseError(%q) = %+v, want %+v", in, *got, want)
		}
	}
}
