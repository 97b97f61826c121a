// Package proxyproto reads the PROXY protocol header (versions 1 and 2,
// as HAProxy's "proxy-protocol.txt" specifies) that a TCP load balancer
// sends ahead of a client's connection to tell the client's address.
//
// A Listener wraps the listener of a mail service: a connection from a
// trusted address (the load balancer) must start with a valid header,
// read with a deadline and size limits, and its RemoteAddr and LocalAddr
// become those the header names, so that per-address limits, blocks,
// logs and trace headers see the real client. A connection from any
// other address keeps its own addresses, and is cut off if it starts
// with a PROXY header: that is a client trying to spoof its address.
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Command is the command of a header.
type Command int

// The commands.
const (
	// Proxy: the connection was relayed for the client the header names.
	Proxy Command = iota
	// Local: the balancer's own connection (a health check, v2 LOCAL or
	// v1 UNKNOWN); the connection's real addresses stand.
	Local
)

// Header is a parsed PROXY header.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Command is Proxy or Local.
	Command Command
	// Source is the client's address and port, Dest the address and
	// port it connected to; both invalid for Local.
	Source, Dest netip.AddrPort
}

// Limits of the protocol (proxy-protocol.txt §2.1 and §2.2).
const (
	// MaxV1Len is the longest v1 header, CRLF included (§2.1: 107).
	MaxV1Len = 107
	// v2HeaderLen is the fixed part of a v2 header.
	v2HeaderLen = 16
	// MaxV2Len bounds the variable part of a v2 header accepted (the
	// addresses and TLVs); §2.2 allows up to 65535, but no balancer
	// sends that much and the rest is only read to be discarded.
	MaxV2Len = 2048
)

// v2Sig is the signature that starts a v2 header (§2.2).
var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v1Prefix starts a v1 header (§2.1).
var v1Prefix = []byte("PROXY ")

// ErrNoHeader means the connection did not start with a PROXY header.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

// HeaderError is a malformed header.
type HeaderError struct {
	Version int
	Reason  string
}

// Error describes the problem.
func (e *HeaderError) Error() string {
	return fmt.Sprintf("proxyproto: invalid v%d header: %s", e.Version, e.Reason)
}

// ReadHeader reads a v1 or v2 header from r and nothing more.
func ReadHeader(r *bufio.Reader) (*Header, error) {
	// §2.2: the first 12 bytes tell the versions apart; v1 needs 6.
	b, err := r.Peek(len(v1Prefix))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHeader, err)
	}
	if bytes.Equal(b, v1Prefix) {
		return readV1(r)
	}
	if b, err = r.Peek(len(v2Sig)); err == nil && bytes.Equal(b, v2Sig) {
		return readV2(r)
	}
	return nil, ErrNoHeader
}

// readV1 reads a text header: "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n".
func readV1(r *bufio.Reader) (*Header, error) {
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, &HeaderError{1, "truncated: " + err.Error()}
		}
		line = append(line, c)
		if c == '\n' {
			break
		}
		if len(line) >= MaxV1Len {
			return nil, &HeaderError{1, "longer than 107 bytes"}
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return nil, &HeaderError{1, "line does not end with CRLF"}
	}
	f := strings.Split(s, " ")
	h := &Header{Version: 1}
	// §2.1: UNKNOWN: the receiver must ignore the rest of the line and
	// use the real connection's addresses.
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		h.Command = Local
		return h, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return nil, &HeaderError{1, fmt.Sprintf("want PROXY TCP4|TCP6 SRC DST SPORT DPORT, got %q", s)}
	}
	src, err1 := v1Addr(f[2], f[4], f[1] == "TCP4")
	dst, err2 := v1Addr(f[3], f[5], f[1] == "TCP4")
	if err := errors.Join(err1, err2); err != nil {
		return nil, &HeaderError{1, err.Error()}
	}
	h.Source, h.Dest = src, dst
	return h, nil
}

// v1Addr parses an address and port of a v1 header; the family must
// match the protocol and ports are decimal without leading zeros (§2.1).
func v1Addr(addr, port string, v4 bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || a.Is4() != v4 || a.Is4In6() {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// readV2 reads a binary header (§2.2).
func readV2(r *bufio.Reader) (*Header, error) {
	var fixed [v2HeaderLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, &HeaderError{2, "truncated: " + err.Error()}
	}
	verCmd, famProto := fixed[12], fixed[13]
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	// §2.2: the high 4 bits of byte 13 are the version, 2.
	if verCmd>>4 != 2 {
		return nil, &HeaderError{2, fmt.Sprintf("version %d", verCmd>>4)}
	}
	if n > MaxV2Len {
		return nil, &HeaderError{2, fmt.Sprintf("%d bytes of addresses and TLVs, over the limit of %d", n, MaxV2Len)}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, &HeaderError{2, "truncated: " + err.Error()}
	}
	h := &Header{Version: 2}
	switch verCmd & 0x0f {
	case 0x0:
		// §2.2 LOCAL: the receiver must use the real connection
		// endpoints and ignore the address block.
		h.Command = Local
		return h, nil
	case 0x1:
		h.Command = Proxy
	default:
		return nil, &HeaderError{2, fmt.Sprintf("command %#x", verCmd&0x0f)}
	}
	switch famProto {
	case 0x11: // TCP over IPv4: 4+4+2+2
		if n < 12 {
			return nil, &HeaderError{2, "IPv4 address block too short"}
		}
		src := netip.AddrFrom4([4]byte(body[0:4]))
		dst := netip.AddrFrom4([4]byte(body[4:8]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:10]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[10:12]))
	case 0x21: // TCP over IPv6: 16+16+2+2
		if n < 36 {
			return nil, &HeaderError{2, "IPv6 address block too short"}
		}
		src := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		dst := netip.AddrFrom16([16]byte(body[16:32])).Unmap()
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:34]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[34:36]))
	case 0x00:
		// §2.2 AF_UNSPEC with PROXY: unknown origin; use the real
		// endpoints, as for LOCAL.
		h.Command = Local
	default:
		return nil, &HeaderError{2, fmt.Sprintf("unsupported family/protocol %#x (only TCP over IPv4 and IPv6)", famProto)}
	}
	return h, nil
}

// MayBeHeader reports whether b, the first bytes a client sent, is the
// start of a PROXY header (or all of one): a prefix of "PROXY " or of the
// v2 signature, or data that starts with either.
func MayBeHeader(b []byte) bool {
	for _, sig := range [][]byte{v1Prefix, v2Sig} {
		n := min(len(b), len(sig))
		if n > 0 && bytes.Equal(b[:n], sig[:n]) {
			return true
		}
	}
	return false
}

// AppendV1 appends the v1 header for h (Command Proxy) to b; tests and
// clients use it.
func AppendV1(b []byte, h Header) []byte {
	proto := "TCP4"
	if h.Source.Addr().Is6() {
		proto = "TCP6"
	}
	return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", proto, h.Source.Addr(), h.Dest.Addr(), h.Source.Port(), h.Dest.Port())
}

// AppendV2 appends the v2 header for h to b.
func AppendV2(b []byte, h Header) []byte {
	b = append(b, v2Sig...)
	if h.Command == Local {
		return append(b, 0x20, 0x00, 0, 0)
	}
	if h.Source.Addr().Is4() {
		b = append(b, 0x21, 0x11, 0, 12)
		s, d := h.Source.Addr().As4(), h.Dest.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		b = append(b, 0x21, 0x21, 0, 36)
		s, d := h.Source.Addr().As16(), h.Dest.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Dest.Port())
}
