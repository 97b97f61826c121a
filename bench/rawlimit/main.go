// Command rawlimit measures the physical limit for POP3 download sessions
// on this machine: a trivial server with no protocol sends the same number
// of octets per session as a POP3 download session carries, over loopback,
// to a trivial client that reads them and closes; plain or TLS (full
// handshake per session, as bench/pop3load makes). Server and client run in
// this one process, on the same cores, as pop3load and the server do.
//
//	rawlimit -bytes 1452000 -concurrency 16 -duration 10s [-tls]
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	size := flag.Int64("bytes", 1452000, "octets per session")
	conc := flag.Int("concurrency", 16, "parallel sessions")
	dur := flag.Duration("duration", 10*time.Second, "run for this long")
	useTLS := flag.Bool("tls", false, "TLS (ECDSA P-256 certificate, full handshake per session)")
	label := flag.String("label", "", "free text copied into the result")
	flag.Parse()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	var srvCfg, cliCfg *tls.Config
	if *useTLS {
		srvCfg = &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
		cliCfg = &tls.Config{InsecureSkipVerify: true}
	}
	payload := make([]byte, 128<<10)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
		if i%80 == 79 {
			payload[i] = '\n'
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if srvCfg != nil {
					c = tls.Server(c, srvCfg)
				}
				for left := *size; left > 0; {
					n := min(left, int64(len(payload)))
					if _, err := c.Write(payload[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()

	addr := ln.Addr().String()
	deadline := time.Now().Add(*dur)
	var mu sync.Mutex
	var lat []time.Duration
	var total int64
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	for range *conc {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				var c net.Conn
				c, err := net.Dial("tcp", addr)
				if err == nil && cliCfg != nil {
					c = tls.Client(c, cliCfg)
				}
				var n int64
				if err == nil {
					n, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
					c.Close()
				}
				mu.Lock()
				if err != nil || n != *size {
					errs++
				} else {
					lat = append(lat, time.Since(t0))
					total += n
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"label": *label, "tls": *useTLS, "bytes_per_session": *size, "concurrency": *conc,
		"sessions": len(lat), "sessions_per_s": float64(len(lat)) / el,
		"mb_per_s": float64(total) / el / 1e6, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errs,
	})
}

// selfSigned makes an ECDSA P-256 certificate, as postino's self-signed one.
func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
