package delivery

import "golang.org/x/sys/unix"

// oTmpfile makes an unnamed file in a directory (Linux ≥ 3.11).
const oTmpfile = unix.O_TMPFILE
