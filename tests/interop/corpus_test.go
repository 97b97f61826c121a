package interop

import (
	"encoding/base64"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
)

// sender is the envelope sender of every test message.
const sender = "sender@remote.test"

// testMsg is one message as given to postino deliver.
type testMsg struct {
	id   int
	name string
	raw  []byte
}

const bigID = 99

const lateID = 50

var corpusNames = map[int]string{bigID: "10 MB base64", lateID: "late arrival"}

// lateMessage is delivered between two runs of a UIDL-tracking client.
func lateMessage() testMsg {
	return testMsg{lateID, corpusNames[lateID], []byte("X-Interop-Id: 50\nSubject: late arrival\n\ndelivered after the first download\n")}
}

func init() {
	for _, m := range smallCorpus() {
		corpusNames[m.id] = m.name
	}
}

func corpusName(id int) string { return corpusNames[id] }

// smallCorpus returns the varied messages; the big one is separate.
func smallCorpus() []testMsg {
	long := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 28)[:998]
	msgs := []testMsg{
		{1, "8-bit UTF-8", []byte("X-Interop-Id: 1\nFrom: Jürgen <j@remote.test>\nSubject: Grüße, 8-bit ✓ 日本語\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" +
			"Ünïcödé text: café, naïve, Ελληνικά, русский, 中文, emoji 😀🎉\n\tTab-indented line\nTrailing spaces   \n\xc3\xa9 at line start\n")},
		{2, "leading dots", []byte("X-Interop-Id: 2\nSubject: dots\n\n.leading dot\n..two leading dots\n...\n. dot space\n.\tdot tab\nmiddle . dot\n.\nthe line above is a single dot\n.\n")},
		{3, "single-dot body", []byte("X-Interop-Id: 3\nSubject: body is one dot\n\n.\n")},
		{4, "998-octet line", []byte("X-Interop-Id: 4\nSubject: long line\n\n" + long + "\nshort line after\n")},
		{5, "no final newline", []byte("X-Interop-Id: 5\nSubject: no final newline\n\nfirst line\nlast line without newline")},
		{6, "CRLF input", []byte("X-Interop-Id: 6\r\nReceived: from relay.remote.test by mx.remote.test; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: delivered with CRLF\r\nX-Folded: first part\r\n\tsecond part\r\n\r\nCRLF body\r\n.\r\n..\r\n\r\n\r\nblank lines above\r\n")},
		{7, "LF input", []byte("X-Interop-Id: 7\nSubject: delivered with LF\n\nLF body\nFrom the start of a line (mbox-sensitive)\n>From quoted\n\n\nblank lines above\n")},
		{8, "headers only", []byte("X-Interop-Id: 8\nSubject: headers only, no body\n")},
	}
	return msgs
}

var (
	bigOnce sync.Once
	bigMsg  testMsg
)

// bigMessage returns a 10 MB attachment-like message: a MIME multipart
// with base64 lines of 76 characters.
func bigMessage() testMsg {
	bigOnce.Do(func() {
		rng := rand.New(rand.NewChaCha8([32]byte{'p', 'o', 's', 't', 'i', 'n', 'o'}))
		data := make([]byte, 10<<20*3/4)
		for i := 0; i+8 <= len(data); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				data[i+j] = byte(v >> (8 * j))
			}
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var b strings.Builder
		b.Grow(len(enc) + len(enc)/76 + 1024)
		b.WriteString("X-Interop-Id: " + strconv.Itoa(bigID) + "\nSubject: 10 MB attachment\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b0undary\"\n\n")
		b.WriteString("--b0undary\nContent-Type: text/plain\n\nSee the attachment.\n--b0undary\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"random.bin\"\n\n")
		for i := 0; i < len(enc); i += 76 {
			b.WriteString(enc[i:min(i+76, len(enc))])
			b.WriteByte('\n')
		}
		b.WriteString("--b0undary--\n")
		bigMsg = testMsg{bigID, corpusNames[bigID], []byte(b.String())}
	})
	return bigMsg
}

// fullCorpus is the small corpus plus the 10 MB message.
func fullCorpus() []testMsg { return append(smallCorpus(), bigMessage()) }
