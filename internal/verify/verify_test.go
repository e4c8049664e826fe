package verify

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestComparePartitionCountsEachKindOfFault(t *testing.T) {
	src := []uint64{1, 2, 3, 4, 5}
	tests := []struct {
		name string
		dst  []uint64
		want Report
	}{
		{"exact", []uint64{1, 2, 3, 4, 5}, Report{Produced: 5, Mirrored: 5}},
		{"lost", []uint64{1, 2, 4, 5}, Report{Produced: 5, Mirrored: 4, Lost: 1}},
		{"duplicated", []uint64{1, 2, 2, 3, 4, 5}, Report{Produced: 5, Mirrored: 5, Duplicated: 1}},
		{"reordered", []uint64{1, 3, 2, 4, 5}, Report{Produced: 5, Mirrored: 5, Reordered: 1}},
		{"altered", []uint64{1, 2, 99, 4, 5}, Report{Produced: 5, Mirrored: 4, Lost: 1, Unexpected: 1}},
		{"empty", nil, Report{Produced: 5, Lost: 5}},
		{"replayed tail", []uint64{1, 2, 3, 4, 5, 3, 4, 5}, Report{Produced: 5, Mirrored: 5, Duplicated: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Report
			comparePartition(&got, key{"t", 0}, src, tt.dst)
			got.Samples = nil
			if got.String() != tt.want.String() {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if ok := tt.name == "exact"; got.OK() != ok {
				t.Errorf("OK() = %v, want %v", got.OK(), ok)
			}
		})
	}
}

func TestComparePartitionIdenticalRecordsMatchInOrder(t *testing.T) {
	// Two identical source records: both must arrive, and a third copy is a
	// duplicate.
	var r Report
	comparePartition(&r, key{"t", 0}, []uint64{7, 7}, []uint64{7, 7, 7})
	if r.Mirrored != 2 || r.Duplicated != 1 || r.Lost != 0 {
		t.Errorf("got %+v, want 2 mirrored and 1 duplicated", r)
	}
}

func TestFingerprintCoversEverythingAMirrorMustKeep(t *testing.T) {
	base := func() *kgo.Record {
		return &kgo.Record{Key: []byte("k"), Value: []byte("v"), Timestamp: time.UnixMilli(1000),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}}}
	}
	f0 := Fingerprint(base())
	mutations := map[string]func(*kgo.Record){
		"null key":       func(r *kgo.Record) { r.Key = nil },
		"empty key":      func(r *kgo.Record) { r.Key = []byte{} },
		"value":          func(r *kgo.Record) { r.Value = []byte("w") },
		"timestamp":      func(r *kgo.Record) { r.Timestamp = time.UnixMilli(1001) },
		"header value":   func(r *kgo.Record) { r.Headers[0].Value = []byte("2") },
		"header dropped": func(r *kgo.Record) { r.Headers = nil },
		"key/value swap": func(r *kgo.Record) { r.Key, r.Value = r.Value, r.Key },
	}
	for name, mut := range mutations {
		r := base()
		mut(r)
		if Fingerprint(r) == f0 {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
	if Fingerprint(base()) != f0 {
		t.Error("fingerprint is not deterministic")
	}
}
