package testutil

import (
	"bytes"
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

// DNSServer is a real authoritative DNS server (NLnet Labs' NSD, from
// Debian's nsd package) on a loopback port, serving the test's zones.
// Point postino's dns.server (or a resolver.Resolver) at Addr: NSD
// answers authoritatively without recursion, which is all a resolver
// needs when every name of the test lives in these zones.
type DNSServer struct {
	// Addr is the server's "127.0.0.1:port", UDP and TCP.
	Addr string
	dir  string
	proc *Process
	logs *SyncBuffer
}

// StartDNS starts NSD serving zones: each key is a zone's origin
// ("example.test"), each value the zone's records in zone-file syntax,
// relative to the origin ("@ MX 10 mx", "mx A 127.0.0.1"). A SOA (with a
// 60 s negative TTL) and an NS record are added when the text has none.
// NSD stops when the test ends. A missing nsd fails the test under
// CI=true and skips it elsewhere.
func StartDNS(t testing.TB, zones map[string]string) *DNSServer {
	t.Helper()
	files := make(map[string]string, len(zones))
	for origin, records := range zones {
		origin = strings.TrimSuffix(origin, ".")
		files[origin] = ZoneFile(origin, records)
	}
	return StartDNSZoneFiles(t, files)
}

// StartDNSZoneFiles is StartDNS for complete zone files (a signed zone
// from SignZone, for instance): each value is served as it is.
func StartDNSZoneFiles(t testing.TB, files map[string]string) *DNSServer {
	t.Helper()
	zones := make(map[string]string, len(files))
	for o, text := range files {
		zones[strings.TrimSuffix(o, ".")] = text
	}
	nsd := NeedProgram(t, "nsd")
	dir := t.TempDir()
	// NSD drops privileges to its user "nsd" when started as root; the
	// folder must then be readable by it.
	os.Chmod(dir, 0o755)
	addr := freeUDPTCPAddr(t)
	host, port, _ := net.SplitHostPort(addr)

	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	ip-address: %s
	port: %s
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	server-count: 1
	verbosity: 1
	hide-version: yes
	minimal-responses: no
remote-control:
	control-enable: no
`, host, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir,
		filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"))
	origins := make([]string, 0, len(zones))
	for o := range zones {
		origins = append(origins, o)
	}
	sort.Strings(origins)
	for _, origin := range origins {
		origin = strings.TrimSuffix(origin, ".")
		file := filepath.Join(dir, origin+".zone")
		if err := os.WriteFile(file, []byte(zones[origin]), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone:\n\tname: %q\n\tzonefile: %q\n", origin, file)
	}
	confFile := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nsd-checkconf", confFile).CombinedOutput(); err != nil {
		t.Fatalf("nsd-checkconf: %v\n%s\n%s", err, out, conf.String())
	}
	logs := &SyncBuffer{}
	cmd := exec.Command(nsd, "-d", "-c", confFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatalf("starting nsd: %v", err)
	}
	s := &DNSServer{Addr: addr, dir: dir, proc: p, logs: logs}
	t.Cleanup(func() { p.Stop(t, 5*time.Second, logs) })
	// Ready once it answers the first zone's SOA.
	if len(origins) > 0 {
		ok := p.Poll(10*time.Second, 20*time.Millisecond, func() bool { return s.answers(origins[0]) })
		if !ok {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			t.Fatalf("nsd did not answer on %s\n%s\n%s", addr, logs.String(), log)
		}
	}
	return s
}

// ZoneFile returns a zone file for origin holding records, with a SOA
// and NS record added when records has none.
func ZoneFile(origin, records string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 300\n", strings.TrimSuffix(origin, "."))
	if !hasType(records, "SOA") {
		b.WriteString("@ IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 60\n")
	}
	if !hasType(records, "NS") {
		b.WriteString("@ IN NS ns.invalid.\n")
	}
	b.WriteString(records)
	if !strings.HasSuffix(records, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

func hasType(records, typ string) bool {
	for _, line := range strings.Split(records, "\n") {
		for _, f := range strings.Fields(line) {
			if f == typ {
				return true
			}
			if strings.HasPrefix(f, ";") {
				break
			}
		}
	}
	return false
}

// answers reports whether the server answers a SOA query for origin
// (a minimal DNS query over UDP, so that testutil needs no DNS library).
func (s *DNSServer) answers(origin string) bool {
	c, err := net.DialTimeout("udp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	var q bytes.Buffer
	q.Write([]byte{0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	for _, label := range strings.Split(strings.TrimSuffix(origin, "."), ".") {
		q.WriteByte(byte(len(label)))
		q.WriteString(label)
	}
	q.Write([]byte{0, 0, 6, 0, 1}) // SOA, IN
	c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write(q.Bytes()); err != nil {
		return false
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	// An answer to our id with RCODE 0 and at least one answer record.
	return err == nil && n >= 12 && buf[0] == 0x12 && buf[1] == 0x34 && buf[3]&0x0f == 0 && (buf[6] != 0 || buf[7] != 0)
}

// freeUDPTCPAddr returns a loopback address whose port is free for both
// UDP and TCP.
func freeUDPTCPAddr(t testing.TB) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// SplitZones sorts the record lines of a zone-file text (such as the
// output of "postino dns": absolute owner names, ";" comments) into the
// zones of origins, for StartDNS. A record in none of them fails the test.
func SplitZones(t testing.TB, text string, origins ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || strings.HasPrefix(l, ";") {
			continue
		}
		owner := strings.Fields(l)[0]
		found := false
		for _, o := range origins {
			if strings.HasSuffix(owner, "."+o+".") || owner == o+"." {
				out[o] += l + "\n"
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("record %q is in none of %q", l, origins)
		}
	}
	return out
}
