package pop3

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
)

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
	_, ok := s.srv.Backend.(SCRAMBackend)
	return ok && s.srv.SCRAM
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
				username = res.username
			}
			return s.authFailed(username, err)
		}
		if res != nil && res.verified {
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
