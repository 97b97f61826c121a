# Convenience targets; `go test ./...` is the test command.
GO ?= go
FUZZTIME ?= 30s

.PHONY: build test vet fuzz bench-memory

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
