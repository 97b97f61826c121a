//go:build !linux

package delivery

// oTmpfile is not available here: spool files are unlinked after creation.
const oTmpfile = 0
