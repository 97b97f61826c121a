package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// Destination is where downloaded messages are stored.
type Destination interface {
	// String names the destination for messages and logs.
	String() string
	// Deliver stores m, with its marker header, and returns only once the
	// copy is durable. The returned string identifies the copy.
	Deliver(ctx context.Context, m *Message) (string, error)
	// Find reports whether the message w.ID is already stored, complete
	// and durable, and if so returns the copy's identifier. It is asked
	// after an interruption between an intent and its done record. A
	// partial copy left by the interruption is never reported as found;
	// it is removed where the format allows.
	Find(ctx context.Context, w Want) (FindResult, string, error)
}

// batchDestination is a Destination that can make a batch of deliveries
// durable together: DeliverDeferred stores a message like Deliver, except
// that the copy becomes durable only with the next SyncBatch (a Maildir
// fsyncs each message file, and new/ once per batch). Nothing may rely on
// a deferred delivery (a done record, a DELE) before SyncBatch returns.
type batchDestination interface {
	Destination
	DeliverDeferred(ctx context.Context, m *Message) (string, error)
	SyncBatch(ctx context.Context) error
}

// Want is what Destination.Find looks for: the message's ID and, from the
// intent record, what a complete copy's body must be.
type Want struct {
	ID
	// BodySHA256 is the hex SHA-256 of the message's body (what follows
	// the header section's empty line) with LF line ends, and BodySize
	// its length; BodySHA256 is "" when the intent did not record it.
	BodySHA256 string
	BodySize   int64
}

// FindResult is the answer of Destination.Find.
type FindResult int

const (
	// NotFound: the message is not at the destination.
	NotFound FindResult = iota
	// Found: the message is at the destination.
	Found
	// Unknown: the destination cannot tell (an MDA without mda_check).
	Unknown
)

// ErrDestination wraps failures to store a message, so that they map onto
// the delivery exit code.
var ErrDestination = errors.New("destination")

// TempFail reports an MDA exit status of 75 (EX_TEMPFAIL).
var errTempFail = errors.New("temporary failure")

// NewDestination builds the destination d names (parsed by
// config.ParseFetchDestination, the one parser of the syntax): a Maildir,
// an mbox file or an MDA. A "local:" destination needs a Deliverer and is
// built with NewLocal. A leading "~/" in a path is the home directory.
func NewDestination(d config.FetchDestination, mdaCheck string) (Destination, error) {
	switch d.Kind {
	case config.FetchDestMaildir:
		return &Maildir{Dir: ExpandHome(d.Arg)}, nil
	case config.FetchDestMbox:
		return &Mbox{Path: ExpandHome(d.Arg)}, nil
	case config.FetchDestMDA:
		return &MDA{Command: d.Arg, Check: mdaCheck}, nil
	}
	return nil, fmt.Errorf("%w: %s needs local delivery (NewLocal)", config.ErrFetchDestination, d)
}

// ExpandHome replaces a leading "~/" with the home directory.
func ExpandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

// writeChunked copies r to w in chunks of 32 KiB. After the first chunk
// it reaches the deliver-partial crash-test step; when the hook is armed
// for that step, the chunk is first flushed from w to the file, so that the
// kill leaves a partial copy at the destination as a real crash would.
func writeChunked(w *bufio.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32*1024)
	var n int64
	first := true
	for {
		k, err := fill(r, buf)
		if k > 0 {
			m, werr := w.Write(buf[:k])
			n += int64(m)
			if werr != nil {
				return n, werr
			}
			if first {
				first = false
				if debugArmed("deliver-partial") {
					if ferr := w.Flush(); ferr != nil {
						return n, ferr
					}
				}
				debugPoint("deliver-partial")
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fill reads from r until buf is full or r fails (io.EOF at the end).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ---- Maildir ----

// Maildir delivers into a Maildir folder (new/, cur/, tmp/, created if
// missing, with an fsync of the parent of each directory created) through
// the Maildir writer of postino's own store (maildir.DeliverFolder): the
// same Dovecot-compatible names with ,S= and ,W= sizes, LF line ends, the
// message written to tmp/, fsync'd, renamed into new/ and new/ fsync'd
// (once per batch of messages; Find fsyncs the directory where it finds
// a message, whose name may not have been durable yet).
// The unique part of the name carries the ID's token ("X" + token + "."),
// so Find needs no file contents: a name in new/ or cur/ means a complete
// message, since rename is atomic.
type Maildir struct {
	Dir string

	batch *maildir.Folder // open between DeliverDeferred and SyncBatch
}

func (d *Maildir) String() string { return "maildir:" + d.Dir }

// ensure creates the folder and its subdirectories if missing, fsyncing
// the parent of each directory created.
func (d *Maildir) ensure() error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := mkdirAll(filepath.Join(d.Dir, sub), 0o700); err != nil {
			return fmt.Errorf("%w: %v", ErrDestination, err)
		}
	}
	return nil
}

// dirSynced, when set (by tests), is told each directory the shared
// Maildir writer fsyncs.
var dirSynced func(dir string)

// Deliver implements Destination.
func (d *Maildir) Deliver(ctx context.Context, m *Message) (string, error) {
	return d.deliver(ctx, m, false)
}

// DeliverDeferred implements batchDestination: the message file is
// fsync'd, new/ is not (SyncBatch does it once for the batch).
// The folder is opened (and created if missing) once per batch.
func (d *Maildir) DeliverDeferred(ctx context.Context, m *Message) (string, error) {
	if d.batch == nil {
		if err := d.ensure(); err != nil {
			return "", err
		}
		f, err := maildir.OpenFolder(d.Dir, dirSynced)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrDestination, err)
		}
		d.batch = f
	}
	name, err := d.batch.Deliver(ctx, m.WithMarker(true), d.options(true, m))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	return "new/" + name, nil
}

// SyncBatch implements batchDestination: it fsyncs new/, making the names
// of the messages delivered since the last SyncBatch durable.
func (d *Maildir) SyncBatch(ctx context.Context) error {
	if d.batch == nil {
		return nil
	}
	err := d.batch.SyncNew(dirSynced)
	d.batch.Close()
	d.batch = nil
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDestination, err)
	}
	return nil
}

// options returns the options of the Maildir writer for m.
func (d *Maildir) options(deferSync bool, m *Message) maildir.FolderOptions {
	return maildir.FolderOptions{
		Tag: m.Token(),
		// The deliver-partial crash-test step: killed here, the first
		// chunk is already in tmp/, as a real crash would leave it.
		AfterFirstChunk: func() { debugPoint("deliver-partial") },
		DirSynced:       dirSynced,
		DeferDirSync:    deferSync,
	}
}

func (d *Maildir) deliver(ctx context.Context, m *Message, deferSync bool) (string, error) {
	if err := d.ensure(); err != nil {
		return "", err
	}
	name, err := maildir.DeliverFolder(ctx, d.Dir, m.WithMarker(true), d.options(deferSync, m))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	return "new/" + name, nil
}

// Find implements Destination. Files of the message left in tmp/ by an
// interruption are removed.
func (d *Maildir) Find(ctx context.Context, w Want) (FindResult, string, error) {
	tok := "X" + w.Token() + "."
	if ents, err := os.ReadDir(filepath.Join(d.Dir, "tmp")); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), tok) {
				os.Remove(filepath.Join(d.Dir, "tmp", e.Name()))
			}
		}
	}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(d.Dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return NotFound, "", fmt.Errorf("%w: %v", ErrDestination, err)
		}
		for _, e := range ents {
			if strings.Contains(e.Name(), tok) {
				// The name may be there only in memory (a kill
				// between the rename and the batch's fsync of new/):
				// it must be durable before a done record allows a
				// DELE.
				if err := syncDir(filepath.Join(d.Dir, sub)); err != nil {
					return NotFound, "", fmt.Errorf("%w: %v", ErrDestination, err)
				}
				return Found, sub + "/" + e.Name(), nil
			}
		}
	}
	return NotFound, "", nil
}

// ---- header scanning shared by mbox and local mailboxes ----

// headerHasMarker reports whether the header section read from r contains
// the marker line (LF or CRLF line ends).
func headerHasMarker(r io.Reader, marker string) bool {
	br := bufio.NewReaderSize(r, 8192)
	for {
		line, err := br.ReadSlice('\n')
		t := bytes.TrimRight(line, "\r\n")
		if len(t) == 0 && (err == nil || len(line) == 0) {
			return false
		}
		if string(t) == marker {
			return true
		}
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
		}
		if err != nil {
			return false
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
