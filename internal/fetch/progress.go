package fetch

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// Progress receives the progress of a transfer.
type Progress interface {
	// Start begins an account's transfer of msgs messages totalling
	// bytes octets (as listed by the server).
	Start(account string, msgs int, bytes int64)
	// Add reports n more octets received.
	Add(n int)
	// MessageDone reports one more message delivered.
	MessageDone()
	// Finish ends the transfer.
	Finish()
}

// Bar is a one-line progress bar for a terminal: messages, octets and
// rate, redrawn at most ten times a second.
type Bar struct {
	W io.Writer

	mu      sync.Mutex
	account string
	total   int64
	msgs    int
	nmsg    int
	done    int64
	start   time.Time
	drawn   time.Time
}

// Start implements Progress.
func (b *Bar) Start(account string, msgs int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.account, b.msgs, b.total, b.done, b.nmsg, b.start = account, msgs, bytes, 0, 0, time.Now()
	b.draw(true)
}

// Add implements Progress.
func (b *Bar) Add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += int64(n)
	b.draw(false)
}

// MessageDone implements Progress.
func (b *Bar) MessageDone() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nmsg++
	b.draw(b.nmsg == b.msgs)
}

// Finish implements Progress.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw(true)
	fmt.Fprintln(b.W)
}

func (b *Bar) draw(force bool) {
	now := time.Now()
	if !force && now.Sub(b.drawn) < 100*time.Millisecond {
		return
	}
	b.drawn = now
	frac := 1.0
	if b.total > 0 {
		frac = min(1, float64(b.done)/float64(b.total))
	}
	const width = 24
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '#'
		}
	}
	rate := 0.0
	if el := now.Sub(b.start).Seconds(); el > 0 {
		rate = float64(b.done) / el
	}
	fmt.Fprintf(b.W, "\r%s [%s] %3.0f%%  %d/%d msgs  %s/%s  %s/s  ", b.account, bar, frac*100, b.nmsg, b.msgs,
		config.Size(b.done).Human(), config.Size(b.total).Human(), config.Size(rate).Human())
}
