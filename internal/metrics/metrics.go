// Package metrics holds postino's Prometheus metrics: one Registry (never
// the global default one) with every collector, passed to the components
// through their options, and the HTTP handler of the admin listener that
// serves it with the /healthz and /readyz probes.
//
// Every method of *Metrics is safe on a nil receiver, where it does
// nothing, so a component built without metrics (tests, the command-line
// tools) needs no special case. Label values are bounded: listener
// names, protocols, roles, results and SMTP status codes, never user
// names or addresses.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "postino"

// Results of logins, fetch runs and delivery attempts, as label values.
const (
	ResultOK        = "ok"
	ResultFailed    = "failed"
	ResultBlocked   = "blocked"
	ResultDelivered = "delivered"
	ResultDeferred  = "deferred"
	ResultBounced   = "bounced"
	ResultError     = "error"
)

// Metrics is the set of postino's collectors over its own Registry. The
// zero value is not usable; call New. A nil *Metrics counts nothing.
type Metrics struct {
	reg *prometheus.Registry

	connections   *prometheus.CounterVec
	logins        *prometheus.CounterVec
	received      *prometheus.CounterVec
	refused       *prometheus.CounterVec
	delivered     *prometheus.CounterVec
	attempts      *prometheus.CounterVec
	fetchRuns     *prometheus.CounterVec
	blocks        prometheus.Counter
	storageErrors *prometheus.CounterVec
	expired       prometheus.Counter
	vaulted       prometheus.Counter
	vaultPurged   prometheus.Counter
	sweeps        *prometheus.CounterVec
	checkSeconds  *prometheus.HistogramVec
}

// New returns the metrics over a new Registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	single := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		reg:           reg,
		connections:   counter("connections_total", "Connections accepted, by listener (pop3, pop3s, smtp, submission, submissions, lmtp).", "listener"),
		logins:        counter("logins_total", "Login attempts, by protocol (pop3, smtp) and result (ok, failed, blocked).", "protocol", "result"),
		received:      counter("messages_received_total", "Messages accepted over SMTP or LMTP, by role (mx, submission, lmtp).", "role"),
		refused:       counter("messages_refused_total", "SMTP commands and messages refused, by role and reply code (for example \"550 5.1.1\").", "role", "code"),
		delivered:     counter("messages_delivered_total", "Message copies delivered, by destination (local: stored in a mailbox; remote: accepted by another server).", "destination"),
		attempts:      counter("delivery_attempts_total", "Outcomes of outbound delivery attempts per recipient, by result (delivered, deferred, bounced).", "result"),
		fetchRuns:     counter("fetch_runs_total", "Runs of 'postino fetch' over one account, by result (ok, error).", "result"),
		blocks:        single("login_blocks_total", "Addresses blocked after too many failed logins."),
		storageErrors: counter("storage_errors_total", "Mail store operations that failed, by operation (deliver, commit, retention).", "op"),
		expired:       single("retention_expired_total", "Downloaded messages removed by the retention sweep (pop3.expire)."),
		vaulted:       single("vault_moved_total", "Messages deleted over POP3 or by the retention sweep moved into the deleted-mail vault (pop3.vault_days)."),
		vaultPurged:   single("vault_purged_total", "Messages removed from the deleted-mail vault once older than pop3.vault_days."),
		sweeps:        counter("retention_sweeps_total", "Mailboxes visited by the retention sweep, by result (ok, locked: skipped during a session, error).", "result"),
	}
	m.checkSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "check_seconds",
		Help:    "Time an inbound check took at one stage of an SMTP session, by check (its name) and stage (connect, mail, rcpt, data).",
		Buckets: CheckBuckets,
	}, []string{"check", "stage"})
	reg.MustRegister(m.checkSeconds)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry holding every collector.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Connection counts a connection accepted by the named listener.
func (m *Metrics) Connection(listener string) {
	if m != nil {
		m.connections.WithLabelValues(listener).Inc()
	}
}

// Login counts a login attempt of protocol ("pop3", "smtp") with its
// result (ResultOK, ResultFailed, ResultBlocked).
func (m *Metrics) Login(protocol, result string) {
	if m != nil {
		m.logins.WithLabelValues(protocol, result).Inc()
	}
}

// Received counts a message accepted by an SMTP server of the role.
func (m *Metrics) Received(role string) {
	if m != nil {
		m.received.WithLabelValues(role).Inc()
	}
}

// Refused counts a refusal by an SMTP server of the role with its reply
// code ("550 5.1.1").
func (m *Metrics) Refused(role, code string) {
	if m != nil {
		m.refused.WithLabelValues(role, code).Inc()
	}
}

// Delivered counts a copy delivered to destination ("local", "remote").
func (m *Metrics) Delivered(destination string) {
	if m != nil {
		m.delivered.WithLabelValues(destination).Inc()
	}
}

// DeliveryAttempt counts the outcome of an outbound attempt for one
// recipient (ResultDelivered, ResultDeferred, ResultBounced).
func (m *Metrics) DeliveryAttempt(result string) {
	if m != nil {
		m.attempts.WithLabelValues(result).Inc()
	}
}

// FetchRun counts a fetch run over one account (ResultOK, ResultError).
func (m *Metrics) FetchRun(result string) {
	if m != nil {
		m.fetchRuns.WithLabelValues(result).Inc()
	}
}

// Block counts an address blocked after too many failed logins.
func (m *Metrics) Block() {
	if m != nil {
		m.blocks.Inc()
	}
}

// StorageError counts a failed mail store operation ("deliver",
// "commit", "retention").
func (m *Metrics) StorageError(op string) {
	if m != nil {
		m.storageErrors.WithLabelValues(op).Inc()
	}
}

// Expired counts n messages removed by the retention sweep.
func (m *Metrics) Expired(n int) {
	if m != nil && n > 0 {
		m.expired.Add(float64(n))
	}
}

// Vaulted counts n messages moved into the deleted-mail vault.
func (m *Metrics) Vaulted(n int) {
	if m != nil && n > 0 {
		m.vaulted.Add(float64(n))
	}
}

// VaultPurged counts n messages removed from the vault for good.
func (m *Metrics) VaultPurged(n int) {
	if m != nil && n > 0 {
		m.vaultPurged.Add(float64(n))
	}
}

// Sweep counts a mailbox visited by the retention sweep with its result
// (ResultOK, "locked", ResultError).
func (m *Metrics) Sweep(result string) {
	if m != nil {
		m.sweeps.WithLabelValues(result).Inc()
	}
}

// CheckBuckets are the upper bounds of postino_check_seconds: 0.1 ms to
// 5 s, about four per decade, fine enough to read a p50 and a p99 from.
var CheckBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.00075,
	0.001, 0.0025, 0.005, 0.0075,
	0.01, 0.025, 0.05, 0.075,
	0.1, 0.25, 0.5, 0.75,
	1, 2.5, 5,
}

// Check stages, as label values of postino_check_seconds.
const (
	StageConnect = "connect"
	StageMail    = "mail"
	StageRcpt    = "rcpt"
	StageData    = "data"
)

// CheckTime records that the inbound check named check took d at stage
// (StageConnect, StageMail, StageRcpt, StageData). Check names are the
// configured checks' names, a bounded set.
func (m *Metrics) CheckTime(check, stage string, d time.Duration) {
	if m != nil {
		m.checkSeconds.WithLabelValues(check, stage).Observe(d.Seconds())
	}
}

// QueueStats reports the outbound queue: its number of entries and the
// arrival time of the oldest (zero when empty).
type QueueStats func(ctx context.Context) (entries int, oldest time.Time, err error)

// queueScrapeTimeout bounds how long a scrape waits for the queue.
const queueScrapeTimeout = 5 * time.Second

// WatchQueue registers the gauges postino_queue_messages and
// postino_queue_oldest_seconds, computed by stats at each scrape (so they
// are never stale), with now telling the time.
func (m *Metrics) WatchQueue(stats QueueStats, now func() time.Time) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&queueCollector{stats: stats, now: now})
}

var (
	queueSizeDesc   = prometheus.NewDesc(Namespace+"_queue_messages", "Entries (a message and the recipients of one destination) in the outbound queue.", nil, nil)
	queueOldestDesc = prometheus.NewDesc(Namespace+"_queue_oldest_seconds", "Age of the oldest entry in the outbound queue (0 when empty).", nil, nil)
	queueErrorDesc  = prometheus.NewDesc(Namespace+"_queue_scrape_errors", "1 when the outbound queue could not be listed at this scrape.", nil, nil)
)

// queueCollector asks the queue at each scrape.
type queueCollector struct {
	stats QueueStats
	now   func() time.Time
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueSizeDesc
	ch <- queueOldestDesc
	ch <- queueErrorDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueScrapeTimeout)
	defer cancel()
	n, oldest, err := c.stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(queueErrorDesc, prometheus.GaugeValue, 1)
		return
	}
	age := 0.0
	if n > 0 && !oldest.IsZero() {
		age = max(c.now().Sub(oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(queueSizeDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(queueErrorDesc, prometheus.GaugeValue, 0)
}
