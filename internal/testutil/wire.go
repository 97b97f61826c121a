package testutil

import "strings"

// CRLF returns msg with every line ending in CRLF, and a final CRLF.
func CRLF(msg string) []byte {
	s := strings.ReplaceAll(msg, "\r\n", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// WireForm is what POP3 must serve for a message delivered by "postino
// deliver --from from rcpt": the Return-Path and Delivered-To trace lines
// prepended, CRLF line ends, and a final CRLF.
func WireForm(from, rcpt string, msg []byte) []byte {
	return CRLF("Return-Path: <" + from + ">\nDelivered-To: " + rcpt + "\n" + string(msg))
}
