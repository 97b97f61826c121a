package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// touchAll counts one of everything, so that every vector has a child.
func touchAll(m *Metrics) {
	m.Connection("pop3")
	m.Login("pop3", ResultOK)
	m.Received("mx")
	m.Refused("mx", "550 5.1.1")
	m.Delivered("local")
	m.DeliveryAttempt(ResultDeferred)
	m.FetchRun(ResultOK)
	m.Block()
	m.StorageError("deliver")
	m.Expired(1)
	m.Vaulted(1)
	m.VaultPurged(1)
	m.Sweep(ResultOK)
	m.CheckTime("spf", StageMail, time.Millisecond)
}

// TestNilMetrics: every method is a no-op on nil, and a nil Metrics
// leaves a listener as it is.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	touchAll(m)
	m.WatchQueue(nil, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if m.CountingListener(l, "x") != l {
		t.Error("nil Metrics wrapped the listener")
	}
}

// TestCounters: the methods count what they say, under the names and
// labels the documentation gives, and only in their own registry.
func TestCounters(t *testing.T) {
	m := New()
	touchAll(m)
	m.Login("pop3", ResultOK)
	m.Expired(3)
	m.Expired(0)
	m.Expired(-2) // ignored
	if got := testutil.ToFloat64(m.logins.WithLabelValues("pop3", ResultOK)); got != 2 {
		t.Errorf("logins ok = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.expired); got != 4 {
		t.Errorf("expired = %v, want 4", got)
	}
	n, err := testutil.GatherAndCount(m.Registry(), "postino_messages_refused_total")
	if err != nil || n != 1 {
		t.Errorf("refused series = %d, %v", n, err)
	}
	// A second set of metrics is independent (no global registry).
	if got := testutil.ToFloat64(New().expired); got != 0 {
		t.Errorf("new Metrics starts at %v", got)
	}
}

// TestCheckTime: postino_check_seconds counts each observation under its
// check and stage, in the bucket its duration falls into.
func TestCheckTime(t *testing.T) {
	m := New()
	m.CheckTime("spf", StageMail, 300*time.Microsecond)
	m.CheckTime("spf", StageMail, 2*time.Second)
	m.CheckTime("dnsbl", StageConnect, 40*time.Millisecond)
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ check, stage string }
	got := map[key][]uint64{}
	for _, f := range families {
		if f.GetName() != "postino_check_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			var k key
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "check":
					k.check = l.GetValue()
				case "stage":
					k.stage = l.GetValue()
				}
			}
			h := mt.GetHistogram()
			var cum []uint64
			for _, b := range h.GetBucket() {
				cum = append(cum, b.GetCumulativeCount())
			}
			got[k] = append(cum, h.GetSampleCount())
		}
	}
	if len(got) != 2 {
		t.Fatalf("series = %v, want spf/mail and dnsbl/connect", got)
	}
	at := func(k key, le float64) uint64 {
		for i, b := range CheckBuckets {
			if b == le {
				return got[k][i]
			}
		}
		t.Fatalf("no bucket %v", le)
		return 0
	}
	spf := key{"spf", StageMail}
	if n := got[spf][len(CheckBuckets)]; n != 2 {
		t.Errorf("spf mail count = %d, want 2", n)
	}
	if at(spf, 0.00025) != 0 || at(spf, 0.0005) != 1 || at(spf, 1) != 1 || at(spf, 2.5) != 2 {
		t.Errorf("spf mail buckets = %v", got[spf])
	}
	bl := key{"dnsbl", StageConnect}
	if at(bl, 0.025) != 0 || at(bl, 0.05) != 1 {
		t.Errorf("dnsbl connect buckets = %v", got[bl])
	}
	if CheckBuckets[0] != 0.0001 || CheckBuckets[len(CheckBuckets)-1] != 5 {
		t.Errorf("buckets span %v .. %v, want 0.1 ms .. 5 s", CheckBuckets[0], CheckBuckets[len(CheckBuckets)-1])
	}
}

// TestQueueCollector: the queue gauges are computed at each scrape from
// the queue's answer, with the age from the injected clock; a queue that
// cannot be listed sets the error gauge and no stale value.
func TestQueueCollector(t *testing.T) {
	m := New()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entries, oldest := 3, now.Add(-90*time.Minute)
	var fail error
	m.WatchQueue(func(ctx context.Context) (int, time.Time, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("scrape asked the queue without a deadline")
		}
		return entries, oldest, fail
	}, func() time.Time { return now })
	want := `
# HELP postino_queue_messages Entries (a message and the recipients of one destination) in the outbound queue.
# TYPE postino_queue_messages gauge
postino_queue_messages 3
# HELP postino_queue_oldest_seconds Age of the oldest entry in the outbound queue (0 when empty).
# TYPE postino_queue_oldest_seconds gauge
postino_queue_oldest_seconds 5400
# HELP postino_queue_scrape_errors 1 when the outbound queue could not be listed at this scrape.
# TYPE postino_queue_scrape_errors gauge
postino_queue_scrape_errors 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "postino_queue_messages", "postino_queue_oldest_seconds", "postino_queue_scrape_errors"); err != nil {
		t.Error(err)
	}
	// An empty queue has no oldest entry: age 0, whatever oldest says.
	entries, oldest = 0, now.Add(-time.Hour)
	want = `
# HELP postino_queue_oldest_seconds Age of the oldest entry in the outbound queue (0 when empty).
# TYPE postino_queue_oldest_seconds gauge
postino_queue_oldest_seconds 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "postino_queue_oldest_seconds"); err != nil {
		t.Error(err)
	}
	fail = errors.New("disk gone")
	want = `
# HELP postino_queue_scrape_errors 1 when the outbound queue could not be listed at this scrape.
# TYPE postino_queue_scrape_errors gauge
postino_queue_scrape_errors 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "postino_queue_messages", "postino_queue_oldest_seconds", "postino_queue_scrape_errors"); err != nil {
		t.Error(err)
	}
}

// TestHandler: /metrics, /healthz and /readyz over a real loopback
// listener, the counting listener counting its own connections, a
// failing check turning /readyz into 503 with its reason, and hostile
// requests (other methods, other paths, a huge header) refused.
func TestHandler(t *testing.T) {
	m := New()
	var storeErr error
	h := m.Handler([]Check{
		{Name: "storage", Run: func(context.Context) error { return storeErr }},
		{Name: "users", Run: func(context.Context) error { return nil }},
	}, nil)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := m.CountingListener(raw, "admin")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, h, nil) }()
	base := "http://" + raw.Addr().String()
	get := func(method, path string, hdr map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		tr := &http.Transport{DisableKeepAlives: true}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := get("GET", "/healthz", nil); c != 200 || b != "ok\n" {
		t.Errorf("/healthz = %d %q", c, b)
	}
	if c, b := get("GET", "/readyz", nil); c != 200 || b != "ready\n" {
		t.Errorf("/readyz = %d %q", c, b)
	}
	storeErr = errors.New("mail folder unreachable")
	if c, b := get("GET", "/readyz", nil); c != 503 || b != "storage: mail folder unreachable\n" {
		t.Errorf("/readyz failing = %d %q", c, b)
	}
	if c, _ := get("DELETE", "/metrics", nil); c != http.StatusMethodNotAllowed {
		t.Errorf("DELETE /metrics = %d", c)
	}
	if c, _ := get("GET", "/../etc/passwd", nil); c != 404 && c != 301 {
		t.Errorf("GET /../etc/passwd = %d", c)
	}
	if c, _ := get("GET", "/metrics", map[string]string{"X-Big": strings.Repeat("a", 64<<10)}); c != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("huge header = %d, want 431", c)
	}
	c, body := get("GET", "/metrics", nil)
	if c != 200 {
		t.Fatalf("/metrics = %d", c)
	}
	// This is the 8th connection; the counter was read while serving it.
	if !strings.Contains(body, `postino_connections_total{listener="admin"} 8`) {
		t.Errorf("connections not counted:\n%s", grep(body, "postino_connections_total"))
	}
	if !strings.Contains(body, "go_goroutines ") || !strings.Contains(body, "process_") {
		t.Error("runtime and process collectors missing")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

func grep(text, s string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDashboard: the example Grafana dashboard is valid JSON, and every
// metric it queries exists in the registry.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("../../dist/grafana/postino.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	m := New()
	touchAll(m)
	m.WatchQueue(func(context.Context) (int, time.Time, error) { return 0, time.Time{}, nil }, time.Now)
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	name := regexp.MustCompile(`\b(?:postino|go|process)_[a-z_]+\b`)
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if s, ok := v.Query.(string); ok {
			exprs = append(exprs, s)
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			// A histogram's series are named after its family.
			if f := strings.TrimSuffix(n, "_bucket"); f != n && have[f] {
				n = f
			}
			used[n] = true
			if !have[n] {
				t.Errorf("dashboard queries %s, which postino does not export", n)
			}
		}
	}
	for n := range have {
		if strings.HasPrefix(n, "postino_") && n != "postino_queue_scrape_errors" && !used[n] {
			t.Errorf("metric %s is on no panel", n)
		}
	}
}
