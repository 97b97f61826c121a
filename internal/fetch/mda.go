package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// MDA passes each message to a command (a mail delivery agent such as
// procmail or maildrop) run with "sh -c", on its standard input with LF
// line ends and the marker header first. Exit status 0 is success; 75
// (EX_TEMPFAIL) is a temporary failure; anything else is a failure. In
// every failure the message stays on the server and is tried again on the
// next run. The command's environment has POSTINO_FETCH_ACCOUNT,
// POSTINO_FETCH_UIDL (the key), POSTINO_FETCH_SHA256 and POSTINO_FETCH_ID
// ("ACCOUNT KEY SHA256", the marker's value). The command is killed if
// postino dies (Linux: PR_SET_PDEATHSIG), so it cannot complete unseen
// after its parent was killed.
//
// Exactly once: postino cannot look inside an MDA's mailboxes, so after an
// interruption between starting the command and recording its success it
// asks Check, a command that exits 0 if the message named by
// $POSTINO_FETCH_ID was delivered and 1 if not. Without Check that one
// message is delivered again (never lost) and a warning names it; an MDA
// that drops messages whose X-Postino-Fetch header it has seen (e.g.
// procmail with formail -D on that header) makes the redelivery harmless.
type MDA struct {
	Command string
	Check   string
	// Stderr receives the commands' standard output and error; nil
	// discards them.
	Stderr io.Writer
}

func (d *MDA) String() string { return "mda:" + d.Command }

func (d *MDA) command(ctx context.Context, script string, id ID) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(),
		"POSTINO_FETCH_ACCOUNT="+id.Account,
		"POSTINO_FETCH_UIDL="+id.Key,
		"POSTINO_FETCH_SHA256="+id.SHA256,
		"POSTINO_FETCH_ID="+id.String(),
	)
	cmd.Stdout, cmd.Stderr = d.Stderr, d.Stderr
	setPdeathsig(cmd)
	return cmd
}

// Deliver implements Destination.
func (d *MDA) Deliver(ctx context.Context, m *Message) (string, error) {
	cmd := d.command(ctx, d.Command, m.ID)
	cmd.Stdin = m.WithMarker(true)
	var out bytes.Buffer
	if d.Stderr == nil {
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "mda", nil
	case errors.As(err, &ee) && ee.ExitCode() == 75:
		return "", fmt.Errorf("%w: %s: %w (exit 75)", ErrDestination, d.Command, errTempFail)
	case errors.As(err, &ee):
		return "", fmt.Errorf("%w: %s failed (%v) %s", ErrDestination, d.Command, err, strings.TrimSpace(out.String()))
	}
	return "", fmt.Errorf("%w: %s: %v", ErrDestination, d.Command, err)
}

// Find implements Destination.
func (d *MDA) Find(ctx context.Context, w Want) (FindResult, string, error) {
	if d.Check == "" {
		return Unknown, "", nil
	}
	err := d.command(ctx, d.Check, w.ID).Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Found, "mda", nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return NotFound, "", nil
	}
	return NotFound, "", fmt.Errorf("%w: mda_check %s: %v", ErrDestination, d.Check, err)
}
