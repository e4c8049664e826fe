package dr

import (
	"context"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
)

// TranslateGroup translates the committed offsets of a consumer group at the
// leg's source cluster src, for the topics the leg mirrors, through the
// leg's offset map at its destination cluster dst.
func TranslateGroup(ctx context.Context, leg *routing.Leg, src, dst []kgo.Opt, group string) ([]progress.Translation, error) {
	m, err := progress.LoadOffsetMap(ctx, dst, leg.ID)
	if err != nil {
		return nil, err
	}
	return translateGroup(ctx, leg, src, m, group)
}

// translateGroup is TranslateGroup through an offset map already read.
func translateGroup(ctx context.Context, leg *routing.Leg, src []kgo.Opt, m *progress.OffsetMap, group string) ([]progress.Translation, error) {
	cl, err := kgo.NewClient(src...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("group %s at %s: %w", group, leg.From.Ref(), err)
	}
	if err := offs.Error(); err != nil {
		return nil, fmt.Errorf("group %s at %s: %w", group, leg.From.Ref(), err)
	}
	var out []progress.Translation
	offs.Each(func(o kadm.OffsetResponse) {
		if !leg.Match(o.Topic) || o.At < 0 {
			return
		}
		t := m.Translate(o.Topic, o.Partition, o.At)
		if t.DestTopic == "" {
			t.DestTopic = leg.DestTopic(o.Topic)
		}
		out = append(out, t)
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}
