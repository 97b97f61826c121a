package delivery

import (
	"context"
	"io"
	"strings"

	"github.com/postino-mail/postino/internal/store"
)

// deliverCopy stores the recipient's header lines and the spooled
// message: apart when the store keeps the content shared by every
// recipient once (store.PrefixDeliverer), else as one stream.
func deliverCopy(ctx context.Context, st store.Store, mailbox string, hdr *strings.Reader, sp *Spool) (string, error) {
	if pd, ok := st.(store.PrefixDeliverer); ok {
		prefix, err := io.ReadAll(hdr)
		if err != nil {
			return "", err
		}
		return pd.DeliverPrefixed(ctx, mailbox, prefix, sp.Reader())
	}
	return st.Deliver(ctx, mailbox, io.MultiReader(hdr, sp.Reader()))
}
