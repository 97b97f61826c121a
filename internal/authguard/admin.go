package authguard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"
)

// The admin socket lets "postino block" list and lift blocks in a running
// server. It is a unix socket in the data folder, mode 0600, created by the
// server once it runs as its final user, so only that user and root can
// use it. Each connection carries one request and one answer, each a line
// of JSON.

// AdminSocketName is the admin socket's file name in the data folder.
const AdminSocketName = "admin.sock"

// adminTimeout bounds one admin exchange.
const adminTimeout = 10 * time.Second

// maxAdminRequest bounds an admin request line.
const maxAdminRequest = 4096

// Admin operations.
const (
	opList = "list"
	opLift = "lift"
)

type adminRequest struct {
	Op   string `json:"op"`
	Name string `json:"name,omitempty"`
}

type adminEntry struct {
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	Failures int       `json:"failures"`
	Blocked  bool      `json:"blocked"`
	Until    time.Time `json:"until"`
}

type adminResponse struct {
	Entries  []adminEntry `json:"entries,omitempty"`
	Lifted   *adminEntry  `json:"lifted,omitempty"`
	Error    string       `json:"error,omitempty"`
	NotFound bool         `json:"not_found,omitempty"`
}

func toAdmin(e Entry) adminEntry {
	return adminEntry{e.Kind, e.Name, e.Failures, e.Blocked, e.Until}
}

func fromAdmin(e adminEntry) Entry {
	return Entry{e.Kind, e.Name, e.Failures, e.Blocked, e.Until}
}

// ErrNotRunning is returned by the admin client when no server answers on
// the socket.
var ErrNotRunning = errors.New("postino serve is not running")

// ListenAdmin opens the admin socket at path with mode 0600. A socket file
// left by a server that is gone is replaced; one a running server answers
// on is not.
func ListenAdmin(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another server is answering on it", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// The data folder is 0700 already; the socket is closed to others too.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return l, nil
}

// ServeAdmin answers admin requests on l until l is closed or ctx ends.
// Lifts are logged, with the user of the connection when known.
func (g *Guard) ServeAdmin(ctx context.Context, l net.Listener, logger *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go g.serveAdminConn(c, logger)
	}
}

func (g *Guard) serveAdminConn(c net.Conn, logger *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(adminTimeout))
	line, err := bufio.NewReader(io.LimitReader(c, maxAdminRequest)).ReadBytes('\n')
	var resp adminResponse
	var req adminRequest
	switch {
	case err != nil:
		resp.Error = "request not read: " + err.Error()
	case json.Unmarshal(line, &req) != nil:
		resp.Error = "malformed request"
	case req.Op == opList:
		resp.Entries = []adminEntry{}
		for _, e := range g.Blocks() {
			resp.Entries = append(resp.Entries, toAdmin(e))
		}
	case req.Op == opLift:
		e, err := g.Lift(req.Name)
		switch {
		case err != nil:
			resp.Error, resp.NotFound = err.Error(), errors.Is(err, ErrNotFound)
		default:
			a := toAdmin(e)
			resp.Lifted = &a
			if logger != nil {
				logger.Info("login failures forgotten by the administrator", "kind", e.Kind, "name", e.Name, "failures", e.Failures, "was_blocked", e.Blocked)
			}
		}
	default:
		resp.Error = fmt.Sprintf("unknown operation %q", req.Op)
	}
	json.NewEncoder(c).Encode(&resp)
}

// adminCall sends one request to the server at path and reads its answer.
func adminCall(ctx context.Context, path string, req adminRequest) (*adminResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no answer on %s)", ErrNotRunning, path)
		}
		return nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(adminTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)
	if err := json.NewEncoder(c).Encode(&req); err != nil {
		return nil, err
	}
	var resp adminResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("reading the server's answer: %w", err)
	}
	return &resp, nil
}

// AdminList asks the server whose admin socket is path for its Blocks.
func AdminList(ctx context.Context, path string) ([]Entry, error) {
	resp, err := adminCall(ctx, path, adminRequest{Op: opList})
	if err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	var out []Entry
	for _, e := range resp.Entries {
		out = append(out, fromAdmin(e))
	}
	return out, nil
}

// AdminLift asks the server whose admin socket is path to Lift name. An
// unknown name is ErrNotFound.
func AdminLift(ctx context.Context, path, name string) (Entry, error) {
	resp, err := adminCall(ctx, path, adminRequest{Op: opLift, Name: name})
	if err != nil {
		return Entry{}, err
	}
	switch {
	case resp.NotFound:
		return Entry{}, ErrNotFound
	case resp.Error != "":
		return Entry{}, errors.New(resp.Error)
	case resp.Lifted == nil:
		return Entry{}, errors.New("the server answered nothing")
	}
	return fromAdmin(*resp.Lifted), nil
}
