#!/usr/bin/env bash
# run.sh — every side-by-side comparison in one command (as root, Debian 12):
# postino vs Dovecot (POP3) and postino vs Postfix (SMTP intake). Results are
# printed and written to bench/RESULTS.md. About 12 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/pop3.sh"
bash "$here/smtp.sh"
