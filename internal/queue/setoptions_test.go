package queue

import (
	"errors"
	"testing"

	"github.com/postino-mail/postino/internal/envelope"
)

// TestSetOptionsRoute: a route given by SetOptions (a reload adding a
// queue.routes entry) takes the next delivery to the route's server
// instead of the MX; an invalid set is refused and the old one stays.
func TestSetOptionsRoute(t *testing.T) {
	e := newEnv(t, nil)
	mx := newServer(t, srvConfig{})
	routed := newServer(t, srvConfig{})
	e.route("remote.test", mx)
	e.net.host("relay.test", "127.0.0.50", routed)

	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("before"))
	e.runOnce()
	if len(mx.messages()) != 1 || len(routed.messages()) != 0 {
		t.Fatalf("before: MX got %d, route got %d", len(mx.messages()), len(routed.messages()))
	}

	bad := e.opts
	bad.MaxConcurrent = 0
	var oe *OptionError
	if err := e.q.SetOptions(bad); !errors.As(err, &oe) || oe.Field != "MaxConcurrent" {
		t.Fatalf("SetOptions with MaxConcurrent 0 = %v, want an OptionError", err)
	}

	next := e.opts
	next.Routes = map[string]string{"remote.test": "relay.test:25"}
	if err := e.q.SetOptions(next); err != nil {
		t.Fatal(err)
	}
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("after"))
	e.runOnce()
	if len(mx.messages()) != 1 || len(routed.messages()) != 1 {
		t.Fatalf("after: MX got %d, route got %d", len(mx.messages()), len(routed.messages()))
	}
}
