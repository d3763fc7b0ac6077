GO ?= go

.PHONY: all build test vet race bench rewrite fmt demo

all: build test

build:
	$(GO) build ./...

# The README's test command: vet, then every test with the race detector.
test: vet
	$(GO) test -race -count=1 -timeout 10m ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# Benchmarks: speed and memory targets are measured here, never asserted in tests.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./actors/... ./scenarios/...

# Regenerate scenario expectations (the -rewrite flag exists only in the
# packages that import datadriven, so they are named here).
rewrite:
	$(GO) test ./scenarios/ -rewrite

fmt:
	gofmt -w $$(git ls-files '*.go')
