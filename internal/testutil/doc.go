// Package testutil holds the helpers shared by postino's black-box test
// packages (tests/blackbox, tests/crash, tests/fetch, tests/interop and
// tests/smtp) and by package tests that run external programs: building
// the postino binary once in TestMain, picking free loopback addresses,
// running external commands with a timeout, skipping tests whose external
// programs, Python modules or root are missing (or failing them under
// CI=true: SkipOrFatal, NeedProgram, NeedPython, NewSystemUser), starting
// "postino serve" and waiting for its listener banner, stopping it with
// SIGTERM and checking that it exits 0, polling for a condition
// (WaitFor), a self-signed test certificate (NewCert), and message helpers
// (CRLF, WireForm).
//
// It imports only the standard library, so that the tests of every
// package can use it, pop3's included; the helpers that need postino's
// own packages are in internal/testutil/mailtest.
//
// It is an ordinary package so that those test packages can share it, but
// it is meant for tests only: product code must not import it.
package testutil
