// Package mailtest holds the test helpers that use postino's own packages:
// a POP3 session through the pop3 client (DialPOP3, RetrAll, UIDLs) and
// the messages of a mailbox read through a store (StoreMessages). They are
// kept apart from internal/testutil, which imports only the standard
// library so that the tests of every package, pop3's included, can use it.
//
// Like testutil, it is meant for tests only: product code must not import
// it.
package mailtest
