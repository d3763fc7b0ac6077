GO ?= go

.PHONY: all build test node-deps vet fuzz bench soak rewrite fmt demo express-demo dist

all: build test

build:
	$(GO) build ./...

# Release binaries: static (no cgo, so no libc to match), for Linux on
# amd64 and arm64, in dist/, with VERSION stamped in for --version (by
# default the git tag or commit; a tree with changes is marked -dirty).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
DIST_PLATFORMS = linux/amd64 linux/arm64

dist:
	@mkdir -p dist
	@set -e; for p in $(DIST_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=dist/dutchmaster-$(VERSION)-$$os-$$arch; \
		echo "$$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath \
			-ldflags "-s -w -X main.version=$(VERSION)" -o $$out ./cmd/dutchmaster; \
	done

# The README's test command: vet, then every test with the race detector.
test: vet node-deps
	$(GO) test -race -count=1 -timeout 13m ./...

# The npm packages the Node.js tests run (Express, Fastify, ws,
# prom-client), installed from their lockfiles where missing, so that
# `make test` works on a fresh clone.
NPM_DIRS = examples/express examples/nodeapps cmd/dutchmaster/testdata/promclient

node-deps:
	@for d in $(NPM_DIRS); do \
		[ -d $$d/node_modules ] || (cd $$d && npm ci --no-audit --no-fund) || exit 1; \
	done

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# Fuzzing of the parsers of outside input, FUZZTIME each, one after
# another. `make test` runs their seed corpora (f.Add and testdata/fuzz/)
# as ordinary tests; a crasher found here is written to the package's
# testdata/fuzz/ and so becomes a seed.
FUZZTIME ?= 20s
FUZZ_TARGETS = \
	./sockets/wire:FuzzLineReader \
	./sockets/wire:FuzzClassify \
	./sockets/wire:FuzzParseNotify \
	./sockets/nodecluster:FuzzMessage \
	./sockets/nodecluster:FuzzMetricsAnswer \
	./sockets/control:FuzzParseRequest \
	./cmd/dutchmaster:FuzzLoadConfig \
	./actors/observers/journal:FuzzReplay \
	./actors/observers/journal:FuzzDecodeInput \
	./actors/observers/journal:FuzzDecodeDecision \
	./actors/core:FuzzDecodeState

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Benchmarks: speed and memory targets are measured here, never asserted in tests.
# cmd/dmbench: rolling restarts under load, 2/4/8 workers x new connection/keep-alive
# (~6 min); JSON lines, then a table (docs/performance.md). Exits 1 if a request fails.
# Then `dmbench -node`: a Node.js app under dutchmaster, a node:cluster primary and
# PM2 (installed from npm into a temporary directory, skipped if that fails), 2/4
# workers (~5 min; docs/performance.md, "Node.js apps"). Exits 1 only if a run fails.
# Then `dmbench -upgrade`: 4 workers under load, 10 in-place upgrades (ctl upgrade)
# per connection mode, one during a rolling restart, then 100 in one run for the
# master's RSS and descriptors (~30 s). Exits 1 if a request fails.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./actors/... ./scenarios/...
	$(GO) run ./cmd/dmbench
	$(GO) run ./cmd/dmbench -node
	$(GO) run ./cmd/dmbench -upgrade

# cmd/dmsoak: 200 rolling restarts of 4 workers under keep-alive and
# new-connection load with random worker SIGKILLs (~1 min), then 64/128/256
# workers started, rolled and stopped, 3 times each (~30 s); docs/reliability.md.
# Exits 1 on an unexcused failed request, a leak or a worker left behind.
soak:
	$(GO) run ./cmd/dmsoak
	$(GO) run ./cmd/dmsoak -scale

# Regenerate scenario expectations (the -rewrite flag exists only in the
# packages that import datadriven, so they are named here).
rewrite:
	$(GO) test ./scenarios/ ./examples/maxage/ -rewrite

fmt:
	gofmt -w $$(git ls-files '*.go')

DEMO_ADDR ?= 127.0.0.1:8080

# A real supervised demo: dutchmaster with the example worker on DEMO_ADDR.
demo:
	$(GO) build -o bin/dutchmaster ./cmd/dutchmaster
	$(GO) build -o bin/hello ./examples/hello
	@exec sh -c 'echo "dutchmaster (pid $$$$) runs 2 hello workers on http://$(DEMO_ADDR)/"; \
	  echo "  curl http://$(DEMO_ADDR)/          answer from a worker"; \
	  echo "  kill -USR2 $$$$                 rolling restart, no request dropped"; \
	  echo "  curl http://$(DEMO_ADDR)/restart   a worker asks for its own replacement"; \
	  echo "  Ctrl-C or kill $$$$             graceful stop"; \
	  HELLO_BOOT_DELAY=300ms exec bin/dutchmaster --workers 2 --listen http=tcp://$(DEMO_ADDR) -- bin/hello'

EXPRESS_PORT ?= 3000

# The Express example (examples/express): an unmodified app.listen(PORT) app,
# 2 workers on http://127.0.0.1:$(EXPRESS_PORT)/, dutchmaster as its Node.js cluster primary.
express-demo:
	$(GO) build -o bin/dutchmaster ./cmd/dutchmaster
	cd examples/express && { [ -d node_modules ] || npm ci --no-audit --no-fund; }
	@cd examples/express && exec sh -c 'echo "dutchmaster (pid $$$$) runs 2 Express workers on http://127.0.0.1:$(EXPRESS_PORT)/"; \
	  echo "  curl http://127.0.0.1:$(EXPRESS_PORT)/        answer from a worker"; \
	  echo "  curl http://127.0.0.1:$(EXPRESS_PORT)/boom    a crash: that worker asks for its replacement"; \
	  echo "  kill -USR2 $$$$               rolling restart, no request dropped"; \
	  echo "  Ctrl-C or kill $$$$           graceful stop"; \
	  PORT=$(EXPRESS_PORT) exec ../../bin/dutchmaster --workers 2 --listen tcp://127.0.0.1:$(EXPRESS_PORT) -- node app.js'
