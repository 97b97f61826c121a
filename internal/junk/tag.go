package junk

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// MaxHeaderBytes is the largest header block Tagged rewrites; the rest of a
// longer one is passed on unchanged (tagged at the top all the same).
const MaxHeaderBytes = 1 << 20

// Tagged returns msg (CRLF line ends) marked as spam: X-Spam: yes and
// X-Spam-Score at the top of the header, any X-Spam and X-Spam-Score
// fields of the sender's removed (so a spammer cannot pre-empt them), and
// prefix put in front of the first Subject (unless it starts with it
// already). It streams: only the header block is read ahead, up to
// MaxHeaderBytes. The caller closes it, which ends the copy when the
// reader stops before the end.
func Tagged(msg io.Reader, score float64, prefix string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTagged(pw, msg, score, prefix))
	}()
	return pr
}

// writeTagged writes the tagged message to w.
func writeTagged(w io.Writer, msg io.Reader, score float64, prefix string) error {
	br := bufio.NewReaderSize(msg, 32*1024)
	bw := bufio.NewWriterSize(w, 32*1024)
	bw.WriteString("X-Spam: yes\r\nX-Spam-Score: " + FormatScore(score) + "\r\n")
	var total int
	dropping := false // in a dropped field's continuation lines
	subjectDone := prefix == ""
	for total < MaxHeaderBytes {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line over the buffer: not a header we rewrite; the
			// rest goes as it is.
			bw.Write(line)
			break
		}
		total += len(line)
		if len(line) == 0 {
			if err != nil && err != io.EOF {
				return err
			}
			break
		}
		if isBlank(line) {
			bw.Write(line)
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !dropping {
				bw.Write(line)
			}
		} else {
			name, _, ok := bytes.Cut(line, []byte(":"))
			n := string(bytes.TrimRight(name, " \t"))
			dropping = ok && (strings.EqualFold(n, "X-Spam") || strings.EqualFold(n, "X-Spam-Score"))
			switch {
			case dropping:
			case ok && !subjectDone && strings.EqualFold(n, "Subject"):
				subjectDone = true
				bw.Write(prefixSubject(line, len(name)+1, prefix))
			default:
				bw.Write(line)
			}
		}
		if err == io.EOF {
			return bw.Flush()
		}
		if err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := io.Copy(w, br)
	return err
}

func isBlank(line []byte) bool {
	return string(line) == "\r\n" || string(line) == "\n"
}

// prefixSubject puts prefix in front of the value of a Subject line (the
// value starts at colon+... after optional white space).
func prefixSubject(line []byte, at int, prefix string) []byte {
	rest := line[at:]
	trimmed := bytes.TrimLeft(rest, " \t")
	if bytes.HasPrefix(trimmed, []byte(prefix)) {
		return line
	}
	out := make([]byte, 0, len(line)+len(prefix)+1)
	out = append(out, line[:at]...)
	out = append(out, ' ')
	out = append(out, prefix...)
	if len(prefix) > 0 && prefix[len(prefix)-1] != ' ' && len(trimmed) > 0 && !isBlank(trimmed) {
		out = append(out, ' ')
	}
	return append(out, trimmed...)
}
