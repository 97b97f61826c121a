package milter

import (
	"strconv"
	"strings"
)

// maxReplyText is the longest reply text kept from a filter's custom
// reply; the rest is cut.
const maxReplyText = 400

// parseReply parses a filter's custom reply (SMFIR_REPLYCODE), as go-milter
// passes it: "554 5.7.1 Spam message rejected", possibly multi-line
// ("550-5.7.1 first\r\n550 5.7.1 second"). It returns the code, the RFC
// 3463 enhanced status (zero when absent or inconsistent with the code)
// and the text, its lines joined by a space, without control characters
// and cut at maxReplyText. ok is false when there is no 4xx or 5xx code.
func parseReply(s string) (code int, enh [3]int, text string, ok bool) {
	var texts []string
	for i, line := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if line == "" {
			continue
		}
		if len(line) < 3 {
			return 0, enh, "", false
		}
		c, err := strconv.Atoi(line[:3])
		if err != nil || c < 400 || c > 599 {
			return 0, enh, "", false
		}
		if i == 0 {
			code = c
		} else if c != code {
			return 0, enh, "", false
		}
		rest := line[3:]
		if rest != "" && rest[0] != ' ' && rest[0] != '-' {
			return 0, enh, "", false
		}
		rest = strings.TrimLeft(rest, " -")
		// RFC 3463 §2: class.subject.detail, the class matching the
		// reply's first digit (RFC 2034 §3).
		if e, after, found := parseEnhanced(rest); found {
			if e[0] == code/100 && enh == [3]int{} {
				enh = e
			}
			rest = after
		}
		texts = append(texts, rest)
	}
	if code == 0 {
		return 0, enh, "", false
	}
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(strings.Join(texts, " ")))
	if len(text) > maxReplyText {
		text = strings.ToValidUTF8(text[:maxReplyText], "")
	}
	return code, enh, text, true
}

// parseEnhanced parses an RFC 3463 status code at the start of s
// ("5.7.1 text"): class 2, 4 or 5, subject and detail of one to three
// digits.
func parseEnhanced(s string) (enh [3]int, rest string, ok bool) {
	word, after, _ := strings.Cut(s, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return enh, s, false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 || (i == 0 && len(p) != 1) {
			return [3]int{}, s, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || strings.ContainsAny(p, "+-") {
			return [3]int{}, s, false
		}
		enh[i] = n
	}
	if enh[0] != 2 && enh[0] != 4 && enh[0] != 5 {
		return [3]int{}, s, false
	}
	return enh, after, true
}
