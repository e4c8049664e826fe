# Meridian. `make demo` runs the embedded two-region demo; `make test` runs
# the test suite (kcat must be installed: .ci/run does it on Debian; the
# real-Kafka tests skip unless `make kafka-jars` has resolved the jars).
GO      ?= go
BIN     := bin/meridian
PKGS    := ./...
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build test test-short demo bench lint fuzz clean kafka-jars

all: build

build:
	$(GO) build -o $(BIN) ./cmd/meridian

test:
	$(GO) test $(TESTFLAGS) $(PKGS)

# Apache Kafka broker and MirrorMaker 2 jars for internal/kafkatest, with
# Maven, into a cache outside the repo (a no-op once there).
kafka-jars:
	internal/kafkatest/resolve.sh

test-short:
	$(GO) test -short $(PKGS)

demo: build
	./$(BIN) demo --duration 30s

# Benchmarks: meridian against a direct franz-go consume->produce loop in the
# same run (ratio printed); what lossy links carry, against the MirrorMaker 2
# pattern, in the packet lab (needs root); codec, transport, group-sync and
# backlog-memory benchmarks.
bench: build
	./$(BIN) bench mirror --records 1000000 --runs 4 --compression s2 --passthrough
	./$(BIN) bench mirror --records 1000000 --runs 4 --compression s2
	./$(BIN) bench mirror --records 1000000 --runs 3 --compression s2 --passthrough --produce-latency 5ms
	./$(BIN) bench mirror --records 1000000 --runs 3 --compression s2 --produce-latency 5ms
	./$(BIN) bench mirror --records 1000000 --runs 4 --compression zstd
	./$(BIN) bench link --profile geo-satellite --loss 0.01
	./$(BIN) bench link --profile geo-satellite --loss 0.05 --contenders meridian
	./$(BIN) bench link --profile leo-satellite
	./$(BIN) bench link --profile geo-satellite --blackout 30s --blackout-at 20s --duration 50s --contenders meridian
	$(GO) test -run '^$$' -bench . -benchtime 2x ./transport/...
	$(GO) test -run '^$$' -bench 'GroupSyncLag|BacklogHeap' -benchtime 1x ./mirror/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; $(GO) mod tidy -diff; exit 1; }

# Short fuzzing pass over every wire decoder and parser.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./config/
	$(GO) test -run '^$$' -fuzz FuzzReadFrame -fuzztime 20s -fuzzminimizetime 2s ./transport/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./topology/profile/
	$(GO) test -run '^$$' -fuzz FuzzDecodeProgress -fuzztime 20s ./mirror/

clean:
	rm -rf bin
