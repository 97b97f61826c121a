package queue

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
)

// smugglePayloads are messages whose line ends differ from CRLF in the
// ways an SMTP smuggling attack uses: a "." line ended by a bare CR or a
// bare LF, followed by commands the next hop must never read as commands.
var smugglePayloads = map[string]string{
	"CR.CRLF":   "Subject: x\r\n\r\nhello\r.\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n",
	"LF.LF":     "Subject: x\r\n\r\nhello\n.\nMAIL FROM:<ceo@bank.example>\n",
	"LF.CRLF":   "Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<ceo@bank.example>\r\n",
	"CRLF.LF":   "Subject: x\r\n\r\nhello\r\n.\nMAIL FROM:<ceo@bank.example>\r\n",
	"CRLF.CR":   "Subject: x\r\n\r\nhello\r\n.\rMAIL FROM:<ceo@bank.example>\r\n",
	"CR.CR":     "Subject: x\r\n\r\nhello\r.\rMAIL FROM:<ceo@bank.example>\r",
	"all bare":  "Subject: x\n\nhello\r.\n.\r\r\n\n.\n",
	"ending CR": "Subject: x\r\n\r\nhello\r",
}

// checkWire fails unless data (what went over the wire after DATA, up to
// and including the final ".\r\n") has only CRLF line ends and no line
// that is exactly "." before the end.
func checkWire(t *testing.T, data []byte) {
	t.Helper()
	if !bytes.HasSuffix(data, []byte("\r\n.\r\n")) {
		t.Fatalf("data does not end with CRLF.CRLF: %q", data)
	}
	checkCRLF(t, data)
	if i := bytes.Index(data, []byte("\r\n.\r\n")); i != len(data)-5 {
		t.Fatalf("end of data at %d, before the end (%d): %q", i, len(data)-5, data)
	}
	if bytes.HasPrefix(data, []byte(".\r\n")) {
		t.Fatalf("data starts with the end of data: %q", data)
	}
}

// checkCRLF fails unless every CR and LF in data is part of a CRLF.
func checkCRLF(t *testing.T, data []byte) {
	t.Helper()
	for i, c := range data {
		switch c {
		case '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				t.Fatalf("bare CR at %d in %q", i, data)
			}
		case '\n':
			if i == 0 || data[i-1] != '\r' {
				t.Fatalf("bare LF at %d in %q", i, data)
			}
		}
	}
}

// TestWriteDataSmuggling: whatever a queued message holds, the SMTP
// client sends no bare CR or LF (RFC 5321 §2.3.8) and no "." line before
// its own end of data, so the payload's commands stay message text.
func TestWriteDataSmuggling(t *testing.T) {
	for name, msg := range smugglePayloads {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			c := newClient(context.Background(), a, "mx.test", 5*time.Second)
			read := make(chan []byte, 1)
			go func() {
				got, _ := io.ReadAll(b)
				read <- got
			}()
			if err := c.writeData(strings.NewReader(msg)); err != nil {
				t.Fatal(err)
			}
			a.Close()
			got := <-read
			checkWire(t, got)
			if !bytes.Contains(got, []byte("MAIL FROM:<ceo@bank.example>")) && strings.Contains(msg, "MAIL FROM") {
				t.Errorf("the payload's text is lost: %q", got)
			}
		})
	}
}

// TestEnqueueNormalizesLineEnds: every way into the queue stores the
// message with CRLF line ends only, and the next hop gets the payload as
// text of one message (the test server removes the dot-stuffing).
func TestEnqueueNormalizesLineEnds(t *testing.T) {
	for name, msg := range smugglePayloads {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			srv := newServer(t, srvConfig{})
			e.route("remote.test", srv)
			id := e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, msg)
			rc, err := e.q.Message(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			checkCRLF(t, stored)
			e.runOnce()
			got := srv.messages()
			if len(got) != 1 || len(got[0].rcpts) != 1 || got[0].rcpts[0] != "bob@remote.test" {
				t.Fatalf("the next hop got %+v", got)
			}
			if strings.Contains(msg, "MAIL FROM") && !strings.Contains(got[0].data, "MAIL FROM:<ceo@bank.example>\r\n") {
				t.Errorf("the payload is not message text: %q", got[0].data)
			}
		})
	}
}

// TestDSNNormalizesLineEnds: a DSN, which returns the header or the text
// of a queued message (one queued by an older version may hold bare CR
// or LF), is queued with CRLF line ends only.
func TestDSNNormalizesLineEnds(t *testing.T) {
	e := newEnv(t, nil)
	id := newMessageID(e.clock.Now())
	body := "From: MAILER-DAEMON@postino.test\r\nSubject: bounce\r\n\r\nreturned\r.\r\nMAIL FROM:<ceo@bank.example>\n.\n"
	if err := e.q.enqueueDSN(context.Background(), id, "bob@remote.test", []byte(body)); err != nil {
		t.Fatal(err)
	}
	rc, err := e.q.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	stored, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	checkCRLF(t, stored)
	if !bytes.Contains(stored, []byte("returned\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\n.\r\n")) {
		t.Fatalf("stored %q", stored)
	}
}
