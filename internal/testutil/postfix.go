package testutil

import (
	_ "embed"
	"strings"
)

// postfixMasterCF is Postfix's master.cf for a private test instance; the
// SMTP benchmark (bench/compare/smtp.sh) uses the same file, replacing
// SMTPD_ADDRESS with sed.
//
//go:embed postfix-master.cf
var postfixMasterCF string

// PostfixMasterCF returns a master.cf for a Postfix instance run by an
// unprivileged test: smtpd listens on smtpdAddr ("127.0.0.1:PORT") and
// every chroot column is n, so the daemons run in the queue folder.
func PostfixMasterCF(smtpdAddr string) string {
	return strings.Replace(postfixMasterCF, "SMTPD_ADDRESS", smtpdAddr, 1)
}
