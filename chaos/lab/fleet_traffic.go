package lab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/routing/filter"
	"github.com/meridian-gw/meridian/routing/topicset"
	"github.com/meridian-gw/meridian/topology"
)

// topicWords end generated topic names after an include pattern's literal
// prefix ("^telemetry\." gives telemetry.engine, telemetry.nav).
var topicWords = []string{"engine", "nav", "alarms", "logbook", "weather", "cargo"}

// genTopics derives source topics for every route from its include
// patterns: a literal pattern is used as it is; otherwise its literal
// prefix followed by a few words, or else the shortest name that matches
// (routing/topicset). Names another route writes at the same cluster are
// never used, so what the producer writes and what mirrors write stay
// apart.
func (fl *Fleet) genTopics() error {
	f := fl.File
	for _, r := range f.Routes {
		inc, err := compileAll(r.Topics.Include)
		if err != nil {
			return fmt.Errorf("fleet: route %s: %w", r.Name, err)
		}
		exc, err := compileAll(r.Topics.Exclude)
		if err != nil {
			return fmt.Errorf("fleet: route %s: %w", r.Name, err)
		}
		usable := func(t string) bool {
			return len(t) > 0 && len(t) <= 249 && !strings.HasPrefix(t, "__") && !strings.HasPrefix(t, "meridian.") &&
				matchAnyRe(inc, exc, t) && !writtenBy(f, r.From, t)
		}
		var got []string
		for _, p := range r.Topics.Include {
			prefix, complete := literalPrefix(p)
			want := fl.opts.TopicsPerRoute
			var cands []string
			if complete {
				cands, want = []string{prefix}, 1
			} else {
				sep := ""
				if prefix != "" && !strings.ContainsAny(prefix[len(prefix)-1:], ".-_") {
					sep = "."
				}
				for _, w := range topicWords {
					cands = append(cands, prefix+sep+w)
				}
			}
			n := 0
			for _, c := range cands {
				if n < want && usable(c) && !slices.Contains(got, c) {
					got = append(got, c)
					n++
				}
			}
			if n == 0 {
				s, err := topicset.New([]string{p}, r.Topics.Exclude, "", "")
				if err != nil {
					return fmt.Errorf("fleet: route %s: %w", r.Name, err)
				}
				if name, ok, err := s.Shortest(&topicset.Budget{Steps: 1 << 20}); err == nil && ok && usable(name) && !slices.Contains(got, name) {
					got = append(got, name)
				}
			}
		}
		if len(got) == 0 {
			return fmt.Errorf("fleet: route %s: found no topic name its include patterns match that no other route writes", r.Name)
		}
		for _, t := range got {
			if !slices.Contains(fl.Topics[r.From], t) {
				fl.Topics[r.From] = append(fl.Topics[r.From], t)
			}
		}
	}
	return nil
}

func compileAll(ps []string) ([]*regexp.Regexp, error) {
	var res []*regexp.Regexp
	for _, p := range ps {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, err
		}
		res = append(res, re)
	}
	return res, nil
}

func matchAnyRe(inc, exc []*regexp.Regexp, t string) bool {
	return slices.ContainsFunc(inc, func(re *regexp.Regexp) bool { return re.MatchString(t) }) &&
		!slices.ContainsFunc(exc, func(re *regexp.Regexp) bool { return re.MatchString(t) })
}

// literalPrefix is the literal text a pattern starts with, after ^, and
// whether the pattern is exactly that text (anchored at both ends).
func literalPrefix(p string) (string, bool) {
	re, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		return "", false
	}
	re = re.Simplify()
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	anchored := false
	if len(subs) > 0 && (subs[0].Op == syntax.OpBeginText || subs[0].Op == syntax.OpBeginLine) {
		subs, anchored = subs[1:], true
	}
	var b strings.Builder
	for len(subs) > 0 && subs[0].Op == syntax.OpLiteral && subs[0].Flags&syntax.FoldCase == 0 {
		b.WriteString(string(subs[0].Rune))
		subs = subs[1:]
	}
	end := len(subs) == 1 && (subs[0].Op == syntax.OpEndText || subs[0].Op == syntax.OpEndLine)
	return b.String(), anchored && end
}

// writtenBy reports whether a route into cluster (other than from it)
// could write topic there: its rename's literal text around {topic}
// matches and its include patterns match what {topic} stands for. A
// rename with capture groups counts as writing every name with its
// literal prefix.
func writtenBy(f *config.File, cluster, topic string) bool {
	for _, r := range f.Routes {
		if !slices.Contains(r.To, cluster) {
			continue
		}
		region, cl, _ := strings.Cut(r.From, "/")
		tmpl := r.Rename
		if tmpl == "" {
			tmpl = "{topic}"
		}
		tmpl = strings.NewReplacer("{source_region}", region, "{source_cluster}", cl).Replace(tmpl)
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			if topic == tmpl {
				return true
			}
			continue
		}
		pre := tmpl[:i]
		if !strings.HasPrefix(topic, pre) {
			continue
		}
		rest := tmpl[i:]
		if !strings.HasPrefix(rest, "{topic}") || strings.Contains(rest[len("{topic}"):], "{") {
			return true // capture groups: assume the worst
		}
		suf := rest[len("{topic}"):]
		if !strings.HasSuffix(topic, suf) || len(topic) < len(pre)+len(suf) {
			continue
		}
		inc, err1 := compileAll(r.Topics.Include)
		exc, err2 := compileAll(r.Topics.Exclude)
		if err1 != nil || err2 != nil || matchAnyRe(inc, exc, topic[len(pre):len(topic)-len(suf)]) {
			return true
		}
	}
	return false
}

// Produced is the number of records the fleet's producers had
// acknowledged so far.
func (fl *Fleet) Produced() int64 { return fl.produced.Load() }

// Produce writes JSON events (keys, headers, a nested engine reading, a
// severity header) round-robin to the generated topics of every cluster,
// at about rate records per second per cluster (zero: 500), until ctx
// ends. It returns when every record produced is acknowledged.
func (fl *Fleet) Produce(ctx context.Context, rate int) error {
	if rate <= 0 {
		rate = 500
	}
	var wg sync.WaitGroup
	errs := make([]error, 0, len(fl.Topics))
	var mu sync.Mutex
	refs := make([]string, 0, len(fl.Topics))
	for ref := range fl.Topics {
		refs = append(refs, ref)
	}
	slices.Sort(refs)
	for n, ref := range refs {
		opts, err := fl.ClusterOpts(ref)
		if err != nil {
			return err
		}
		region, _, _ := strings.Cut(ref, "/")
		wg.Go(func() {
			if err := fl.produce(ctx, opts, region, fl.Topics[ref], rate, uint64(n)+1); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("produce to %s: %w", ref, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (fl *Fleet) produce(ctx context.Context, opts []kgo.Opt, region string, topics []string, rate int, seed uint64) error {
	cl, err := kgo.NewClient(append(opts, kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	var (
		errMu sync.Mutex
		perr  error
		sent  int64
	)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		want := int64(time.Since(start).Seconds() * float64(rate))
		for ; sent < want; sent++ {
			r := fleetEvent(rng, region, topics[int(sent)%len(topics)], sent)
			cl.Produce(context.WithoutCancel(ctx), r, func(_ *kgo.Record, err error) {
				if err != nil {
					errMu.Lock()
					perr = cmp(perr, err)
					errMu.Unlock()
					return
				}
				fl.produced.Add(1)
			})
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	fctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		return fmt.Errorf("flush producer: %w", err)
	}
	errMu.Lock()
	defer errMu.Unlock()
	return perr
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// RouteReport is one leg of a route (one destination cluster) as read back:
// the source topics the route matches at its source cluster, compared with
// their renamed copies at the destination.
type RouteReport struct {
	Route  string   `json:"route"`
	From   string   `json:"from"`
	To     string   `json:"to"`
	Filter string   `json:"filter,omitempty"`
	Topics []string `json:"topics"`
	verify.Report
	// Err is why the leg could not be read back ("" when it was).
	Err string `json:"error,omitempty"`
}

// Exact reports whether the leg was read back with nothing lost,
// duplicated, reordered or altered.
func (r *RouteReport) Exact() bool { return r.Err == "" && r.OK() }

func clusterRef(c *topology.Cluster) string { return c.Region.Name + "/" + c.Name }

// Verify reads every route's source and destinations back, leg by leg, in
// the file's route order. A route with a filter expects only the records
// its filter keeps (the others are counted as filtered).
func (fl *Fleet) Verify(ctx context.Context) []RouteReport {
	var reps []RouteReport
	for _, rt := range fl.Topo.Routes {
		for _, to := range rt.To {
			rep := RouteReport{Route: rt.Name, From: clusterRef(rt.From), To: clusterRef(to), Filter: rt.Filter}
			if err := fl.verifyLeg(ctx, rt.Name+":"+rep.To, &rep); err != nil {
				rep.Err = err.Error()
			}
			reps = append(reps, rep)
		}
	}
	return reps
}

func (fl *Fleet) verifyLeg(ctx context.Context, id string, rep *RouteReport) error {
	leg := fl.legs[id]
	if leg == nil {
		return fmt.Errorf("no gateway sends leg %s", id)
	}
	src, err := fl.ClusterOpts(rep.From)
	if err != nil {
		return err
	}
	dst, err := fl.ClusterOpts(rep.To)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(src...)
	if err != nil {
		return err
	}
	ts, err := kadm.NewClient(cl).ListTopics(ctx)
	cl.Close()
	if err != nil {
		return fmt.Errorf("list topics at %s: %w", rep.From, err)
	}
	for _, t := range ts.Names() {
		if leg.Match(t) && !strings.HasPrefix(t, "meridian.") {
			rep.Topics = append(rep.Topics, t)
		}
	}
	slices.Sort(rep.Topics)
	if len(rep.Topics) == 0 {
		return fmt.Errorf("no topic at %s matches the route", rep.From)
	}
	var keep func(*kgo.Record) bool
	if leg.Filter != nil {
		keep = func(r *kgo.Record) bool {
			hs := make([]filter.Header, len(r.Headers))
			for i, h := range r.Headers {
				hs[i] = filter.Header{Key: h.Key, Value: h.Value}
			}
			ok, err := leg.Filter.Match(&filter.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key,
				Headers: hs, Timestamp: r.Timestamp, Value: r.Value})
			return ok && err == nil
		}
	}
	vr, err := verify.CompareFiltered(ctx, src, dst, rep.Topics, leg.DestTopic, keep)
	if err != nil {
		return err
	}
	rep.Report = *vr
	return nil
}

// WaitVerified reads the fleet back (Verify) until no leg misses a record
// or timeout passes, and returns the last reading.
func (fl *Fleet) WaitVerified(ctx context.Context, timeout time.Duration) []RouteReport {
	deadline := time.Now().Add(timeout)
	for {
		reps := fl.Verify(ctx)
		done := !slices.ContainsFunc(reps, func(r RouteReport) bool { return r.Err != "" || r.Lost > 0 })
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			return reps
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// fleetCounters are what the fleet counts while it runs.
type fleetCounters struct {
	produced atomic.Int64
}
