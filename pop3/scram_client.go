package pop3

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
)

// NewSCRAMClient returns a SCRAM-SHA-256 (RFC 7677) SASL client for
// Client.Auth, without channel binding. It checks the server's signature,
// so a server that does not know the password cannot pass itself off.
func NewSCRAMClient(username, password string) sasl.Client {
	nonce := make([]byte, 18)
	rand.Read(nonce)
	return &scramClient{user: username, pass: password, nonce: base64.RawStdEncoding.EncodeToString(nonce)}
}

type scramClient struct {
	user, pass, nonce string
	clientFirstBare   string
	serverSig         []byte
	stage             int
}

func (c *scramClient) Start() (string, []byte, error) {
	name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
	c.clientFirstBare = "n=" + name + ",r=" + c.nonce
	return "SCRAM-SHA-256", []byte("n,," + c.clientFirstBare), nil
}

func (c *scramClient) Next(challenge []byte) ([]byte, error) {
	c.stage++
	switch c.stage {
	case 1:
		serverFirst := string(challenge)
		var nonce, salt string
		iter := 0
		for _, a := range strings.Split(serverFirst, ",") {
			switch {
			case strings.HasPrefix(a, "r="):
				nonce = a[2:]
			case strings.HasPrefix(a, "s="):
				salt = a[2:]
			case strings.HasPrefix(a, "i="):
				iter, _ = strconv.Atoi(a[2:])
			}
		}
		saltB, err := base64.StdEncoding.DecodeString(salt)
		if err != nil || !strings.HasPrefix(nonce, c.nonce) || iter < 1 || iter > 1<<20 {
			return nil, errors.New("pop3: malformed SCRAM server-first message")
		}
		salted, err := pbkdf2.Key(sha256.New, c.pass, saltB, iter, sha256.Size)
		if err != nil {
			return nil, err
		}
		clientKey := hmacSHA256(salted, "Client Key")
		storedKey := sha256.Sum256(clientKey)
		withoutProof := "c=biws,r=" + nonce
		authMessage := c.clientFirstBare + "," + serverFirst + "," + withoutProof
		sig := hmacSHA256(storedKey[:], authMessage)
		proof := make([]byte, len(clientKey))
		for i := range proof {
			proof[i] = clientKey[i] ^ sig[i]
		}
		c.serverSig = hmacSHA256(hmacSHA256(salted, "Server Key"), authMessage)
		return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
	case 2:
		v, ok := strings.CutPrefix(string(challenge), "v=")
		got, err := base64.StdEncoding.DecodeString(v)
		if !ok || err != nil || subtle.ConstantTimeCompare(got, c.serverSig) != 1 {
			return nil, errors.New("pop3: the server's SCRAM signature is wrong")
		}
		return []byte{}, nil
	}
	return nil, errors.New("pop3: unexpected SCRAM challenge")
}
