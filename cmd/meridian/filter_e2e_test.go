package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/verify"
)

// TestRunFilteredRoute runs both gateways as `meridian run` processes with
// a filter on the route (over the template's passthrough link, which a
// filtered leg does not use as such): validate warns about passthrough,
// exactly the matching records arrive, in order and once, and `meridian
// status` and /metrics count what the filter dropped.
func TestRunFilteredRoute(t *testing.T) {
	t.Parallel()
	const filter = `headers["kind"] == "alarm" && value.amount >= 10`
	e := startTwoGatewaysWith(t, filter)
	if r := meridian(t, e.dir, nil, "validate", "-f", e.topo); r.code != 0 || !strings.Contains(r.stderr, "routes[0].filter: passthrough") {
		t.Errorf("meridian validate: %v\nwant exit 0 and the passthrough warning", r)
	}

	// 3,000 records on orders.eu: every third an alarm, amounts 0..29, and
	// some alarms whose value is not JSON.
	const n = 3000
	var recs []*kgo.Record
	for i := range n {
		kind := "info"
		if i%3 == 0 {
			kind = "alarm"
		}
		r := &kgo.Record{Topic: "orders.eu", Key: []byte("k" + strconv.Itoa(i%7)),
			Value:   fmt.Appendf(nil, `{"order":%d,"amount":%d}`, i, i%30),
			Headers: []kgo.RecordHeader{{Key: "kind", Value: []byte(kind)}}}
		if i%51 == 0 {
			r.Value = []byte("garbled")
		}
		recs = append(recs, r)
	}
	if err := e.cl.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Read the source back for offsets and partitions, and keep what the
	// filter passes.
	src := map[int32][]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	total := 0
	if err := kread.Each(ctx, e.srcOpts, []string{"orders.eu"}, func(r *kgo.Record) {
		if string(r.Headers[0].Value) == "alarm" && string(r.Value) != "garbled" && amount(r.Value) >= 10 {
			src[r.Partition] = append(src[r.Partition], verify.Fingerprint(r))
			total++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if total == 0 || total >= n/3 {
		t.Fatalf("%d records match; want some, fewer than the alarms", total)
	}

	// The destination holds exactly them, per partition in order.
	var got map[int32][]uint64
	waitFor(t, 60*time.Second, 300*time.Millisecond, fmt.Sprintf("destination holds the %d matching records", total), func() error {
		got = map[int32][]uint64{}
		c := 0
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := kread.Each(ctx, e.dstOpts, []string{"orders.eu"}, func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], verify.Fingerprint(r))
			c++
		}); err != nil {
			return err
		}
		if c < total {
			return fmt.Errorf("%d of %d", c, total)
		}
		return nil
	})
	for p, fps := range src {
		if !slices.Equal(got[p], fps) {
			t.Errorf("partition %d: destination holds %d records, want exactly the %d matching ones in order", p, len(got[p]), len(fps))
		}
	}

	// The sending gateway counts what it dropped.
	dropped := int64(n - total)
	waitFor(t, 10*time.Second, 200*time.Millisecond, "status counts the filtered records", func() error {
		st, err := gatewayStatus(t, e.p.EastAdmin)
		if err != nil {
			return err
		}
		l := findLeg(st, legID)
		if l == nil || l.Filter != filter || l.FilteredRecords < dropped || l.FilterErrors == 0 {
			return fmt.Errorf("east leg %+v, want filter %q, filtered >= %d and some filter errors", l, filter, dropped)
		}
		return nil
	})
	r := meridian(t, "", nil, "status", "--admin", e.p.EastAdmin)
	if !strings.Contains(r.stdout, "FILTERED") || !strings.Contains(r.stdout, "leg "+legID+": filter "+filter+": ") {
		t.Errorf("meridian status of east does not show the filter:\n%s", r.stdout)
	}
	code, body, err := httpGet(e.p.EastAdmin, "/metrics")
	m := regexp.MustCompile(`(?m)^meridian_filtered_records_total\{leg="orders:west/kafka",route="orders"\} (\d+)$`).FindStringSubmatch(body)
	if err != nil || code != 200 || m == nil {
		t.Fatalf("/metrics: %d %v, no meridian_filtered_records_total for the leg", code, err)
	}
	if v, _ := strconv.ParseInt(m[1], 10, 64); v < dropped {
		t.Errorf("meridian_filtered_records_total = %d, want at least %d", v, dropped)
	}
	if !strings.Contains(body, `meridian_filter_errors_total{leg="orders:west/kafka",reason="not-json",route="orders"}`) {
		t.Errorf("/metrics has no not-json filter errors for the leg")
	}
}

// amount is the "amount" of a test record's JSON value.
func amount(v []byte) int {
	s := string(v)
	i := strings.Index(s, `"amount":`)
	if i < 0 {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimSuffix(s[i+len(`"amount":`):], "}"))
	return n
}
