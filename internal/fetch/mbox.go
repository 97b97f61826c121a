package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Mbox appends to an mbox file in the mboxrd format: each message starts
// with a "From " line, lines matching ">*From " get one more '>', and a
// blank line follows each message. Writers are excluded with both an
// fcntl lock on the file and a PATH.lock dot-lock (holding the owner's
// PID, written to a temporary file hard-linked to the lock name, so that it
// never exists without it; one whose owner is dead, or older than ten
// minutes, is stale and removed), as mutt and procmail expect. Each
// message is fsync'd before Deliver returns, and a new file's directory
// when the file is created; a failed append is truncated away.
//
// Find scans the file for the message's marker header and checks that
// the entry, decoded, has the recorded SHA-256, or else that its body has
// the length and SHA-256 recorded in the intent (a mail reader may have
// rewritten the header): a complete copy is found; a partial copy (the
// process was killed while appending) is reported as not found, and
// truncated away when it is at the end of the file.
type Mbox struct {
	Path string
	// LockTimeout bounds the wait for the locks; 0 means 30 seconds.
	LockTimeout time.Duration
}

func (b *Mbox) String() string { return "mbox:" + b.Path }

// lock takes the dot-lock and the fcntl lock on f.
func (b *Mbox) lock(ctx context.Context, f *os.File) (unlock func(), err error) {
	timeout := b.LockTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	dot := b.Path + ".lock"
	for {
		err := createDotLock(dot)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: dot-lock %s: %v", ErrDestination, dot, err)
		}
		if staleDotLock(dot) {
			os.Remove(dot)
			continue
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s is locked by another program", ErrDestination, b.Path)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fl := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	for {
		err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &fl)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			os.Remove(dot)
			return nil, fmt.Errorf("%w: %s is locked by another program: %v", ErrDestination, b.Path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return func() {
		fl := syscall.Flock_t{Type: syscall.F_UNLCK}
		syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &fl)
		os.Remove(dot)
	}, nil
}

var dotLockSeq atomic.Int64

// createDotLock creates the dot-lock dot holding our PID, atomically: the
// PID is written to a temporary file DOT.PID.N, which is then hard-linked
// to dot (the link fails if dot exists), as liblockfile does. A dot-lock
// of ours therefore never exists without its PID, even if the process is
// killed meanwhile, and is recognised as stale once we are dead.
func createDotLock(dot string) error {
	tmp := dot + "." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatInt(dotLockSeq.Add(1), 10)
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	debugPoint("dot-lock")
	err := os.Link(tmp, dot)
	os.Remove(tmp)
	if err == nil || errors.Is(err, os.ErrExist) {
		return err
	}
	// A file system without hard links: create the lock directly (a
	// kill before the PID is written leaves an empty lock, stale only
	// with age).
	lf, err := os.OpenFile(dot, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(lf, "%d\n", os.Getpid())
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dot)
	}
	return err
}

// removeDotLockLeftovers removes the temporary files of createDotLock left
// by processes that died before removing them.
func removeDotLockLeftovers(dot string) {
	dir, base := filepath.Split(dot)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			continue
		}
		p, n, ok := strings.Cut(rest, ".")
		pid, err1 := strconv.Atoi(p)
		_, err2 := strconv.ParseUint(n, 10, 64)
		if ok && err1 == nil && err2 == nil && pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// staleDotLock reports whether a dot-lock's owner is gone or it is older
// than ten minutes.
func staleDotLock(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	if time.Since(fi.ModTime()) > 10*time.Minute {
		return true
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		// Someone else's lock format, or not yet written: wait for age.
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// fromLine returns the mbox separator line for m.
func fromLine(m *Message) string {
	sender := m.ReturnPath()
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	return "From " + sender + " " + m.At.UTC().Format("Mon Jan _2 15:04:05 2006") + "\n"
}

// open opens the mbox file for appending, creating it if missing; a
// created file's directory is fsync'd, so that its entry is as durable as
// the messages fsync'd into it.
func (b *Mbox) open() (*os.File, error) {
	f, err := os.OpenFile(b.Path, os.O_RDWR, 0)
	if !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	f, err = os.OpenFile(b.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return os.OpenFile(b.Path, os.O_RDWR, 0) // created meanwhile
	}
	if err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(b.Path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Deliver implements Destination.
func (b *Mbox) Deliver(ctx context.Context, m *Message) (string, error) {
	f, err := b.open()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	defer f.Close()
	unlock, err := b.lock(ctx, f)
	if err != nil {
		return "", err
	}
	defer unlock()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	bw := bufio.NewWriterSize(f, 64*1024)
	// A file that does not end in an empty line gets one, so that our
	// "From " line starts a message.
	if off > 0 {
		tail := make([]byte, 2)
		if n, _ := f.ReadAt(tail, max(0, off-2)); n > 0 {
			switch {
			case off == 1 && tail[0] != '\n', off >= 2 && tail[1] != '\n':
				bw.WriteString("\n\n")
			case off >= 2 && tail[0] != '\n':
				bw.WriteString("\n")
			}
		}
	}
	start := off + int64(bw.Buffered())
	bw.WriteString(fromLine(m))
	pr, pw := io.Pipe()
	go func() {
		err := lfLines(m.WithMarker(true), func(line []byte) error {
			if isFromLine(line) {
				if _, err := pw.Write([]byte{'>'}); err != nil {
					return err
				}
			}
			_, err := pw.Write(line)
			return err
		})
		pw.CloseWithError(err)
	}()
	_, err = writeChunked(bw, pr)
	pr.Close()
	if err == nil {
		bw.WriteString("\n") // the empty line ending the entry
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Truncate(off)
		f.Sync()
		return "", fmt.Errorf("%w: appending to %s: %v", ErrDestination, b.Path, err)
	}
	return "offset " + itoa(start), nil
}

// Find implements Destination. An entry carrying the marker is a complete
// copy if it decodes to the message's SHA-256, or if its body (what
// follows the header's empty line, which a mail reader does not rewrite)
// has the length and SHA-256 recorded in the intent: a copy cut short by a
// crash fails both, even where the cut falls after an empty line. A
// partial copy at the end of the file is truncated away; one followed by
// other messages (another program appended after it) is left where it is
// and reported in the returned string; in both cases the message is not
// found and is delivered again.
func (b *Mbox) Find(ctx context.Context, w Want) (FindResult, string, error) {
	f, err := os.OpenFile(b.Path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return NotFound, "", nil
	}
	if err != nil {
		return NotFound, "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	defer f.Close()
	unlock, err := b.lock(ctx, f)
	if err != nil {
		return NotFound, "", err
	}
	defer unlock()
	// After an interruption: a kill while taking the dot-lock may have
	// left a temporary file next to the mbox.
	removeDotLockLeftovers(b.Path + ".lock")

	marker := []byte(w.Marker())
	br := bufio.NewReaderSize(f, 64*1024)
	var (
		pos        int64 // offset of the next line
		entryStart int64 = -1
		inHeader   bool
		matching   bool           // the current entry carries our marker
		h          = sha256.New() // the entry decoded to wire form (CRLF)
		bh         = sha256.New() // its body, LF line ends
		bodyLen    int64
		inBody     bool // the header's empty line was seen
		prevBlank  = true
		pendBlank  bool // an empty line not yet known to be content
		pendInBody bool // ... and it is a line of the body
		partial    []string
	)
	// complete reports whether the entry that just ended is a complete
	// copy of the message.
	complete := func() bool {
		if hex.EncodeToString(h.Sum(nil)) == w.SHA256 {
			return true
		}
		// A header rewritten by a mail reader (Status:, X-UID:, ...)
		// leaves the body as delivered. An empty body proves nothing.
		return w.BodySHA256 != "" && inBody && bodyLen > 0 && bodyLen == w.BodySize &&
			hex.EncodeToString(bh.Sum(nil)) == w.BodySHA256
	}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			lineStart := pos
			pos += int64(len(line))
			isSep := prevBlank && bytes.HasPrefix(line, []byte("From "))
			if isSep {
				if matching {
					if complete() {
						return Found, "offset " + itoa(entryStart), nil
					}
					partial = append(partial, itoa(entryStart))
				}
				entryStart, inHeader, matching, pendBlank, inBody, bodyLen = lineStart, true, false, false, false, 0
				h.Reset()
				bh.Reset()
			} else if entryStart >= 0 {
				body := bytes.TrimSuffix(line, []byte("\n"))
				lineEnd := len(body) < len(line)
				switch {
				case inHeader && string(body) == string(marker):
					matching = true // the marker line is ours, not the content
				default:
					if pendBlank {
						h.Write([]byte("\r\n"))
						if pendInBody {
							bh.Write([]byte("\n"))
							bodyLen++
						}
						pendBlank = false
					}
					if len(body) == 0 && lineEnd {
						// Maybe the separator blank line; decided by
						// what follows. The header's empty line is not
						// part of the body.
						pendBlank, pendInBody = true, !inHeader
						if inHeader {
							inHeader, inBody = false, true
						}
						break
					}
					if isFromLine(body) && body[0] == '>' {
						body = body[1:]
					}
					h.Write(body)
					if lineEnd {
						h.Write([]byte("\r\n"))
					}
					if !inHeader {
						bh.Write(body)
						bodyLen += int64(len(body))
						if lineEnd {
							bh.Write([]byte("\n"))
							bodyLen++
						}
					}
				}
			}
			prevBlank = string(line) == "\n"
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return NotFound, "", fmt.Errorf("%w: reading %s: %v", ErrDestination, b.Path, err)
		}
	}
	if matching {
		if complete() {
			return Found, "offset " + itoa(entryStart), nil
		}
		// A partial copy at the end: the append was interrupted.
		if err := f.Truncate(entryStart); err != nil {
			return NotFound, "", fmt.Errorf("%w: truncating the partial copy in %s: %v", ErrDestination, b.Path, err)
		}
		if err := f.Sync(); err != nil {
			return NotFound, "", fmt.Errorf("%w: %v", ErrDestination, err)
		}
	}
	if len(partial) > 0 {
		return NotFound, "partial copy left at offset " + strings.Join(partial, ", "), nil
	}
	return NotFound, "", nil
}
