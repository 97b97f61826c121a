package smtpin

import (
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestReceivedHeader(t *testing.T) {
	date := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
	tests := []struct {
		name string
		tr   trace
		want string
	}{
		{"plain", trace{helo: "client.example", remote: netip.MustParseAddr("192.0.2.1"), hostname: "mx.example.test", id: "ID1", rcpt: "a@example.test", date: date},
			"Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test (postino) with ESMTP id ID1\r\n\tfor <a@example.test>; Thu, 02 Jan 2025 03:04:05 +0100\r\n"},
		{"tls auth", trace{helo: "c", remote: netip.MustParseAddr("2001:db8::2"), hostname: "mx", id: "ID2", rcpt: "a@x",
			tls: &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}, user: "u@x", date: date},
			"Received: from c ([IPv6:2001:db8::2])\r\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\t(authenticated as u@x)\r\n\tby mx (postino) with ESMTPSA id ID2\r\n\tfor <a@x>; Thu, 02 Jan 2025 03:04:05 +0100\r\n"},
		{"lmtp unix utf8 no rcpt", trace{helo: "mta", hostname: "mx", id: "ID3", lmtp: true, utf8: true, date: date},
			"Received: from mta (unix socket)\r\n\tby mx (postino) with UTF8LMTP id ID3; Thu, 02 Jan 2025 03:04:05 +0100\r\n"},
		{"mapped v4, tls1.2, hostile helo", trace{helo: "x\r\nBcc: y (z)", remote: netip.MustParseAddr("::ffff:10.0.0.1"), hostname: "mx", id: "I",
			tls: &tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, rcpt: "a>\r\nb@x", date: date},
			"Received: from x__Bcc:_y__z_ ([10.0.0.1])\r\n\t(using TLSv1.2 with cipher TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)\r\n\tby mx (postino) with ESMTPS id I\r\n\tfor <a???b@x>; Thu, 02 Jan 2025 03:04:05 +0100\r\n"},
	}
	for _, tt := range tests {
		if got := tt.tr.header(); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
	for _, p := range []struct {
		lmtp, utf8, tls, auth bool
		want                  string
	}{
		{false, false, false, false, "ESMTP"}, {false, false, true, false, "ESMTPS"}, {false, false, false, true, "ESMTPA"},
		{false, false, true, true, "ESMTPSA"}, {true, false, false, false, "LMTP"}, {true, false, true, true, "LMTPSA"},
		{false, true, false, false, "UTF8SMTP"}, {false, true, true, true, "UTF8SMTPSA"}, {true, true, false, true, "UTF8LMTPA"},
	} {
		tr := trace{lmtp: p.lmtp, utf8: p.utf8}
		if p.tls {
			tr.tls = &tls.ConnectionState{}
		}
		if p.auth {
			tr.user = "u"
		}
		if got := tr.protocol(); got != p.want {
			t.Errorf("protocol %+v = %s, want %s", p, got, p.want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"alice@example.test":       "alice@example.test",
		"Alice@EXAMPLE.test":       "Alice@example.test",
		"jörg@Bücher.example":      "jörg@bücher.example",
		"a.b+c@x-y.test":           "a.b+c@x-y.test",
		"a@[192.0.2.1]":            "a@[192.0.2.1]",
		"a@[ipv6:2001:DB8:0::1]":   "a@[IPv6:2001:db8::1]",
		"!#$%&'*+-/=?^_`{|}~@x.io": "!#$%&'*+-/=?^_`{|}~@x.io",
	}
	for in, want := range good {
		a, err := parseAddress(in)
		if err != nil || a.String() != want {
			t.Errorf("parseAddress(%q) = %q, %v; want %q", in, a, err, want)
		}
	}
	for _, in := range []string{"", "a", "@x", "a@", "a@b@c", "a b@x", "a\r\n@x", "a@x\r\n", ".a@x", "a.@x", "a..b@x", "a@x..y", "a@-x", "a@x_y",
		"a@[1.2.3]", "a@[IPv6:1.2.3.4]", "a@[::1]", "a(b)@x", "a<b@x", "\"a\"@x", "a@x.", strings.Repeat("a", 65) + "@x", "a@" + strings.Repeat("x.", 130) + "y",
		"a\x00@x", "\xff@x", "a@\u200bx", "a\u202e@x"} {
		if a, err := parseAddress(in); err == nil {
			t.Errorf("parseAddress(%q) = %q, want an error", in, a)
		}
	}
}

func TestNormalizer(t *testing.T) {
	tests := []struct {
		in, want string
		bare     int
		err      error
	}{
		{"a\r\nb\r\n", "a\r\nb\r\n", 0, nil},
		{"a\nb\n", "a\r\nb\r\n", 2, nil},
		{"a\rb\r", "a\r\nb\r\n", 2, nil},
		{"a\r\r\nb", "a\r\n\r\nb", 1, nil},
		{"\n.\n", "\r\n.\r\n", 2, nil},
		{"", "", 0, nil},
		{"ok\r\nbad\x00", "", 0, errNUL},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			n := newNormalizer(r)
			got, err := io.ReadAll(n)
			if !errors.Is(err, tt.err) || (tt.err == nil && (string(got) != tt.want || n.Bare() != tt.bare)) {
				t.Errorf("normalize(%q, oneByte=%v) = %q, %d, %v; want %q, %d, %v", tt.in, oneByte, got, n.Bare(), err, tt.want, tt.bare, tt.err)
			}
		}
	}
}

func TestSanitizeHelo(t *testing.T) {
	if got := sanitizeHelo(""); got != "unknown" {
		t.Errorf("empty: %q", got)
	}
	if got := sanitizeHelo(strings.Repeat("a", 400)); len(got) != maxHeloInHeader {
		t.Errorf("long: %d", len(got))
	}
	if got := sanitizeHelo("[IPv6:::1]"); got != "[IPv6:::1]" {
		t.Errorf("literal: %q", got)
	}
}
