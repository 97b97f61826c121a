package pgstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Options locates an S3 bucket.
type S3Options struct {
	// Endpoint is the service's URL: https://host[:port] (http:// only
	// for tests and private networks).
	Endpoint string
	// Bucket holds the blobs, one object per key.
	Bucket string
	// Region may be empty.
	Region string
	// AccessKey and SecretKey are the credentials.
	AccessKey, SecretKey string
	// Transport, when set, replaces the default HTTP transport.
	Transport http.RoundTripper
}

// S3Blobs is a BlobStore in an S3 bucket, one object per blob.
type S3Blobs struct {
	c      *minio.Client
	bucket string
}

// NewS3Blobs returns the blob store in the bucket. It makes no request.
func NewS3Blobs(o S3Options) (*S3Blobs, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("pgstore: s3 endpoint %q: want https://host[:port]", o.Endpoint)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:    u.Scheme == "https",
		Region:    o.Region,
		Transport: o.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: s3: %w", err)
	}
	return &S3Blobs{c: c, bucket: o.Bucket}, nil
}

// objectName is where a blob lives in the bucket: a two-level prefix
// spreads the keys.
func objectName(key string) string { return "blobs/" + key[:2] + "/" + key }

// Has asks for the object's metadata (HEAD).
func (s *S3Blobs) Has(ctx context.Context, key string) (bool, error) {
	_, err := s.c.StatObject(ctx, s.bucket, objectName(key), minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return false, nil
	}
	return false, fmt.Errorf("pgstore: s3 stat %s: %w", key, err)
}

// Put uploads the object with its size known, in one PUT (multipart
// beyond minio-go's part size); the blob is durable once S3 answered 200.
func (s *S3Blobs) Put(ctx context.Context, key string, size int64, r io.Reader) error {
	_, err := s.c.PutObject(ctx, s.bucket, objectName(key), r, size, minio.PutObjectOptions{
		ContentType:    "message/rfc822",
		SendContentMd5: true,
	})
	if err != nil {
		return fmt.Errorf("pgstore: s3 put %s: %w", key, err)
	}
	return nil
}

// Get streams the object.
func (s *S3Blobs) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	o, err := s.c.GetObject(ctx, s.bucket, objectName(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("pgstore: s3 get %s: %w", key, err)
	}
	// GetObject is lazy: Stat makes the request, so that a missing
	// object is reported here rather than by the first Read.
	if _, err := o.Stat(); err != nil {
		o.Close()
		if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %s", ErrBlobMissing, key)
		}
		return nil, fmt.Errorf("pgstore: s3 get %s: %w", key, err)
	}
	return o, nil
}

// Delete removes the object.
func (s *S3Blobs) Delete(ctx context.Context, key string) error {
	if err := s.c.RemoveObject(ctx, s.bucket, objectName(key), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("pgstore: s3 delete %s: %w", key, err)
	}
	return nil
}
