package pop3

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
)

// LoginGuard is implemented by a Backend that limits password guessing.
// The server consults it for every way of logging in: USER/PASS and every
// AUTH mechanism, SCRAM-SHA-256 included, so that no mechanism escapes
// the count, the delays or a block.
//
// LoginAllowed begins an attempt; the server ends every attempt it let
// through with exactly one call of LoginFailed, LoginSucceeded or
// LoginAbandoned, on the same connection, before it begins the next one.
// A guard can so count the attempts in progress and refuse guesses sent
// in parallel over many connections before any of them has failed.
type LoginGuard interface {
	// LoginAllowed is called before any credentials from the connection
	// are checked. A non-nil error refuses the attempt and is the reply
	// (see Backend for how errors are answered); typically an *Error
	// with CodeLoginDelay for an address that failed too often or has
	// too many attempts in progress. Nil begins an attempt.
	LoginAllowed(ctx context.Context, conn *ConnInfo) error
	// LoginFailed ends an attempt as a failed login (wrong password,
	// unknown user, failed SCRAM proof, authorization identity refused).
	// It returns when the failure may be answered: it may hold the
	// answer back.
	LoginFailed(ctx context.Context, conn *ConnInfo, username string)
	// LoginSucceeded ends an attempt as a successful login of user.
	LoginSucceeded(ctx context.Context, conn *ConnInfo, user string)
	// LoginAbandoned ends an attempt that neither failed nor succeeded:
	// the client cancelled or went away, or the credentials could not be
	// checked (a temporary error).
	LoginAbandoned(ctx context.Context, conn *ConnInfo)
}

// loginAllowed asks the Backend's LoginGuard, if any, whether credentials
// may be checked now, and begins an attempt if so. An attempt already in
// progress on this connection is ended (abandoned) first.
func (s *session) loginAllowed() error {
	g, ok := s.cfg.Backend.(LoginGuard)
	if !ok {
		return nil
	}
	s.loginAbandoned()
	if err := g.LoginAllowed(s.ctx, s.connInfo()); err != nil {
		return err
	}
	s.loginPending = true
	return nil
}

// loginCheck asks the Backend's LoginGuard whether the address may log
// in now, without keeping an attempt in progress.
func (s *session) loginCheck() error {
	if err := s.loginAllowed(); err != nil {
		return err
	}
	s.loginAbandoned()
	return nil
}

// loginFailed reports a credential failure to the Backend's LoginGuard,
// ending the attempt in progress. It returns the guard's refusal when no
// attempt was in progress and the guard refuses to begin one.
func (s *session) loginFailed(username string) error {
	g, ok := s.cfg.Backend.(LoginGuard)
	if !ok {
		return nil
	}
	if !s.loginPending {
		if err := s.loginAllowed(); err != nil {
			return err
		}
	}
	s.loginPending = false
	g.LoginFailed(s.ctx, s.connInfo(), username)
	return nil
}

// loginSucceeded reports a successful login to the Backend's LoginGuard,
// ending the attempt in progress.
func (s *session) loginSucceeded(user string) {
	if g, ok := s.cfg.Backend.(LoginGuard); ok && s.loginPending {
		s.loginPending = false
		g.LoginSucceeded(s.ctx, s.connInfo(), user)
	}
}

// loginAbandoned ends the attempt in progress, if any, without counting
// it.
func (s *session) loginAbandoned() {
	if g, ok := s.cfg.Backend.(LoginGuard); ok && s.loginPending {
		s.loginPending = false
		g.LoginAbandoned(s.ctx, s.connInfo())
	}
}

// saslMechanism is the server side of one SASL exchange (RFC 4422).
// next receives the client's response (nil before the first one when the
// client sent no initial response) and returns a challenge to send, or
// done with the credentials to check.
type saslMechanism interface {
	next(response []byte) (challenge []byte, result *saslResult, err error)
}

// saslResult ends a SASL exchange: either credentials for the Backend to
// check, or (verified) a user the mechanism has authenticated itself.
type saslResult struct {
	username, password string
	user               string
	verified           bool
}

// mechanisms lists the SASL mechanisms offered on this connection.
// SCRAM never reveals the password, so it is offered on cleartext
// connections too; PLAIN and LOGIN follow the plaintext policy.
func (s *session) mechanisms() []string {
	var m []string
	if s.scramEnabled() {
		m = append(m, "SCRAM-SHA-256")
	}
	if s.plaintextAllowed() {
		m = append(m, "PLAIN", "LOGIN")
	}
	return m
}

func (s *session) scramEnabled() bool {
	_, ok := s.cfg.Backend.(SCRAMBackend)
	return ok && s.cfg.SCRAM
}

var errCancelled = &Error{Text: "Authentication cancelled."}

func (s *session) newMechanism(name string) saslMechanism {
	switch strings.ToUpper(name) {
	case "PLAIN":
		return &plainMech{}
	case "LOGIN":
		return &loginMech{}
	case "SCRAM-SHA-256":
		if s.scramEnabled() {
			return &scramMech{s: s}
		}
	}
	return nil
}

// cmdAUTH runs RFC 5034 AUTH. With no argument it lists the mechanisms,
// as many clients expect.
func (s *session) cmdAUTH(args []string) error {
	if len(args) == 0 {
		s.okf("Supported mechanisms follow.")
		for _, m := range s.mechanisms() {
			s.reply(m)
		}
		s.reply(".")
		return nil
	}
	mech := s.newMechanism(args[0])
	if mech == nil {
		return &Error{Text: "Unsupported authentication mechanism."}
	}
	if _, isSCRAM := mech.(*scramMech); !isSCRAM && !s.plaintextAllowed() {
		return errPlaintext
	}
	// A blocked address learns nothing, not even a SCRAM salt.
	if err := s.loginCheck(); err != nil {
		return s.authFailed("", err)
	}
	// An exchange that ends without an outcome (cancelled, malformed,
	// the client gone) ends its attempt without counting it.
	defer s.loginAbandoned()
	var resp []byte
	if len(args) == 2 {
		// RFC 5034 §4: an initial response; "=" stands for an empty one.
		if args[1] == "=" {
			resp = []byte{}
		} else {
			b, err := base64.StdEncoding.DecodeString(args[1])
			if err != nil {
				return &Error{Text: "Invalid base64 data in initial response."}
			}
			resp = b
		}
	}
	for {
		challenge, res, err := mech.next(resp)
		if err != nil {
			username := ""
			if res != nil {
				// The mechanism refused the credentials themselves
				// (a failed SCRAM proof, a foreign authorization
				// identity): a failed login like a wrong password.
				username = res.username
				if gerr := s.loginFailed(username); gerr != nil {
					err = gerr
				}
			}
			return s.authFailed(username, err)
		}
		if res != nil && res.verified {
			s.loginSucceeded(res.user)
			return s.openMaildrop(res.user)
		}
		if res != nil {
			return s.login(res.username, res.password)
		}
		// RFC 5034 §4: "+ " followed by the base64 challenge.
		s.reply("+ " + base64.StdEncoding.EncodeToString(challenge))
		line, err := s.readLine(DefaultMaxSASLLine)
		if err != nil {
			return errAbort
		}
		if line == "*" {
			// RFC 5034 §4: the client cancels the exchange.
			return errCancelled
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return &Error{Text: "Invalid base64 data in response."}
		}
		resp = b
	}
}

// plainMech is RFC 4616 PLAIN: authzid NUL authcid NUL password.
type plainMech struct{}

func (m *plainMech) next(resp []byte) ([]byte, *saslResult, error) {
	if resp == nil {
		return []byte{}, nil, nil
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return nil, nil, &Error{Code: CodeAuth, Text: "Malformed PLAIN response."}
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user {
		// Logging in as someone else is not supported.
		return nil, &saslResult{username: user}, &Error{Code: CodeAuth, Text: "Authorization identity must match the user name."}
	}
	return nil, &saslResult{username: user, password: pass}, nil
}

// loginMech is the LOGIN mechanism (draft-murchison-sasl-login): the user
// name and then the password, each prompted for.
type loginMech struct {
	user  string
	stage int
}

func (m *loginMech) next(resp []byte) ([]byte, *saslResult, error) {
	switch {
	case resp == nil && m.stage == 0:
		m.stage = 1
		return []byte("Username:"), nil, nil
	case m.stage <= 1:
		m.user = string(resp)
		m.stage = 2
		return []byte("Password:"), nil, nil
	case m.stage == 2:
		m.stage = 3
		return nil, &saslResult{username: m.user, password: string(resp)}, nil
	}
	return nil, nil, errors.New("unexpected LOGIN state")
}
