package pgstore

import "time"

// Blobs returns the store's blob store (the outbound queue keeps its
// message bodies there too).
func (s *Store) Blobs() BlobStore { return s.blobs }

// BlobGrace returns the grace period of CollectBlobs: a blob row touched
// within it is not collected.
func (s *Store) BlobGrace() time.Duration { return s.grace }

// LockTTL returns the lease length of the node's locks.
func (s *Store) LockTTL() time.Duration { return s.locks.ttl }

// NodeID returns the name of this node in lease rows.
func (s *Store) NodeID() string { return s.locks.node }

// SpoolDir returns the folder of the store's temporary files.
func (s *Store) SpoolDir() string { return s.spool }
