package mirror_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/transport"
)

// readDeadLetters reads the destination's dead-letter topic until it holds
// want records or 10 s pass, and returns each record's headers.
func readDeadLetters(t *testing.T, f *fixture, want int) []map[string]string {
	t.Helper()
	var dl []map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for len(dl) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dl = nil
		_ = kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, []string{mirror.DeadLetterTopic}, func(r *kgo.Record) {
			h := map[string]string{"key": string(r.Key)}
			for _, hd := range r.Headers {
				h[hd.Key] = string(hd.Value)
			}
			dl = append(dl, h)
		})
		cancel()
	}
	return dl
}

// refuseProduce makes c answer every produce request that holds a
// partition refuse picks with code for those partitions (and a retriable
// NOT_LEADER for the others, since a control answer covers the whole
// request). It returns the count of requests refused.
func refuseProduce(c *kfake.Cluster, code int16, refuse func(*kmsg.ProduceRequest, *kmsg.ProduceRequestTopic, *kmsg.ProduceRequestTopicPartition) bool) *atomic.Int64 {
	var refused atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		bad := false
		for i := range req.Topics {
			rt := &req.Topics[i]
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for j := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rt.Partitions[j].Partition, kerr.NotLeaderForPartition.Code
				if refuse(req, rt, &rt.Partitions[j]) {
					sp.ErrorCode, bad = code, true
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !bad {
			return nil, nil, false
		}
		refused.Add(1)
		return resp, nil, true
	})
	return &refused
}

// refuseFutureTimestamps makes c refuse, as Kafka does past
// message.timestamp.after.max.ms, every produced batch holding a record
// stamped more than a day ahead.
func refuseFutureTimestamps(c *kfake.Cluster) *atomic.Int64 {
	return refuseProduce(c, kerr.InvalidTimestamp.Code, func(_ *kmsg.ProduceRequest, _ *kmsg.ProduceRequestTopic, rp *kmsg.ProduceRequestTopicPartition) bool {
		limit, bad := time.Now().Add(24*time.Hour).UnixMilli(), false
		kraw.Split(rp.Records, func(h kraw.Header, _ []byte) error {
			bad = bad || h.MaxTimestamp > limit
			return nil
		})
		return bad
	})
}

// A record the destination refuses for its timestamp is dead-lettered with
// the reason, and only it: every other record of every partition arrives
// exactly, read back from the destination.
func TestMirrorDeadLettersARecordWithAnInvalidTimestamp(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a", "t.b"}, 3, m.mods...)
			refused := refuseFutureTimestamps(f.dst)
			f.produce(t, 600, 0)
			scl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			defer scl.Close()
			bad := &kgo.Record{Topic: "t.a", Key: []byte("bad"), Value: []byte("from the future"), Timestamp: time.Now().AddDate(100, 0, 0)}
			if err := scl.ProduceSync(context.Background(), bad).FirstErr(); err != nil {
				t.Fatal(err)
			}
			f.produce(t, 600, 600)
			f.gateway(t, "gw", 0)
			f.gateway(t, "ge", 0)

			rep := f.waitMirrored(t, 1200, 60*time.Second)
			if rep.Produced != 1201 || rep.Mirrored != 1200 || rep.Lost != 1 || rep.Duplicated != 0 || rep.Reordered != 0 || rep.Unexpected != 0 {
				t.Fatalf("read-back %v, want 1200 of 1201 mirrored exactly and only the refused record missing", rep)
			}
			dl := readDeadLetters(t, f, 1)
			if len(dl) != 1 {
				t.Fatalf("dead-letter topic holds %d records, want 1", len(dl))
			}
			h := dl[0]
			if h["key"] != "bad" || h[mirror.HeaderDLTopic] != "t.a" || h[mirror.HeaderDLPartition] != strconv.Itoa(int(bad.Partition)) ||
				h[mirror.HeaderDLOffset] != strconv.FormatInt(bad.Offset, 10) || h[mirror.HeaderDLKind] != "invalid-timestamp" ||
				h[mirror.HeaderDLTimestamp] != strconv.FormatInt(bad.Timestamp.UnixMilli(), 10) ||
				!strings.Contains(h[mirror.HeaderDLReason], kerr.InvalidTimestamp.Message) {
				t.Errorf("dead letter %v, want t.a/%d@%d, kind invalid-timestamp, the broker's reason", h, bad.Partition, bad.Offset)
			}
			var dls int64
			for _, l := range f.engine("gw").Status().Legs {
				dls += l.DeadLetters
			}
			if dls != 1 {
				t.Errorf("status counts %d dead letters, want 1", dls)
			}
			// Narrowing a refused batch down to its record takes a
			// few refusals, not one per record.
			if n := refused.Load(); n > 4 {
				t.Errorf("destination refused %d batches, want at most 4 to find the one record", n)
			}
		})
	}
}

// A destination that fails every transaction is retried with capped,
// jittered backoff: a bounded number of new producers and transactions in
// a time window, not a tight loop; the failures are counted in status.
func TestFailingTransactionsBackOff(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 4)
	var inits atomic.Int64
	f.dst.ControlKey(int16(kmsg.InitProducerID), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		f.dst.KeepControl()
		if kr.(*kmsg.InitProducerIDRequest).TransactionalID != nil {
			inits.Add(1)
		}
		return nil, nil, false
	})
	produces := refuseProduce(f.dst, kerr.PolicyViolation.Code, func(req *kmsg.ProduceRequest, _ *kmsg.ProduceRequestTopic, _ *kmsg.ProduceRequestTopicPartition) bool {
		return req.TransactionID != nil
	})
	f.produce(t, 400, 0)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	// Wait for the first refusal, then count over a window.
	deadline := time.Now().Add(30 * time.Second)
	for produces.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if produces.Load() == 0 {
		t.Fatal("the sink never wrote to the destination")
	}
	const window = 8 * time.Second
	i0, p0 := inits.Load(), produces.Load()
	time.Sleep(window)
	di, dp := inits.Load()-i0, produces.Load()-p0
	// Backoff from 200 ms doubling to 30 s, jittered down to half: at most
	// 7 retries in 8 s, each reopening at most the leg's 4 shards.
	t.Logf("in %v: %d producers opened, %d produce requests refused", window, di, dp)
	if di > 7*4 || dp > 7*4*4 {
		t.Errorf("in %v the destination saw %d new transactional producers and %d refused produce requests, want at most 28 and 112 (capped backoff)", window, di, dp)
	}
	var failed int64
	var lastErr string
	for _, l := range f.engine("gw").Status().Legs {
		failed += l.FailedTxns
		lastErr += l.LastError
	}
	if failed == 0 || !strings.Contains(lastErr, "POLICY_VIOLATION") {
		t.Errorf("status: %d failed transactions, last error %q, want them counted and the broker's error shown", failed, lastErr)
	}
	rep := f.waitMirrored(t, 0, 0)
	if rep.Mirrored != 0 {
		t.Errorf("read-back %v: nothing may be mirrored through a destination that refuses every write", rep)
	}
}

// dataBatch is a batch of partition 0 of t.a with records at offsets
// from..to-1 (the value of each is its offset): as records, or (kafka) as
// one Kafka record batch as a passthrough sender forwards it.
func dataBatch(t *testing.T, kafka bool, leg string, gen, seq uint64, from, to int64) *transport.Batch {
	t.Helper()
	b := &transport.Batch{Leg: leg, Gen: gen, Seq: seq, Topic: "t.a", Partition: 0, NextOffset: to, HighWatermark: to}
	var krs []kgo.Record
	for o := from; o < to; o++ {
		v := []byte(strconv.FormatInt(o, 10))
		b.Records = append(b.Records, transport.Record{Offset: o, Timestamp: time.Now().UnixMilli(), Value: v})
		krs = append(krs, kgo.Record{Value: v, Timestamp: time.Now()})
	}
	if kafka {
		kb, err := kraw.BuildBatch(nil, krs, nil)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(kb, uint64(from)) // base offset (outside the CRC)
		b.Records, b.Kafka = nil, kb
	}
	return b
}

// awaitFrame returns the next Ack or Resume the receiver sends.
func awaitFrame(ctx context.Context, t *testing.T, conn transport.Conn) transport.Frame {
	t.Helper()
	for {
		fr, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for an ack or a resume: %v", err)
		}
		switch fr.(type) {
		case *transport.Ack, *transport.Resume:
			return fr
		}
	}
}

// A batch that skips offsets past the committed progress is refused and
// never written: the receiver resumes the sender from the committed next
// offset. The same gap first covered by an empty batch (as a sender does
// for compaction, aborted data or retention) is written.
func TestReceiverRefusesABatchThatSkipsOffsets(t *testing.T) {
	for _, form := range []string{"records", "kafka"} {
		t.Run(form, func(t *testing.T) {
			kafka := form == "kafka"
			f := newFixture(t, []string{"t.a"}, 1)
			f.gateway(t, "gw", 0)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, leg, rs := f.dialAsSender(ctx, t)
			if err := conn.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			if err := conn.Send(ctx, dataBatch(t, kafka, leg, rs.Gen, 1, 0, 10)); err != nil {
				t.Fatal(err)
			}
			if fr, ok := awaitFrame(ctx, t, conn).(*transport.Ack); !ok || len(fr.Seqs) != 1 || fr.Seqs[0] != 1 {
				t.Fatalf("first batch: got %+v, want its ack", fr)
			}
			// Offsets 10-14 skipped without an explanation.
			if err := conn.Send(ctx, dataBatch(t, kafka, leg, rs.Gen, 2, 15, 20)); err != nil {
				t.Fatal(err)
			}
			fr := awaitFrame(ctx, t, conn)
			rs2, ok := fr.(*transport.Resume)
			if !ok {
				t.Fatalf("after a batch skipping offsets 10-14 the receiver sent %T %+v, want a Resume", fr, fr)
			}
			if len(rs2.Positions) != 1 || rs2.Positions[0].NextOffset != 10 || rs2.Gen <= rs.Gen {
				t.Fatalf("resume %+v, want a new generation from offset 10", rs2)
			}
			var lastErr string
			for _, l := range f.engine("gw").Status().Legs {
				lastErr += l.LastError
			}
			if !strings.Contains(lastErr, "starts at source offset 15, not at the next offset 10") {
				t.Errorf("status last error %q, want the refused gap named", lastErr)
			}
			// Explained: an empty batch moves the position past 10-14 first.
			if err := conn.Send(ctx, &transport.Batch{Leg: leg, Gen: rs2.Gen, Seq: 3, Topic: "t.a", Partition: 0, NextOffset: 15, HighWatermark: 20}); err != nil {
				t.Fatal(err)
			}
			if err := conn.Send(ctx, dataBatch(t, kafka, leg, rs2.Gen, 4, 15, 20)); err != nil {
				t.Fatal(err)
			}
			for acked := map[uint64]bool{}; !acked[3] || !acked[4]; {
				switch fr := awaitFrame(ctx, t, conn).(type) {
				case *transport.Resume:
					t.Fatalf("explained gap refused: resume %+v", fr)
				case *transport.Ack:
					for _, s := range fr.Seqs {
						acked[s] = true
					}
				}
			}
			var got []string
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			if err := kread.Each(rctx, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, []string{"t.a"}, func(r *kgo.Record) {
				got = append(got, string(r.Value))
			}); err != nil {
				t.Fatal(err)
			}
			want := "0 1 2 3 4 5 6 7 8 9 15 16 17 18 19"
			if strings.Join(got, " ") != want {
				t.Fatalf("destination holds %v, want source offsets %s, each once", got, want)
			}
		})
	}
}

// When retention deleted source records the mirror had not carried yet (a
// resume below the source's log start), the gap is counted and shown with
// the exact offsets lost, and the rest is mirrored from the log start,
// even for a route that starts new partitions at the latest offset.
func TestResumeBelowTheSourceLogStartIsCounted(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			latest := func(f *config.File) { f.Routes[0].StartAt = "latest" }
			f := newFixture(t, []string{"t.a"}, 2, append([]func(*config.File){latest}, m.mods...)...)
			f.gateway(t, "gw", 0)
			stop := f.gateway(t, "ge", 0)
			time.Sleep(time.Second) // the sender starts at the end: let it get there
			f.produce(t, 200, 0)
			checkExact(t, f.waitMirrored(t, 200, 30*time.Second), 200)
			stop() // the link is down; the source goes on and retention deletes

			adm := kadm.NewClient(func() *kgo.Client {
				cl, err := kgo.NewClient(f.srcOpts()...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cl.Close)
				return cl
			}())
			ctx := context.Background()
			before, err := adm.ListEndOffsets(ctx, "t.a")
			if err != nil {
				t.Fatal(err)
			}
			f.produce(t, 200, 200)
			from, _ := before.Lookup("t.a", 0)
			const lost = 20
			del := kadm.Offsets{}
			del.Add(kadm.Offset{Topic: "t.a", Partition: 0, At: from.Offset + lost})
			if _, err := adm.DeleteRecords(ctx, del); err != nil {
				t.Fatal(err)
			}
			f.gateway(t, "ge", 0)

			// Every record the source still holds arrives exactly; the
			// destination also holds the ones of partition 0 mirrored
			// before retention deleted them at the source.
			rep := f.waitMirrored(t, 400-lost, 30*time.Second)
			if rep.Produced != 400-lost-from.Offset || rep.Mirrored != rep.Produced || rep.Lost != 0 || rep.Duplicated != 0 ||
				rep.Reordered != 0 || rep.Unexpected != from.Offset {
				t.Fatalf("read-back %v, want the %d records left at the source mirrored exactly, and the %d mirrored before deletion kept", rep, 400-lost-from.Offset, from.Offset)
			}
			var st mirror.LegStatus
			for _, l := range f.engine("ge").Status().Legs {
				st = l
			}
			want := []mirror.SourceGap{{Topic: "t.a", Partition: 0, From: from.Offset, To: from.Offset + lost, Records: lost}}
			got := st.SourceGaps
			for i := range got {
				got[i].At = time.Time{}
			}
			if st.SourceGapRecords != lost || len(got) != 1 || got[0] != want[0] {
				t.Fatalf("sender status: %d records lost in gaps %+v, want %d in %+v", st.SourceGapRecords, got, lost, want)
			}
			if !strings.Contains(st.LastError, fmt.Sprintf("%d records (offsets %d-%d) deleted at the source", lost, from.Offset, from.Offset+lost-1)) {
				t.Errorf("sender status last error %q, want the lost range", st.LastError)
			}
		})
	}
}

// A destination that refuses one topic (an ACL denies it) quarantines that
// topic's partitions while the other topic flows exactly; once the ACL is
// fixed, the quarantined partitions are probed again and everything
// arrives exactly, read back from the destination.
func TestTopicAuthorizationFailureQuarantinesOnlyItsPartitions(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a", "t.b"}, 2, m.mods...)
			dcl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			defer dcl.Close()
			ct, err := kadm.NewClient(dcl).CreateTopic(context.Background(), 2, 1, nil, "t.b")
			if err != nil {
				t.Fatal(err)
			}
			var deny atomic.Bool
			deny.Store(true)
			refuseProduce(f.dst, kerr.TopicAuthorizationFailed.Code, func(_ *kmsg.ProduceRequest, rt *kmsg.ProduceRequestTopic, _ *kmsg.ProduceRequestTopicPartition) bool {
				return deny.Load() && (rt.Topic == "t.b" || rt.TopicID == ct.ID)
			})
			f.produce(t, 400, 0) // 200 records in each topic
			f.gateway(t, "gw", 0)
			f.gateway(t, "ge", 0)

			all := f.topics
			f.topics = []string{"t.a"}
			checkExact(t, f.waitMirrored(t, 200, 30*time.Second), 200)
			f.topics = all
			var q []mirror.QuarantinedPartition
			for deadline := time.Now().Add(10 * time.Second); len(q) < 2 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				q = nil
				for _, l := range f.engine("gw").Status().Legs {
					q = append(q, l.Quarantined...)
				}
			}
			if len(q) != 2 || q[0].Topic != "t.b" || q[0].Partition != 0 || q[1].Topic != "t.b" || q[1].Partition != 1 ||
				q[0].Kind != "topic-authorization" || !strings.Contains(q[0].Reason, "TOPIC_AUTHORIZATION_FAILED") {
				t.Fatalf("status quarantined %+v, want t.b partitions 0 and 1 for topic-authorization with the broker's error", q)
			}
			f.produce(t, 200, 400) // t.a goes on flowing meanwhile
			f.topics = []string{"t.a"}
			checkExact(t, f.waitMirrored(t, 300, 30*time.Second), 300)
			f.topics = all

			deny.Store(false) // the ACL is fixed
			checkExact(t, f.waitMirrored(t, 600, 60*time.Second), 600)
			for _, l := range f.engine("gw").Status().Legs {
				if len(l.Quarantined) != 0 {
					t.Errorf("after recovery status still lists %+v", l.Quarantined)
				}
			}
		})
	}
}
