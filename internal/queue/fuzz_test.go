package queue

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzParseEntry: the entry loader never panics on garbage, and what it
// accepts survives a round trip.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"ABC.1","msg":"ABC","domain":"remote.test","from":"a@b","size":3,"arrival":"2026-01-01T00:00:00Z","expires":"2026-01-06T00:00:00Z","next_attempt":"2026-01-01T00:00:00Z","rcpts":[{"addr":"b@remote.test","status":"pending"}]}`))
	f.Add([]byte(`{"v":1,"id":"../x.1","msg":"../x","rcpts":[{"addr":"b","status":"sent"}]}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseEntry(data)
		if err != nil {
			return
		}
		if !validID(e.ID) || !validID(e.MessageID) || len(e.Recipients) == 0 {
			t.Fatalf("accepted bad entry %+v", e)
		}
		b, err := e.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseEntry(b); err != nil {
			t.Fatalf("round trip: %v\n%s", err, b)
		}
	})
}

// FuzzReadReply: the SMTP reply parser never panics, and a reply it
// accepts has a valid code.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n",
		"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
		"550 5.1.1 <x@y>: unknown\r\n",
		"451-4.3.0 first\r\n451 4.3.0 second\r\n",
		"250-a\r\n251 b\r\n",
		"HELLO\r\n",
		"999 no\r\n",
		"25",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readReply(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		if r.Code < 200 || r.Code > 599 || len(r.Lines) == 0 {
			t.Fatalf("accepted %+v", r)
		}
		if r.Enhanced != "" && !validStatus(r.Enhanced) {
			t.Fatalf("bad enhanced code %q", r.Enhanced)
		}
		_ = r.String()
	})
}
