package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// SignedZone is a zone signed with DNSSEC by ldns-signzone (Debian's
// ldnsutils), with fresh keys.
type SignedZone struct {
	// Origin is the zone's name, without the final dot.
	Origin string
	// Text is the signed zone file, for StartDNSZoneFiles.
	Text string
	// DS is the DS record of the key-signing key, in zone-file syntax: a
	// validating resolver's trust anchor for the zone.
	DS string
}

// SignZone signs the zone origin holding records (as StartDNS takes them:
// a SOA and NS are added when missing) with an ECDSA P-256 KSK and ZSK
// made by ldns-keygen. The signatures are valid from an hour ago for four
// weeks. A missing ldns-keygen or ldns-signzone fails the test under
// CI=true and skips it elsewhere.
func SignZone(t testing.TB, origin, records string) SignedZone {
	t.Helper()
	keygen := NeedProgram(t, "ldns-keygen")
	signer := NeedProgram(t, "ldns-signzone")
	origin = strings.TrimSuffix(origin, ".")
	dir := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	ksk := run(keygen, "-a", "ECDSAP256SHA256", "-k", origin)
	zsk := run(keygen, "-a", "ECDSAP256SHA256", origin)
	zone := filepath.Join(dir, origin+".zone")
	if err := os.WriteFile(zone, []byte(ZoneFile(origin, records)), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	run(signer, "-o", origin,
		"-i", now.Add(-time.Hour).Format("20060102150405"),
		"-e", now.Add(28*24*time.Hour).Format("20060102150405"),
		"-f", zone+".signed", zone, ksk, zsk)
	signed, err := os.ReadFile(zone + ".signed")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := os.ReadFile(filepath.Join(dir, ksk+".ds"))
	if err != nil {
		t.Fatal(err)
	}
	return SignedZone{Origin: origin, Text: string(signed), DS: strings.TrimSpace(string(ds))}
}

// ValidatingResolver is a real DNSSEC-validating recursive resolver
// (NLnet Labs' Unbound, from Debian's unbound package) on a loopback port.
type ValidatingResolver struct {
	// Addr is the resolver's "127.0.0.1:port", UDP and TCP.
	Addr string
}

// StartUnbound starts Unbound on a loopback port, resolving each zone
// (origin → "127.0.0.1:port" of its authoritative server, e.g.
// DNSServer.Addr) through a stub-zone, and validating with DNSSEC the
// zones whose DS records are in anchors (SignedZone.DS). Names of zones
// without an anchor resolve as insecure (no AD bit); names outside every
// zone get SERVFAIL/REFUSED. Unbound stops when the test ends. A missing
// unbound fails the test under CI=true and skips it elsewhere.
func StartUnbound(t testing.TB, zones map[string]string, anchors ...string) *ValidatingResolver {
	t.Helper()
	unbound := NeedProgram(t, "unbound")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	addr := freeUDPTCPAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	interface: %s@%s
	port: %s
	access-control: 127.0.0.0/8 allow
	username: ""
	chroot: ""
	directory: %q
	pidfile: %q
	use-syslog: no
	logfile: ""
	verbosity: 1
	do-daemonize: no
	do-ip6: no
	do-not-query-localhost: no
	module-config: "validator iterator"
	num-threads: 1
	so-reuseport: no
	harden-dnssec-stripped: yes
	val-log-level: 2
	qname-minimisation: no
	minimal-responses: no
	cache-max-ttl: 1
	cache-max-negative-ttl: 1
`, host, port, port, dir, filepath.Join(dir, "unbound.pid"))
	origins := make([]string, 0, len(zones))
	for o := range zones {
		origins = append(origins, strings.TrimSuffix(o, "."))
	}
	sort.Strings(origins)
	tlds := map[string]bool{}
	for _, o := range origins {
		// Unbound serves RFC 6761 names (test., invalid.) itself by
		// default: let these zones through.
		labels := strings.Split(o, ".")
		tlds[labels[len(labels)-1]] = true
	}
	for tld := range tlds {
		fmt.Fprintf(&conf, "\tlocal-zone: %q nodefault\n", tld+".")
	}
	// There is no root anchor: the zones without one are insecure.
	confText := conf.String()
	for i, a := range anchors {
		f := filepath.Join(dir, fmt.Sprintf("anchor%d.ds", i))
		if err := os.WriteFile(f, []byte(a+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		confText += fmt.Sprintf("\ttrust-anchor-file: %q\n", f)
	}
	var b strings.Builder
	b.WriteString(confText)
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	for _, o := range origins {
		server := zones[o]
		if server == "" {
			server = zones[o+"."]
		}
		h, p, _ := net.SplitHostPort(server)
		fmt.Fprintf(&b, "stub-zone:\n\tname: %q\n\tstub-addr: %s@%s\n", o+".", h, p)
	}
	confFile := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(confFile, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if checker, err := exec.LookPath("unbound-checkconf"); err == nil {
		if out, err := exec.Command(checker, confFile).CombinedOutput(); err != nil {
			t.Fatalf("unbound-checkconf: %v\n%s\n%s", err, out, b.String())
		}
	}
	logs := &SyncBuffer{}
	cmd := exec.Command(unbound, "-d", "-c", confFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatalf("starting unbound: %v", err)
	}
	t.Cleanup(func() { p.Stop(t, 5*time.Second, logs) })
	if !p.Poll(10*time.Second, 50*time.Millisecond, func() bool { return respondsRD(addr) }) {
		t.Fatalf("unbound did not answer on %s\n%s\n%s", addr, logs.String(), b.String())
	}
	return &ValidatingResolver{Addr: addr}
}

// respondsRD reports whether a recursive server at addr answers a query
// (any answer: the server is up) for the root's NS with recursion
// desired.
func respondsRD(addr string) bool {
	c, err := net.DialTimeout("udp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	// id 0x4321, RD, one question: ". IN NS"
	if _, err := c.Write([]byte{0x43, 0x21, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1}); err != nil {
		return false
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return err == nil && n >= 12 && buf[0] == 0x43 && buf[1] == 0x21
}
