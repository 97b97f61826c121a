// Package testutil holds the helpers shared by postino's black-box test
// packages (tests/blackbox, tests/crash, tests/fetch, tests/interop and
// tests/smtp) and by package tests that run external programs: building
// the postino binary once in TestMain, picking free loopback addresses,
// running external commands with a timeout, skipping tests whose external
// programs, Python modules or root are missing (or failing them under
// CI=true: SkipOrFatal, NeedProgram, NeedPython, NewSystemUser), starting
// "postino serve" and waiting for its listener banner, stopping it with
// SIGTERM and checking that it exits 0, and a few POP3 and message
// helpers.
//
// It is an ordinary package so that those test packages can share it, but
// it is meant for tests only: product code must not import it.
package testutil
