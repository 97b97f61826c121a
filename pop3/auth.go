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
	next(response []byte) (challenge []byte, done bool, username, password string, err error)
}

// mechanisms lists the SASL mechanisms offered on this connection.
func (s *session) mechanisms() []string {
	return []string{"PLAIN", "LOGIN"}
}

var errCancelled = &Error{Text: "Authentication cancelled."}

func (s *session) newMechanism(name string) saslMechanism {
	switch strings.ToUpper(name) {
	case "PLAIN":
		return &plainMech{}
	case "LOGIN":
		return &loginMech{}
	}
	return nil
}

// cmdAUTH runs RFC 5034 AUTH. With no argument it lists the mechanisms,
// as many clients expect.
func (s *session) cmdAUTH(args []string) error {
	if len(args) == 0 {
		if !s.plaintextAllowed() {
			s.okf("No mechanisms available without TLS.")
			s.reply(".")
			return nil
		}
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
	if !s.plaintextAllowed() {
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
		challenge, done, username, password, err := mech.next(resp)
		if err != nil {
			return s.authFailed(username, err)
		}
		if done {
			return s.login(username, password)
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

func (m *plainMech) next(resp []byte) ([]byte, bool, string, string, error) {
	if resp == nil {
		return []byte{}, false, "", "", nil
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return nil, false, "", "", &Error{Code: CodeAuth, Text: "Malformed PLAIN response."}
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user {
		// Logging in as someone else is not supported.
		return nil, false, user, "", &Error{Code: CodeAuth, Text: "Authorization identity must match the user name."}
	}
	return nil, true, user, pass, nil
}

// loginMech is the LOGIN mechanism (draft-murchison-sasl-login): the user
// name and then the password, each prompted for.
type loginMech struct {
	user  string
	stage int
}

func (m *loginMech) next(resp []byte) ([]byte, bool, string, string, error) {
	switch {
	case resp == nil && m.stage == 0:
		m.stage = 1
		return []byte("Username:"), false, "", "", nil
	case m.stage <= 1:
		m.user = string(resp)
		m.stage = 2
		return []byte("Password:"), false, "", "", nil
	case m.stage == 2:
		m.stage = 3
		return nil, true, m.user, string(resp), nil
	}
	return nil, false, "", "", errors.New("unexpected LOGIN state")
}
