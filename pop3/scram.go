package pop3

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SCRAMCredentials are the stored secrets of RFC 5802 §3 for one user:
// what a server needs to run SCRAM-SHA-256 without knowing the password.
type SCRAMCredentials struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// SCRAMBackend is implemented by a Backend that can offer the
// SCRAM-SHA-256 mechanism (RFC 7677). The server offers it only when
// Server.SCRAM is set.
type SCRAMBackend interface {
	// SCRAMCredentials returns the user's maildrop name and SCRAM
	// secrets. For an unknown user, or one whose stored password is not a
	// SCRAM one, it returns ErrAuthFailed; the server then runs the
	// exchange to the end with made-up secrets, so that the client cannot
	// tell the cases apart.
	SCRAMCredentials(ctx context.Context, conn *ConnInfo, username string) (user string, cred SCRAMCredentials, err error)
}

// scramMech is the server side of SCRAM-SHA-256 (RFC 5802, RFC 7677)
// without channel binding (SCRAM-SHA-256-PLUS is not offered).
type scramMech struct {
	s     *session
	stage int

	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string
	username        string
	user            string
	cred            SCRAMCredentials
	known           bool
	authMessage     string
}

var errSCRAMFailed = &Error{Code: CodeAuth, Text: "Authentication failed."}

func scramMalformed(text string) error {
	return &Error{Code: CodeAuth, Text: "Malformed SCRAM message: " + text + "."}
}

func (m *scramMech) next(resp []byte) ([]byte, *saslResult, error) {
	switch m.stage {
	case 0:
		if resp == nil {
			// No initial response: an empty challenge asks for it.
			m.stage = 1
			return []byte{}, nil, nil
		}
		fallthrough
	case 1:
		m.stage = 2
		return m.clientFirst(string(resp))
	case 2:
		m.stage = 3
		return m.clientFinal(string(resp))
	case 3:
		// RFC 5034 §4: the client answers the server-final message with
		// an empty response; only then does the exchange succeed.
		if len(resp) != 0 {
			return nil, nil, scramMalformed("expected an empty response")
		}
		return nil, &saslResult{username: m.username, user: m.user, verified: true}, nil
	}
	return nil, nil, errors.New("unexpected SCRAM state")
}

// clientFirst parses "gs2-header client-first-bare" (RFC 5802 §7).
func (m *scramMech) clientFirst(msg string) ([]byte, *saslResult, error) {
	parts := strings.SplitN(msg, ",", 3)
	if len(parts) != 3 {
		return nil, nil, scramMalformed("client-first-message")
	}
	switch {
	case parts[0] == "n" || parts[0] == "y":
	case strings.HasPrefix(parts[0], "p="):
		return nil, nil, &Error{Code: CodeAuth, Text: "Channel binding is not supported."}
	default:
		return nil, nil, scramMalformed("gs2 header")
	}
	if parts[1] != "" {
		authz := strings.TrimPrefix(parts[1], "a=")
		if authz == parts[1] {
			return nil, nil, scramMalformed("authzid")
		}
		defer func() {
			if m.username != "" && decodeSaslName(authz) != m.username {
				m.known = false // logging in as another user is not supported
			}
		}()
	}
	m.gs2Header = parts[0] + "," + parts[1] + ","
	m.clientFirstBare = parts[2]
	attrs := strings.Split(parts[2], ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, nil, scramMalformed("client-first-message-bare")
	}
	m.username = decodeSaslName(attrs[0][2:])
	cnonce := attrs[1][2:]
	if m.username == "" || cnonce == "" || strings.ContainsRune(cnonce, ',') {
		return nil, nil, scramMalformed("user name or nonce")
	}
	be := m.s.cfg.Backend.(SCRAMBackend)
	user, cred, err := be.SCRAMCredentials(m.s.ctx, m.s.connInfo(), m.username)
	switch {
	case err == nil && cred.Iterations > 0 && len(cred.Salt) > 0:
		m.user, m.cred, m.known = user, cred, true
	case err == nil || errors.Is(err, ErrAuthFailed):
		m.cred = fakeCredentials(m.username)
	default:
		return nil, nil, err
	}
	snonce := make([]byte, 18)
	rand.Read(snonce)
	m.nonce = cnonce + base64.RawStdEncoding.EncodeToString(snonce)
	m.serverFirst = "r=" + m.nonce + ",s=" + base64.StdEncoding.EncodeToString(m.cred.Salt) + ",i=" + strconv.Itoa(m.cred.Iterations)
	return []byte(m.serverFirst), nil, nil
}

// clientFinal checks the proof (RFC 5802 §3) and answers with the server
// signature.
func (m *scramMech) clientFinal(msg string) ([]byte, *saslResult, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, nil, scramMalformed("client-final-message")
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || attrs[0] != "c="+base64.StdEncoding.EncodeToString([]byte(m.gs2Header)) {
		return nil, nil, scramMalformed("channel binding")
	}
	if attrs[1] != "r="+m.nonce {
		return nil, nil, scramMalformed("nonce")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return nil, nil, scramMalformed("proof")
	}
	// The address may have been blocked since the exchange began (by
	// guesses on other connections): the proof is not even checked.
	if err := m.s.loginAllowed(); err != nil {
		return nil, nil, err
	}
	m.authMessage = m.clientFirstBare + "," + m.serverFirst + "," + withoutProof
	sig := hmacSHA256(m.cred.StoredKey, m.authMessage)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	h := sha256.Sum256(clientKey)
	if !m.known {
		// The same answer as a wrong proof; the cause is for the log.
		return nil, &saslResult{username: m.username}, fmt.Errorf("%w (unknown user or no SCRAM credentials)", errSCRAMFailed)
	}
	if subtle.ConstantTimeCompare(h[:], m.cred.StoredKey) != 1 {
		return nil, &saslResult{username: m.username}, fmt.Errorf("%w (wrong password)", errSCRAMFailed)
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacSHA256(m.cred.ServerKey, m.authMessage))), nil, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// decodeSaslName undoes RFC 5802 §5.1 escaping ("=2C" ",", "=3D" "=").
func decodeSaslName(s string) string {
	return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(s)
}

var fakeKey = func() []byte { b := make([]byte, 32); rand.Read(b); return b }()

// fakeCredentials returns stable made-up secrets for a user without SCRAM
// credentials, so the exchange looks the same as for a real user.
func fakeCredentials(username string) SCRAMCredentials {
	salt := hmacSHA256(fakeKey, "salt:"+username)[:16]
	return SCRAMCredentials{Iterations: 4096, Salt: salt,
		StoredKey: hmacSHA256(fakeKey, "stored:"+username), ServerKey: hmacSHA256(fakeKey, "server:"+username)}
}
