// Package kread reads Kafka topics from their start to the last stable offset
// seen when reading begins, with read_committed isolation: it returns what a
// transactional consumer can see now, and knows when it has seen all of it
// (transaction markers are fetched too, so a partition ending in a marker is
// recognised as complete).
package kread

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Each reads every committed record of topics (all partitions) and calls fn
// for each, in order per partition. Missing topics are an error.
func Each(ctx context.Context, opts []kgo.Opt, topics []string, fn func(*kgo.Record)) error {
	return EachFrom(ctx, opts, topics, nil, fn)
}

// EachFrom is Each starting each listed partition at the given offset
// (topic → partition → offset); other partitions start at the beginning.
func EachFrom(ctx context.Context, opts []kgo.Opt, topics []string, from map[string]map[int32]int64, fn func(*kgo.Record)) error {
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	adm := kadm.NewClient(admCl)
	ends, err := adm.ListCommittedOffsets(ctx, topics...)
	adm.Close()
	if err != nil {
		return fmt.Errorf("list offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("list offsets: %w", err)
	}
	want := map[string]map[int32]int64{}
	start := map[string]map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset <= 0 {
			return
		}
		if want[o.Topic] == nil {
			want[o.Topic] = map[int32]int64{}
			start[o.Topic] = map[int32]kgo.Offset{}
		}
		want[o.Topic][o.Partition] = o.Offset
		start[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		if f, ok := from[o.Topic][o.Partition]; ok {
			if f >= o.Offset {
				delete(want[o.Topic], o.Partition)
				delete(start[o.Topic], o.Partition)
				if len(want[o.Topic]) == 0 {
					delete(want, o.Topic)
					delete(start, o.Topic)
				}
				return
			}
			start[o.Topic][o.Partition] = kgo.NewOffset().At(f)
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxBytes(64<<20),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %v: %w (still reading %d topics)", topics, err, len(want))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Topic][r.Partition]; ok {
				if r.Offset >= end {
					return // past the snapshot
				}
				if r.Offset+1 >= end {
					delete(want[r.Topic], r.Partition)
					if len(want[r.Topic]) == 0 {
						delete(want, r.Topic)
					}
				}
			} else {
				return
			}
			if !r.Attrs.IsControl() {
				fn(r)
			}
		})
	}
	return nil
}

// Settle waits, up to within, until no transaction that was open when it
// was called holds back the last stable offset of topics' partitions: until
// each partition's last stable offset reaches the high watermark it had at
// the call. A read that follows then sees the outcome of every record
// written before the call. It returns the partitions still held back when
// within ran out ("topic/partition: stable S < end E"), and errors only for
// requests that fail.
func Settle(ctx context.Context, opts []kgo.Opt, topics []string, within time.Duration) ([]string, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	hw, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = hw.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	deadline := time.Now().Add(within)
	for {
		stable, err := adm.ListCommittedOffsets(ctx, topics...)
		if err == nil {
			err = stable.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("list offsets: %w", err)
		}
		var held []string
		hw.Each(func(o kadm.ListedOffset) {
			if s, ok := stable.Lookup(o.Topic, o.Partition); ok && s.Offset < o.Offset {
				held = append(held, fmt.Sprintf("%s/%d: stable %d < end %d", o.Topic, o.Partition, s.Offset, o.Offset))
			}
		})
		if len(held) == 0 || time.Now().After(deadline) {
			return held, nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return held, ctx.Err()
		case <-t.C:
		}
	}
}
