# Meridian. `make demo` runs the satellite fleet on the embedded default; `make test` runs
# the test suite (kcat must be installed: .ci/run does it on Debian; the
# real-Kafka tests skip unless `make kafka-jars` has resolved the jars).
GO      ?= go
BIN     := bin/meridian
PKGS    := ./...
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build test test-short demo bench lint fuzz clean kafka-jars

all: build

# The version and commit `meridian version` prints: git describe and the
# commit of the checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/meridian

test:
	$(GO) test $(TESTFLAGS) $(PKGS)

# Apache Kafka broker and MirrorMaker 2 jars for internal/kafkatest, with
# Maven, into a cache outside the repo (a no-op once there).
kafka-jars:
	internal/kafkatest/resolve.sh

test-short:
	$(GO) test -short $(PKGS)

demo: build
	./$(BIN) demo --topology examples/satellite-fleet.yaml --duration 30s \
		--blackout vessel-7--hq:8s:4s --stop hq-a:15s

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
	./$(BIN) bench amqp --messages 10000 --runs 5
	$(GO) test -run '^$$' -bench . -benchtime 2x ./transport/...
	$(GO) test -run '^$$' -bench 'GroupSyncLag|BacklogHeap' -benchtime 1x ./mirror/
	MERIDIAN_GOSSIP_SOAK=10m $(GO) test -count=1 -run TestGossipSoak -v -timeout 15m ./topology/membership/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; $(GO) mod tidy -diff; exit 1; }

# Short fuzzing pass over every wire decoder and parser: FUZZTIME each
# (every target also checks what a call allocates). `make test` runs only
# their seed corpora.
FUZZTIME ?= 5s
FUZZ_TARGETS := \
	./config/:FuzzParse \
	./topology/profile/:FuzzParse \
	./routing/:FuzzCompile \
	./transport/:FuzzReadFrame \
	./transport/:FuzzReadFrameDicts \
	./transport/:FuzzReadHandshake \
	./transport/quic/:FuzzSeqLane \
	./transport/quic/:FuzzJoin \
	./mirror/progress/:FuzzDecodeProgress \
	./mirror/progress/:FuzzDecodeFence \
	./mirror/cloudevents/:FuzzRecord \
	./internal/kraw/:FuzzDecode \
	./internal/kraw/:FuzzParsePartition \
	./internal/kraw/:FuzzControlType \
	./internal/kraw/:FuzzParseHeader \
	./internal/kraw/:FuzzSplit \
	./internal/units/:FuzzParse \
	./internal/pki/:FuzzParsePEM
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
	done

clean:
	rm -rf bin
