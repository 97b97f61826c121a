# Convenience targets; `go test ./...` is the test command.
GO ?= go
FUZZTIME ?= 30s

# make release: static binaries (no cgo, no libc) with the version stamped
# in, and their SHA-256 checksums, in RELEASE_DIR.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
RELEASE_DIR ?= release
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64

.PHONY: build test vet fuzz bench-memory release

build:
	$(GO) build -o postino ./cmd/postino

test:
	$(GO) test ./...

vet:
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"

# Runs every fuzz target for FUZZTIME each (make fuzz FUZZTIME=5m).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench-memory: build
	$(GO) run ./bench/pop3mem -postino ./postino -sessions 10000 -retr-mb 100

release:
	@mkdir -p $(RELEASE_DIR)
	@rm -f $(RELEASE_DIR)/postino-* $(RELEASE_DIR)/SHA256SUMS
	@set -e; for p in $(RELEASE_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; out=$(RELEASE_DIR)/postino-$$os-$$arch; \
	  echo "building $$out ($(VERSION))"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath \
	    -ldflags "-s -w -X main.version=$(VERSION)" -o $$out ./cmd/postino; \
	done
	cd $(RELEASE_DIR) && sha256sum postino-* > SHA256SUMS
	@cat $(RELEASE_DIR)/SHA256SUMS
