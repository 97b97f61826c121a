package server

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/tlsrpt"
)

// TestOutboundSecurityOptions: the [queue] keys mta_sts, dane, tls_rpt,
// starttls and tls_ca_file turn the queue's transport security on and off.
func TestOutboundSecurityOptions(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	cfg := testConfig(t)
	s := &Server{cfg: cfg}
	var err error
	if s.resolver, err = cfg.Resolver(); err != nil {
		t.Fatal(err)
	}
	opts := func() queue.Options {
		qo := queue.ConfigOptions(cfg, logger)
		s.outboundSecurity(cfg, logger, &qo)
		return qo
	}
	qo := opts()
	if qo.MTASTS == nil || qo.TLSReports == nil || !qo.DANE || qo.TLSRoots != nil {
		t.Fatalf("defaults: MTASTS %v TLSReports %v DANE %v roots %v", qo.MTASTS, qo.TLSReports, qo.DANE, qo.TLSRoots)
	}
	if qo2 := opts(); qo2.TLSReports != qo.TLSReports {
		t.Error("the results store is opened again")
	}
	ca := testutil.NewCert(t, "mx.example.test")
	pem, _ := ca.PEM(t)
	cfg.Queue.TLSCAFile = filepath.Join(cfg.DataDir, "ca.pem")
	os.WriteFile(cfg.Queue.TLSCAFile, pem, 0o600)
	qo = opts()
	if qo.TLSRoots == nil {
		t.Fatal("tls_ca_file not loaded")
	}
	if _, err := ca.Leaf.Verify(x509Opts(qo, "mx.example.test")); err != nil {
		t.Errorf("the extra CA is not trusted: %v", err)
	}
	// A file without certificates: the system's roots only.
	os.WriteFile(cfg.Queue.TLSCAFile, []byte("junk"), 0o600)
	if qo = opts(); qo.TLSRoots != nil || qo.MTASTS == nil {
		t.Errorf("junk CA file: roots %v MTASTS %v", qo.TLSRoots, qo.MTASTS)
	}
	cfg.Queue.MTASTS, cfg.Queue.TLSRPT = false, false
	if qo = opts(); qo.MTASTS != nil || qo.TLSReports != nil || !qo.DANE {
		t.Errorf("mta_sts and tls_rpt off: %v %v", qo.MTASTS, qo.TLSReports)
	}
	cfg.Queue.MTASTS, cfg.Queue.STARTTLS = true, false
	if qo = opts(); qo.MTASTS != nil || qo.DANE {
		t.Errorf("starttls off: MTASTS %v DANE %v", qo.MTASTS, qo.DANE)
	}
}

// TestTLSReportJob: the report job of a running server queues the report
// of a finished day to the rua address that the domain's _smtp._tls
// record gives (looked up through dns.server), and sends it once.
func TestTLSReportJob(t *testing.T) {
	ns := testutil.StartDNS(t, map[string]string{
		"remote.test": `_smtp._tls TXT "v=TLSRPTv1; rua=mailto:alice@example.test"` + "\n",
	})
	cfg := testConfig(t)
	cfg.DNS.Server = ns.Addr
	logger := slog.New(slog.DiscardHandler)
	srv, _, _ := startForReload(t, cfg, logger)
	yesterday := time.Now().Add(-24 * time.Hour)
	st, err := tlsrpt.OpenStore(cfg.TLSRPTDir(), func() time.Time { return yesterday }, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		st.Add(tlsrpt.Result{Policy: tlsrpt.PolicyDesc{Type: tlsrpt.PolicySTS, Domain: "remote.test"}})
	}
	st.Add(tlsrpt.Result{Policy: tlsrpt.PolicyDesc{Type: tlsrpt.PolicySTS, Domain: "remote.test"}, Failure: &tlsrpt.Failure{ResultType: tlsrpt.ResultCertificateExpired}})
	srv.sendTLSReports(context.Background(), cfg, logger)
	srv.sendTLSReports(context.Background(), cfg, logger) // nothing more
	var msgs []string
	testutil.WaitFor(t, 15*time.Second, "the report in alice's mailbox", func() bool {
		msgs = mailtest.StoreMessages(t, srv.store, "alice@example.test")
		return len(msgs) >= 1
	})
	time.Sleep(200 * time.Millisecond)
	if msgs = mailtest.StoreMessages(t, srv.store, "alice@example.test"); len(msgs) != 1 {
		t.Fatalf("%d reports", len(msgs))
	}
	m := msgs[0]
	for _, want := range []string{"TLS-Report-Domain: remote.test", "TLS-Report-Submitter: mail.example.test", "application/tlsrpt+gzip", `report-type="tlsrpt"`} {
		if !strings.Contains(m, want) {
			t.Errorf("no %q in\n%s", want, m)
		}
	}
}

func x509Opts(qo queue.Options, name string) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: qo.TLSRoots, DNSName: name}
}
