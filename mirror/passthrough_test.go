package mirror_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// passthrough makes the fixture's link forward Kafka record batches.
func passthrough(f *config.File) { f.Links[0].Passthrough = true }

// modes are the two ways a link carries batches; tests of exactly-once
// behaviour run in both.
var modes = []struct {
	name string
	mods []func(*config.File)
}{
	{"records", nil},
	{"passthrough", []func(*config.File){passthrough}},
}

// batchCounter counts the batches the receiving gateway gets, by form.
type batchCounter struct{ kafka, records atomic.Int64 }

func (c *batchCounter) wrap(ln transport.Listener) transport.Listener {
	return &countingListener{ln, c}
}

type countingListener struct {
	transport.Listener
	c *batchCounter
}

func (l *countingListener) Accept(ctx context.Context) (transport.Conn, error) {
	conn, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{conn, l.c}, nil
}

type countingConn struct {
	transport.Conn
	c *batchCounter
}

func (c *countingConn) Recv(ctx context.Context) (transport.Frame, error) {
	f, err := c.Conn.Recv(ctx)
	if b, ok := f.(*transport.Batch); ok {
		if b.Kafka != nil {
			c.c.kafka.Add(1)
		} else if len(b.Records) > 0 {
			c.c.records.Add(1)
		}
	}
	return f, err
}

// checkForms fails unless the link carried batches in the form the mode
// asks for: passthrough forwards Kafka batches, the record mode never does.
func checkForms(t *testing.T, mode string, c *batchCounter) {
	t.Helper()
	k, r := c.kafka.Load(), c.records.Load()
	switch {
	case mode == "passthrough" && k == 0:
		t.Fatalf("passthrough link carried no Kafka batches (%d record batches)", r)
	case mode == "records" && k > 0:
		t.Fatalf("record link carried %d Kafka batches", k)
	}
}

// A passthrough link forwards the source's batches as they are, whatever
// their producer did: compressed or not, transactional (committed and
// aborted, with markers) or plain. The destination holds every committed
// record once, in order, with keys, headers and timestamps, and every
// source offset translates exactly.
//
// With merging (what a sink does when the destination's produce round trips
// are slow and CPUs are to spare), runs of small batches are decoded and
// written as fewer, bigger ones: the same holds.
func TestPassthroughForwardsEveryKindOfBatch(t *testing.T) {
	t.Run("as they are", func(t *testing.T) { testEveryKindOfBatch(t, mirror.Tuning{}) })
	t.Run("merged", func(t *testing.T) { testEveryKindOfBatch(t, mirror.Tuning{MergeAlways: true}) })
}

func testEveryKindOfBatch(t *testing.T, tuning mirror.Tuning) {
	f := newFixture(t, []string{"t.orders", "t.b"}, 2, passthrough)
	f.tuning = tuning
	var c batchCounter
	f.wrapListener = c.wrap
	produceWithAborts(t, f, 9)
	f.produce(t, 3000, 0)
	f.gateway(t, "gw", 1<<20)
	f.gateway(t, "ge", 0)
	produceWithAborts(t, f, 9)
	f.produce(t, 3000, 3000)
	// Uncompressed batches: the link compresses those.
	cl, err := kgo.NewClient(append(f.srcOpts(), kgo.ProducerBatchCompression(kgo.NoCompression()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range 500 {
		recs = append(recs, &kgo.Record{Topic: "t.b", Key: []byte{byte(i)}, Value: bytes.Repeat([]byte("plain "), 20)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, topic := range f.topics {
		for _, rs := range readPartitions(t, f.srcOpts(), topic) {
			committed += int64(len(rs))
		}
	}
	checkExact(t, f.waitMirrored(t, committed, 60*time.Second), committed)
	if gaps := checkTranslationExact(t, f, "t.orders"); gaps == 0 {
		t.Fatal("no source offset fell in a gap: the test did not exercise aborted transactions")
	}
	checkForms(t, "passthrough", &c)
}

func (f *fixture) srcOpts() []kgo.Opt { return []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)} }

// During a rollout the two gateways' files may disagree: a receiver that
// does not pass a leg through still writes every record of the Kafka
// batches a passthrough sender forwards, and a passthrough receiver builds
// batches from a record sender's records.
func TestPassthroughOnOneSideOnly(t *testing.T) {
	for _, side := range []string{"ge", "gw"} {
		t.Run("passthrough at "+side, func(t *testing.T) {
			f := newFixture(t, []string{"t.a", "t.b"}, 2)
			on := *f.file
			on.Links = slices.Clone(f.file.Links)
			on.Links[0].Passthrough = true
			topo, err := topology.New(&on)
			if err != nil {
				t.Fatal(err)
			}
			f.topoFor = map[string]*topology.Topology{side: topo}
			f.mirrorAcrossStart(t, 3000, map[string]string{"ge": "passthrough", "gw": "records"}[side])
		})
	}
}

// When the destination refuses what the receiver thought it would take (its
// limit was lowered after the topic was prepared), the receiver narrows down
// to the record it refuses: in passthrough, the refused source batch is
// written record by record next time, and the record refused alone is
// dead-lettered. Nothing else is lost, duplicated or reordered.
func TestRefusedBatchIsNarrowedToTheRecord(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a"}, 1, m.mods...)
			f.gateway(t, "gw", 0)
			f.gateway(t, "ge", 0)
			f.produce(t, 10, 0)
			checkExact(t, f.waitMirrored(t, 10, 30*time.Second), 10)

			ctx := context.Background()
			dcl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			defer dcl.Close()
			limit := "4096"
			rs, err := kadm.NewClient(dcl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, "t.a")
			if err == nil {
				_, err = rs.On("t.a", nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			scl, err := kgo.NewClient(f.srcOpts()...)
			if err != nil {
				t.Fatal(err)
			}
			defer scl.Close()
			big := make([]byte, 10_000)
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range big {
				big[i] = byte(rng.Uint32())
			}
			var recs []*kgo.Record
			for i := range 11 {
				v := fmt.Appendf(nil, "small-%d", i)
				if i == 5 {
					v = big
				}
				recs = append(recs, &kgo.Record{Topic: "t.a", Key: []byte(strconv.Itoa(10 + i)), Value: v})
			}
			if err := scl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			rep := f.waitMirrored(t, 20, 60*time.Second)
			if rep.Mirrored != 20 || rep.Lost != 1 || rep.Duplicated+rep.Reordered+rep.Unexpected != 0 {
				t.Fatalf("read-back %v, want 20 mirrored and only the refused record missing", rep)
			}
			dl := f.deadLetters(t)
			if len(dl) != 1 || string(dl[0].Key) != "15" {
				t.Fatalf("dead letters: %d records (first key %q), want the record with key 15", len(dl), keyOf(dl))
			}
		})
	}
}

// deadLetters reads the destination's dead-letter topic, waiting up to
// 10 s for it to hold anything.
func (f *fixture) deadLetters(t *testing.T) []*kgo.Record {
	t.Helper()
	var dl []*kgo.Record
	deadline := time.Now().Add(10 * time.Second)
	for len(dl) == 0 && time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dl = nil
		_ = kread.Each(rctx, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, []string{mirror.DeadLetterTopic}, func(r *kgo.Record) { dl = append(dl, r) })
		cancel()
	}
	return dl
}

func keyOf(rs []*kgo.Record) string {
	if len(rs) == 0 {
		return ""
	}
	return string(rs[0].Key)
}

// boastfulConn is a sender's connection that believes the receiver takes
// batches of any size: its sender forwards every Kafka batch as it is, as
// a sender built before the decompressed-size check, or a hostile one, does.
type boastfulConn struct{ transport.Conn }

func (c boastfulConn) Welcome() *transport.Welcome {
	w := *c.Conn.Welcome()
	w.MaxBatchBytes = 1 << 30
	return &w
}

// A Kafka batch of a few KiB whose records decompress to 32 MiB (a
// decompression bomb), passed through by a sender that does not check:
// the receiver, whose batch limit is 64 KiB, neither writes nor
// decompresses it; it dead-letters the batch, and every other record
// arrives exactly once, in order.
//
// Also when only the sender passes the leg through (a rollout): the
// receiver, writing records, does not decode the bomb either.
func TestPassthroughRefusesDecompressionBomb(t *testing.T) {
	for _, tc := range []struct {
		name       string
		codec      kgo.CompressionCodec
		senderOnly bool
	}{
		{"zstd", kgo.ZstdCompression(), false},
		{"gzip", kgo.GzipCompression(), false},
		{"zstd, passthrough at the sender only", kgo.ZstdCompression(), true},
	} {
		codec := tc.codec
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a"}, 1, passthrough)
			if tc.senderOnly {
				off := *f.file
				off.Links = slices.Clone(f.file.Links)
				off.Links[0].Passthrough = false
				topo, err := topology.New(&off)
				if err != nil {
					t.Fatal(err)
				}
				f.topoFor = map[string]*topology.Topology{"gw": topo}
			}
			var c batchCounter
			f.wrapListener = c.wrap
			f.wrapDial = func(c transport.Conn) transport.Conn { return boastfulConn{c} }
			f.gateway(t, "gw", 0)
			f.gateway(t, "ge", 0)
			mirrorsAroundABomb(t, f, codec)
			checkForms(t, "passthrough", &c)
		})
	}
}

func headerOf(r *kgo.Record, key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// A source batch small on the wire but larger than the receiver's batch
// limit once decompressed (200 compressible records of 1 KiB, against
// 64 KiB) is decoded by the sender and sent as records: every record
// arrives exactly once, none dead-lettered.
func TestPassthroughDecodesBatchesOverTheLimit(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 1, passthrough)
	var c batchCounter
	f.wrapListener = c.wrap
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	cl, err := kgo.NewClient(append(f.srcOpts(), kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.ProducerLinger(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, &kgo.Record{Topic: "t.a", Key: []byte(strconv.Itoa(i)), Value: bytes.Repeat([]byte{'v'}, 1<<10)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	checkExact(t, f.waitMirrored(t, 200, 60*time.Second), 200)
	if c.records.Load() == 0 {
		t.Fatalf("the sender sent no record batches (%d Kafka batches): it did not decode the batch over the limit", c.kafka.Load())
	}
}

// A source batch that decompresses beyond what the sender may decode
// (Tuning.SourceDecompressLimit) and beyond the receiver's limit goes as it
// is, and the receiver dead-letters it whole: the leg flows on, where a
// sender retrying the decode would end the peer's session for ever.
func TestPassthroughForwardsBatchesNoLimitFits(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 1, passthrough)
	f.tuning.SourceDecompressLimit = 8 << 20
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	mirrorsAroundABomb(t, f, kgo.ZstdCompression())
}

// mirrorsAroundABomb mirrors 10 records, then a batch of one 32 MiB record
// compressed with codec (a few KiB on the wire), then 10 more, and checks
// that the 20 arrive exactly and the bomb only as a dead letter.
func mirrorsAroundABomb(t *testing.T, f *fixture, codec kgo.CompressionCodec) {
	t.Helper()
	f.produce(t, 10, 0)
	checkExact(t, f.waitMirrored(t, 10, 30*time.Second), 10)
	bcl, err := kgo.NewClient(append(f.srcOpts(), kgo.ProducerBatchCompression(codec), kgo.ProducerBatchMaxBytes(64<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	defer bcl.Close()
	if err := bcl.ProduceSync(context.Background(), &kgo.Record{Topic: "t.a", Key: []byte("bomb"), Value: make([]byte, 32<<20)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	f.produce(t, 10, 10)
	rep := f.waitMirrored(t, 20, 60*time.Second)
	if rep.Mirrored != 20 || rep.Lost != 1 || rep.Duplicated+rep.Reordered+rep.Unexpected != 0 {
		t.Fatalf("read-back %v, want 20 mirrored and only the bomb missing", rep)
	}
	dl := f.deadLetters(t)
	if len(dl) != 1 || !bytes.Contains(headerOf(dl[0], mirror.HeaderDLReason), []byte("beyond the limit")) {
		t.Fatalf("dead letters: %d records, want one for the bomb", len(dl))
	}
}
